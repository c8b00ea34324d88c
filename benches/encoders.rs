//! The encoders at MGCA's sizes on the CPU backend, batch 8: ViT-B/16 (224 px), the 6-layer
//! BERT (112 tokens) and ResNet-50 (224 px up-sampled to 299), forward (inference backend)
//! and forward + backward (autodiff backend, loss = sum of the outputs; ResNet-50 in training
//! mode, with batch statistics, as `benches/encoders_pytorch.py`).
//!
//! Each case also records its peak memory: the most resident memory above the level before it
//! started (the models and inputs already built), in MiB, written beside criterion's estimates
//! as `peak_rss_mib.txt` (Linux; `/proc/self/clear_refs` resets the high-water mark).
//!
//! `cargo bench --bench encoders` (or `cargo xtask bench encoders`, which also times
//! `benches/encoders_pytorch.py`, timm and transformers on CPU, and prints the ratio).

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mgca::backend::{Cpu, CpuAutodiff, cpu_device};
use mgca::model::batchnorm::Mode;
use mgca::model::bert::{BertConfig, PositionIds};
use mgca::model::resnet::ResNetConfig;
use mgca::model::vit::VitConfig;

const BATCH: usize = 8;
const TOKENS: usize = 112;

fn images<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
    Tensor::random([BATCH, 3, 224, 224], Distribution::Normal(0.0, 1.0), device)
}

/// Token ids and a mask: reports of 40 to 112 tokens, padded to 112.
fn tokens<B: Backend>(vocab: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for b in 0..BATCH {
        let len = 40 + b * 9;
        for t in 0..TOKENS {
            ids.push(if t < len { (1 + (b * 7919 + t * 104_729) % (vocab - 1)) as i64 } else { 0 });
            mask.push((t < len) as i32 as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [BATCH, TOKENS]), device),
        Tensor::from_data(TensorData::new(mask, [BATCH, TOKENS]), device),
    )
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `f` (one criterion case) and record its peak resident memory above the level before it.
fn with_peak_memory(function: &str, case: &str, f: impl FnOnce()) {
    mgca::backend::release_free_memory();
    let before = status_kib("VmRSS:");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let start = std::time::Instant::now();
    f();
    if start.elapsed().as_secs_f64() < 0.5 {
        return; // filtered out by the command line: nothing ran
    }
    let (Some(before), Some(peak), true) = (before, status_kib("VmHWM:"), reset) else {
        eprintln!("encoders/{function}/{case}: peak memory not measurable here");
        return;
    };
    let mib = (peak - before).max(0.0) / 1024.0;
    let dir = std::path::PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("criterion/encoders")
        .join(function)
        .join(case);
    if std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("peak_rss_mib.txt"), format!("{mib:.0}\n")))
        .is_err()
    {
        eprintln!("encoders/{function}/{case}: could not write its peak memory under {}", dir.display());
    }
    println!("encoders/{function}/{case}: peak memory {mib:.0} MiB above the models and inputs");
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let device = cpu_device();
    let mut group = c.benchmark_group("encoders");
    group.sample_size(10);

    let vit = VitConfig::base().init::<Cpu>(&device);
    let x = images::<Cpu>(&device);
    with_peak_memory("fwd", "vit_b16", || {
        group.bench_function(BenchmarkId::new("fwd", "vit_b16"), |b| b.iter(|| vit.forward(x.clone()).tokens));
    });
    let vit = VitConfig::base().init::<CpuAutodiff>(&device);
    let x = images::<CpuAutodiff>(&device);
    with_peak_memory("fwd_bwd", "vit_b16", || {
        group.bench_function(BenchmarkId::new("fwd_bwd", "vit_b16"), |b| {
            b.iter(|| vit.forward(x.clone()).tokens.sum().backward())
        });
    });

    let config = BertConfig::mgca();
    let bert = config.init::<Cpu>(&device);
    let (ids, mask) = tokens::<Cpu>(config.vocab_size, &device);
    with_peak_memory("fwd", "bert6", || {
        group.bench_function(BenchmarkId::new("fwd", "bert6"), |b| {
            b.iter(|| bert.forward(ids.clone(), mask.clone(), PositionIds::Reference).hidden)
        });
    });
    let bert = config.init::<CpuAutodiff>(&device);
    let (ids, mask) = tokens::<CpuAutodiff>(config.vocab_size, &device);
    with_peak_memory("fwd_bwd", "bert6", || {
        group.bench_function(BenchmarkId::new("fwd_bwd", "bert6"), |b| {
            b.iter(|| bert.forward(ids.clone(), mask.clone(), PositionIds::Reference).hidden.sum().backward())
        });
    });

    let resnet = ResNetConfig::resnet50().init::<Cpu>(&device);
    let x = images::<Cpu>(&device);
    with_peak_memory("fwd", "resnet50", || {
        group.bench_function(BenchmarkId::new("fwd", "resnet50"), |b| {
            b.iter(|| resnet.forward(x.clone(), Mode::Eval).global)
        });
    });
    let resnet = ResNetConfig::resnet50().init::<CpuAutodiff>(&device);
    let x = images::<CpuAutodiff>(&device);
    with_peak_memory("fwd_bwd", "resnet50", || {
        group.bench_function(BenchmarkId::new("fwd_bwd", "resnet50"), |b| {
            b.iter(|| {
                let out = resnet.forward(x.clone(), Mode::Train);
                (out.global.sum() + out.local.sum()).backward()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
