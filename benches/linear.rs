//! One linear-probing epoch (the counterpart of `benches/linear_pytorch.py`):
//!
//! - `head/paper_rsna100`: the head alone at the paper's sizes, as the cached-feature mode runs
//!   it — 18,678 cached 768-d features (the reference's RSNA training split: 70 % of the 26,684
//!   stage-2 images), batches of 48, `Linear(768 → 1)`, BCE with logits, one AdamW step per
//!   batch (lr 5e-4, wd 1e-6). A 50-epoch cached run costs 50 of these.
//! - `epoch/faithful_smoke_rsna100` and `epoch/cached_smoke_rsna100`: one epoch of the smoke
//!   cell on the synthetic RSNA (210 images, batches of 8, the smoke ViT at 32 px): features
//!   recomputed from the cropped images, or read from the cache.
//!
//! `cargo bench --bench linear` (or `cargo xtask bench linear`, which also times PyTorch).

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mgca::backend::{Cpu, CpuAutodiff, cpu_device};
use mgca::config::{ImageEncoderKind, MgcaConfig};
use mgca::downstream::encoder::{EncoderSource, load_encoder};
use mgca::downstream::finetune::{FinetuneConfig, Task};
use mgca::downstream::linear::experiment::{Fraction, LinearExperiment, open_splits};
use mgca::downstream::linear::{FeatureMode, HeadLoss, LinearHead, LinearProbe, ProbeTask, head_loss};
use mgca::experiment::Tier;
use mgca::train::optim::AdamW;

/// The reference's RSNA training split (70 % of 26,684 images).
const PAPER_ROWS: usize = 18_678;
const PAPER_DIM: usize = 768;
const PAPER_BATCH: usize = 48;

fn adamw() -> AdamW {
    let c = FinetuneConfig::reference();
    AdamW { beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, weight_decay: c.weight_decay }
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let device = cpu_device();
    let mut group = c.benchmark_group("linear");
    group.sample_size(10);

    // The head alone at the paper's sizes.
    let features = Tensor::<Cpu, 2>::random([PAPER_ROWS, PAPER_DIM], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<f32> = (0..PAPER_ROWS).map(|i| ((i * 7919) % 4 == 0) as u8 as f32).collect();
    let mut state = Some((LinearHead::<CpuAutodiff>::new(PAPER_DIM, 1, 42, &device), adamw().config().init()));
    group.throughput(Throughput::Elements(PAPER_ROWS as u64));
    group.bench_function(BenchmarkId::new("head", "paper_rsna100"), |b| {
        b.iter(|| {
            let (mut head, mut optim) = state.take().unwrap();
            for start in (0..PAPER_ROWS / PAPER_BATCH * PAPER_BATCH).step_by(PAPER_BATCH) {
                let index: Vec<i64> = (start as i64..(start + PAPER_BATCH) as i64).collect();
                let index = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(index, [PAPER_BATCH]), &device);
                let x = Tensor::<CpuAutodiff, 2>::from_inner(features.clone().select(0, index));
                let loss = head_loss(HeadLoss::Bce, head.forward(x), &labels[start..start + PAPER_BATCH]);
                let grads = GradientsParams::from_grads(loss.backward(), &head);
                head = optim.step(5e-4, head, grads);
            }
            state = Some((head, optim));
        })
    });

    // One smoke epoch, faithful and cached.
    let out = std::env::temp_dir().join(format!("mgca-bench-linear-{}", std::process::id()));
    let experiment = LinearExperiment {
        name: "bench".into(),
        reproduces: "a benchmark".into(),
        dataset: mgca::data::prepare::Dataset::Rsna,
        fraction: Fraction::All,
        image_encoder: ImageEncoderKind::VitBase,
        features: FeatureMode::Faithful,
        encoder: EncoderSource::Random { seed: 1 },
        finetune: toml::Table::new(),
    };
    let cell = experiment.resolve(Tier::Smoke, Some(&EncoderSource::Random { seed: 1 }), 0).unwrap();
    let preset = MgcaConfig::smoke_for(ImageEncoderKind::VitBase);
    let task = ProbeTask::of(cell.dataset).unwrap();
    for mode in [FeatureMode::Faithful, FeatureMode::Cached] {
        let encoder = load_encoder::<Cpu>(&cell.encoder, cell.image_encoder, &preset, &device).unwrap().encoder;
        let splits = open_splits(&cell, &out, None, preset.train.cache_side).unwrap();
        let rows = splits.train.usable_rows().len();
        let probe =
            LinearProbe::<CpuAutodiff>::new(task, encoder, splits, preset.image_size(), 8, mode, &device).unwrap();
        let mut state =
            Some((LinearHead::<CpuAutodiff>::new(probe.feature_dim(), 1, 42, &device), adamw().config().init()));
        let name = match mode {
            FeatureMode::Faithful => "faithful_smoke_rsna100",
            FeatureMode::Cached => "cached_smoke_rsna100",
        };
        group.throughput(Throughput::Elements(rows as u64));
        let mut epoch = 0;
        group.bench_function(BenchmarkId::new("epoch", name), |b| {
            b.iter(|| {
                let (mut head, mut optim) = state.take().unwrap();
                for batch in probe.train_batches(epoch, 42) {
                    let loss = probe.loss(&head, &batch.unwrap());
                    let grads = GradientsParams::from_grads(loss.backward(), &head);
                    head = optim.step(5e-3, head, grads);
                }
                epoch += 1;
                state = Some((head, optim));
            })
        });
    }
    group.finish();
    std::fs::remove_dir_all(out).ok();
}

criterion_group!(benches, bench);
criterion_main!(benches);
