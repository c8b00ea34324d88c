//! One pretraining step at the smoke sizes (the counterpart of `benches/train_pytorch.py`):
//! 2 shards of 8 pairs through the smoke ViT + BERT (text dropout 0.1), the heads and the
//! objective (fused CTA), shard gradients averaged, one AdamW step. And the pair loader: one
//! epoch of the synthetic MIMIC-CXR from its cache, cropped, tokenised and collated.
//!
//! `cargo bench --bench train` (or `cargo xtask bench train`, which also times the PyTorch
//! step and prints the ratio).

use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::config::MgcaConfig;
use mgca::data::cache::Crop;
use mgca::data::collate::TextBatch;
use mgca::data::pairs::PairBatch;
use mgca::loss::{CtaEngine, Objective};
use mgca::model::dropout::DropoutKey;
use mgca::text::words::WordGrouping;

const BATCH: usize = 8;
const TOKENS: usize = 32;

/// The same reports as the PyTorch script: lengths 8 to 31, a word piece every third token;
/// normal random 32 px images.
fn shard(seed: u64) -> PairBatch {
    let dev = cpu_device();
    let reports = mgca::parity::synthetic_reports(
        BATCH,
        TOKENS,
        |b| 8 + (b * 5) % (TOKENS - 8),
        3,
        |b, j| (1 + (b * 7 + j * 5) % 127) as i64,
    );
    <CpuAutodiff as burn::tensor::backend::Backend>::seed(&dev, seed);
    let images = Tensor::<CpuAutodiff, 4>::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let lengths: Vec<usize> =
        (0..BATCH).map(|b| reports.mask[b * TOKENS..(b + 1) * TOKENS].iter().filter(|&&m| m > 0.0).count()).collect();
    PairBatch {
        images: images.into_data().to_vec().expect("f32 images"),
        text: TextBatch {
            order: (0..BATCH).collect(),
            ids: reports.ids,
            mask: reports.mask,
            lengths,
            words: WordGrouping::from_tokens(&reports.tokens),
            length: TOKENS,
        },
        rows: (0..BATCH).collect(),
    }
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let config = MgcaConfig::smoke();
    let dev = cpu_device();
    let mut group = c.benchmark_group("train");
    group.sample_size(30);

    let shards = [shard(0), shard(1)];
    let objective = Objective::new(config.objective.clone()).with_engine(CtaEngine::FusedCpu);
    let mut state = Some((config.init_model_seeded::<CpuAutodiff>(0, &dev), mgca::pretrain::adamw(&config).init()));
    group.throughput(Throughput::Elements((2 * BATCH) as u64));
    // The trainer's own step (virtual shards): the same code `pretrain` runs.
    group.bench_function(BenchmarkId::new("step", "smoke_2x8"), |b| {
        b.iter(|| {
            let (m, o) = state.take().unwrap();
            let dropout = |k: usize| Some((0.1, DropoutKey::new(0, 0, k)));
            let (m, o, _) =
                mgca::pretrain::virtual_step(m, o, &objective, &shards, 32, 2e-3, false, dropout, false, |_| Ok(()))
                    .expect("a finite step");
            state = Some((m, o));
        })
    });

    // The loader: synthetic MIMIC-CXR (small), cached at 36 px, 2 × 8 pairs per step.
    let dir = std::env::temp_dir().join(format!("mgca-bench-train-{}", std::process::id()));
    let data = mgca::pretrain::data::synthetic_pairs(&dir, mgca::data::synth::Scale::Small, 7, &config).unwrap();
    let rows = data.train.usable_rows();
    let full = rows.len() / BATCH * BATCH;
    group.throughput(Throughput::Elements(full as u64));
    group.bench_function(BenchmarkId::new("loader", "epoch_pairs"), |b| {
        b.iter(|| {
            data.train
                .batches_from(&data.tokenizer, rows.clone(), BATCH, Crop::Random, 32, 1, 0, 4)
                .map(|batch| batch.unwrap().rows.len())
                .sum::<usize>()
        })
    });
    group.finish();
    std::fs::remove_dir_all(dir).ok();
}

criterion_group!(benches, bench);
criterion_main!(benches);
