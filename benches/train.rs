//! One pretraining step at the smoke sizes (the counterpart of `benches/train_pytorch.py`):
//! 2 shards of 8 pairs through the smoke ViT + BERT (text dropout 0.1), the heads and the
//! objective (fused CTA), shard gradients averaged, one AdamW step. And the pair loader: one
//! epoch of the synthetic MIMIC-CXR from its cache, cropped, tokenised and collated.
//!
//! `cargo bench --bench train` (or `cargo xtask bench train`, which also times the PyTorch
//! step and prints the ratio).

use burn::optim::Optimizer;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::config::MgcaConfig;
use mgca::data::cache::Crop;
use mgca::loss::{CtaEngine, Objective};
use mgca::model::batchnorm::Mode;
use mgca::model::dropout::DropoutKey;
use mgca::model::mgca::MgcaBatch;
use mgca::text::words::WordGrouping;

const BATCH: usize = 8;
const TOKENS: usize = 32;

/// The same reports as the PyTorch script: lengths 8 to 31, a word piece every third token.
fn shard(seed: usize) -> MgcaBatch<CpuAutodiff> {
    let dev = cpu_device();
    let reports = mgca::parity::synthetic_reports(
        BATCH,
        TOKENS,
        |b| 8 + (b * 5) % (TOKENS - 8),
        3,
        |b, j| (1 + (b * 7 + j * 5) % 127) as i64,
    );
    MgcaBatch {
        images: Tensor::random([BATCH, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev),
        ids: Tensor::<CpuAutodiff, 2, Int>::from_data(TensorData::new(reports.ids, [BATCH, TOKENS]), &dev),
        mask: Tensor::from_data(TensorData::new(reports.mask, [BATCH, TOKENS]), &dev),
        words: WordGrouping::from_tokens(&reports.tokens),
        dropout: Some((0.1, DropoutKey::new(0, 0, seed))),
    }
}

fn bench(c: &mut Criterion) {
    let config = MgcaConfig::smoke();
    let dev = cpu_device();
    let mut group = c.benchmark_group("train");
    group.sample_size(30);

    let shards = [shard(0), shard(1)];
    let objective = Objective::new(config.objective.clone()).with_engine(CtaEngine::FusedCpu);
    let mut model = Some(config.init_model_seeded::<CpuAutodiff>(0, &dev));
    let mut optim = mgca::train::adamw(&config).init();
    group.throughput(Throughput::Elements((2 * BATCH) as u64));
    group.bench_function(BenchmarkId::new("step", "smoke_2x8"), |b| {
        b.iter(|| {
            let m = model.take().unwrap().renormalize_prototypes();
            let mut parts = Vec::new();
            for (k, s) in shards.iter().enumerate() {
                let mode = if k == 0 { Mode::Train } else { Mode::TrainShard };
                let out = objective.forward(m.forward(s.clone(), mode));
                parts.push(burn::optim::GradientsParams::from_grads(out.total.backward(), &m));
            }
            let grads = mgca::train::mean_gradients(&m, parts);
            model = Some(optim.step(2e-3, m, grads));
        })
    });

    // The loader: synthetic MIMIC-CXR (small), cached at 36 px, 2 × 8 pairs per step.
    let dir = std::env::temp_dir().join(format!("mgca-bench-train-{}", std::process::id()));
    let data = mgca::train::data::synthetic_pairs(&dir, mgca::data::synth::Scale::Small, 7, &config).unwrap();
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
