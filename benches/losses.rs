//! Forward plus backward of the whole MGCA objective on the CPU backend, at the reference's
//! per-device sizes (N = 72, D = 128, W = 111, K = 500; M = 196 for ViT, 361 for ResNet).
//!
//! `cargo bench --bench losses` (or `cargo xtask bench losses`, which also times the PyTorch
//! script `benches/losses_pytorch.py` on the same sizes and prints the ratio).

use burn::tensor::Tensor;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mgca::backend::{Cpu, CpuAutodiff, cpu_device};
use mgca::config::{ImageEncoderKind, MgcaConfig};
use mgca::loss::cta_cpu::CtaKernel;
use mgca::loss::{BatchShape, CtaEngine, Objective, ObjectiveInputs};

/// Leaves that require gradients, freshly allocated as the heads' outputs are at every training
/// step (the fused path then takes their values without a copy).
fn leaves(inputs: &ObjectiveInputs<CpuAutodiff>) -> ObjectiveInputs<CpuAutodiff> {
    let mut x = inputs.clone();
    x.img_emb = Tensor::from_inner(x.img_emb.inner()).require_grad();
    x.report_emb = Tensor::from_inner(x.report_emb.inner()).require_grad();
    x.patch_emb = Tensor::from_data(x.patch_emb.to_data(), &x.patch_emb.device()).require_grad();
    x.word_emb = Tensor::from_data(x.word_emb.to_data(), &x.word_emb.device()).require_grad();
    x.prototypes = Tensor::from_inner(x.prototypes.inner()).require_grad();
    x
}

fn bench(c: &mut Criterion) {
    mgca::backend::tune_allocator();
    let device = cpu_device();
    let mut group = c.benchmark_group("losses");
    group.sample_size(20);
    for (name, encoder, patches) in
        [("vit_b72", ImageEncoderKind::VitBase, 196), ("resnet_b72", ImageEncoderKind::Resnet50, 361)]
    {
        let shape = BatchShape { samples: 72, dim: 128, patches, words: 111, heads: 12, prototypes: 500 };
        let inputs = ObjectiveInputs::<CpuAutodiff>::random(shape, encoder == ImageEncoderKind::VitBase, 0, &device);
        // `fwd_bwd`: the CPU path (CTA as the fused kernel); `fwd_bwd_graph`: CTA as a burn
        // autodiff graph, the path a GPU backend takes.
        for (function, engine) in [("fwd_bwd", CtaEngine::FusedCpu), ("fwd_bwd_graph", CtaEngine::Graph)] {
            let objective = Objective::new(MgcaConfig::reference_for(encoder).objective).with_engine(engine);
            group.bench_function(BenchmarkId::new(function, name), |b| {
                b.iter_batched(
                    || leaves(&inputs),
                    |x| {
                        let out = objective.forward(x);
                        out.total.backward()
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();

    // The CTA kernel alone, on host buffers: what the objective's CPU path spends outside it is
    // burn's share (the other losses, copies, the gradient link).
    let mut group = c.benchmark_group("cta_kernel");
    group.sample_size(20);
    for (name, encoder, patches) in
        [("vit_b72", ImageEncoderKind::VitBase, 196), ("resnet_b72", ImageEncoderKind::Resnet50, 361)]
    {
        let shape = BatchShape { samples: 72, dim: 128, patches, words: 111, heads: 12, prototypes: 500 };
        let x = ObjectiveInputs::<Cpu>::random(shape, encoder == ImageEncoderKind::VitBase, 0, &device);
        let cta = MgcaConfig::reference_for(encoder).objective.cta;
        let host = |t: Tensor<Cpu, 3>| t.into_data().into_vec::<f32>().unwrap();
        let (p, w) = (host(x.patch_emb), host(x.word_emb));
        let pad = x.word_pad.into_data().into_vec::<bool>().unwrap();
        let omega = cta.word_weights(x.word_attn).into_data().into_vec::<f32>().unwrap();
        let pi = cta.patch_weights(x.patch_attn, [72, patches], &device).into_data().into_vec::<f32>().unwrap();
        let kernel = CtaKernel {
            temperature: cta.temperature,
            bidirectional: true,
            normalize_patch_context: cta.normalize_patch_context,
            side_weights: (1.0, 1.0),
        };
        group.bench_function(BenchmarkId::new("fwd_bwd", name), |b| {
            b.iter(|| kernel.run([72, patches, 111, 128], &p, &w, &pad, &omega, &pi))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
