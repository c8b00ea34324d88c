//! One segmentation training step on the CPU backend, the counterpart of
//! `benches/segmentation_pytorch.py`: the U-Net of segmentation-models-pytorch on ResNet-50 at
//! 224 px (encoder parameters frozen, its BatchNorm in training mode as the reference leaves
//! it), the loss `10·focal − ln(soft Dice)`, backward into the decoder and head, and one AdamW
//! step (lr 5e-4, wd 0.05) — at the SIIM runs' batch of 8 (`step/b8`).
//!
//! Targets: a rectangle of foreground in every other image, the rest empty (the same recipe as
//! the PyTorch script).
//!
//! `cargo bench --bench segmentation` (or `cargo xtask bench segmentation`, which also times
//! the PyTorch step and prints the ratio).

use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::loss::segmentation::{SegmentationLossConfig, segmentation_loss};
use mgca::model::batchnorm::Mode;
use mgca::model::resnet::ResNetConfig;
use mgca::model::unet::{Unet, UnetConfig};
use mgca::train::optim::AdamW;

type B = CpuAutodiff;

const SIDE: usize = 224;

/// Masks `[batch, 224, 224]`: even images hold a rectangle, odd ones none.
fn masks(batch: usize) -> Vec<f32> {
    let mut m = vec![0f32; batch * SIDE * SIDE];
    for i in (0..batch).step_by(2) {
        let (y0, x0) = (40 + 7 * i, 60 + 5 * i);
        for y in y0..y0 + 50 {
            for x in x0..x0 + 40 {
                m[(i * SIDE + y) * SIDE + x] = 1.0;
            }
        }
    }
    m
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let device = cpu_device();
    let mut group = c.benchmark_group("segmentation");
    group.sample_size(10);
    let batch = 8;
    let encoder = ResNetConfig::resnet50().init::<B>(&device).without_upsampling().no_grad();
    let config = UnetConfig::for_encoder(encoder.unet_channels());
    let mut model: Option<Unet<B>> = Some(config.init(encoder, &device));
    let adamw = AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.05 };
    let mut optim = adamw.config().init::<B, Unet<B>>();
    let images = Tensor::<B, 4>::random([batch, 3, SIDE, SIDE], Distribution::Normal(0.0, 1.0), &device);
    let targets = Tensor::<B, 3>::from_data(TensorData::new(masks(batch), [batch, SIDE, SIDE]), &device);
    let loss_config = SegmentationLossConfig::reference();
    // ANCHOR: step
    group.bench_function(BenchmarkId::new("step", "b8"), |b| {
        b.iter(|| {
            let m = model.take().expect("the model between steps");
            let logits = m.forward(images.clone(), Mode::Train, Mode::Train, true);
            let loss = segmentation_loss(logits, targets.clone(), &loss_config).loss;
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(5e-4, m, grads));
        })
    });
    // ANCHOR_END: step
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
