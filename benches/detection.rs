//! One detection training step on the CPU backend, the counterpart of
//! `benches/detection_pytorch.py`: ResNet-50 at 224 px (parameters frozen, BatchNorm in
//! training mode as the reference leaves it), the YOLOv3 neck and heads, the YOLO loss over the
//! three scales, backward into the neck, and one AdamW step (lr 5e-4, wd 1e-6) — at the
//! reference's batch of 16 (`step/b16`) and at the smoke tier's sizes (`step/smoke_b8`: the
//! width-4 backbone and the smoke neck, batch 8); and the frozen backbone's share of the step
//! (`backbone_fwd/b16`).
//!
//! Targets: half the images hold one to three boxes, the other half none (the same recipe as
//! the PyTorch script).
//!
//! `cargo bench --bench detection` (or `cargo xtask bench detection`, which also times the
//! PyTorch step and prints the ratio).

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::config::{ImageEncoderKind, MgcaConfig};
use mgca::downstream::detection::Detector;
use mgca::loss::yolo::{TargetBox, YoloLossConfig, yolo_loss};
use mgca::model::batchnorm::Mode;
use mgca::model::resnet::ResNetConfig;
use mgca::train::optim::AdamW;

type B = CpuAutodiff;

/// Boxes for `batch` images: even images one to three boxes, odd ones none.
fn boxes(batch: usize) -> Vec<Vec<TargetBox>> {
    (0..batch)
        .map(|i| {
            if i % 2 == 1 {
                return Vec::new();
            }
            (0..1 + i % 3)
                .map(|k| {
                    let f = (i * 7 + k * 3) as f32 / (3.0 * batch as f32);
                    TargetBox { class: 0, cx: 0.3 + 0.4 * f, cy: 0.35 + 0.3 * f, w: 0.08 + 0.25 * f, h: 0.1 + 0.2 * f }
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let device = cpu_device();
    let mut group = c.benchmark_group("detection");
    group.sample_size(10);
    let adamw = AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 1e-6 };
    let smoke = MgcaConfig::smoke_for(ImageEncoderKind::Resnet50).resnet;
    for (case, config, batch) in [("b16", ResNetConfig::resnet50(), 16), ("smoke_b8", smoke, 8)] {
        let backbone = config.init::<B>(&device);
        let neck = Detector::neck_config(&backbone);
        let mut model = Some(Detector::new(backbone, &neck, &device));
        let mut optim = adamw.config().init::<B, Detector<B>>();
        let images = Tensor::<B, 4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
        let targets = boxes(batch);
        let loss_config = YoloLossConfig::reference();
        // ANCHOR: step
        group.bench_function(BenchmarkId::new("step", case), |b| {
            b.iter(|| {
                let m = model.take().expect("the model between steps");
                let heads = m.forward(images.clone(), Mode::Train, Mode::Train);
                let loss = yolo_loss(heads, &targets, &loss_config).loss;
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(5e-4, m, grads));
            })
        });
        // ANCHOR_END: step
    }
    // The step's frozen part alone: the ResNet-50 pyramid at batch 16 in training mode on the
    // inference backend (what the step spends before the neck).
    let backbone = ResNetConfig::resnet50().init::<mgca::backend::Cpu>(&device).without_upsampling();
    let images = Tensor::<mgca::backend::Cpu, 4>::random([16, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    group.bench_function(BenchmarkId::new("backbone_fwd", "b16"), |b| {
        b.iter(|| backbone.pyramid(images.clone(), Mode::Train))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
