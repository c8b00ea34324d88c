//! BatchNorm over the channel axis (axis 1) of `[N, C, …]`, one pass per job:
//! training `μ_c = mean(x_{·c·})`, `σ²_c = mean((x_{·c·} − μ_c)²)` (biased), `r_c = 1/√(σ²_c + ε)`,
//! `y = γ_c·(x − μ_c)·r_c + β_c`, with the backward pass over the `M = N·H·W` values of a channel
//! `∂L/∂x = r_c·(h − mean(h) − x̂·mean(h⊙x̂))`, `h = γ_c·∂L/∂y`,
//! `∂L/∂γ_c = Σ ∂L/∂y⊙x̂`, `∂L/∂β_c = Σ ∂L/∂y`; and the per-channel affine map
//! `y = s_c·x + t_c` (evaluation: `s = γ·r`, `t = β − μ·s` from the running statistics) with
//! `∂L/∂x = s_c·∂L/∂y`, `∂L/∂s_c = Σ ∂L/∂y⊙x`, `∂L/∂t_c = Σ ∂L/∂y`.
//!
//! Sums run per channel in f64, one channel per task, so the result does not depend on the
//! number of threads.
//!
//! Book: "Build, backends and speed", section "Our kernels". Reference: `torch.nn.BatchNorm2d`
//! and `BatchNorm1d` as torchvision's ResNet-50 and MGCA's projection heads use them.
//!
//! **Deviation:** none.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{Route, back, contiguous, like, route, values};
use crate::backend::{Cpu, CpuAutodiff};

/// `[N, C, inner]` of a shape `[N, C, …]`.
fn geometry(shape: &[usize]) -> (usize, usize, usize) {
    assert!(shape.len() >= 2, "BatchNorm needs [N, C, …], got {shape:?}");
    (shape[0], shape[1], shape[2..].iter().product())
}

/// `Σ term(c, x)` over each channel's values, for every channel: `x` is `[N, C, inner]`.
fn per_channel_sum(x: &[f32], geo: (usize, usize, usize), term: impl Fn(usize, f32) -> f64 + Sync) -> Vec<f64> {
    per_channel_dot(x, x, geo, |ch, v, _| term(ch, v))
}

/// `Σ term(c, a, b)` over each channel's values of two tensors of the same shape `[N, C, inner]`,
/// in f64, one channel per task.
fn per_channel_dot(
    a: &[f32],
    b: &[f32],
    (n, c, inner): (usize, usize, usize),
    term: impl Fn(usize, f32, f32) -> f64 + Sync,
) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut total = 0f64;
            for s in 0..n {
                let start = (s * c + ch) * inner;
                let (ba, bb) = (&a[start..start + inner], &b[start..start + inner]);
                let mut lanes = [0f64; 8];
                let (ca, cb) = (ba.chunks_exact(8), bb.chunks_exact(8));
                let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| term(ch, *x, *y)).sum();
                for (x, y) in ca.zip(cb) {
                    for k in 0..8 {
                        lanes[k] += term(ch, x[k], y[k]);
                    }
                }
                total += lanes.iter().sum::<f64>() + tail;
            }
            total
        })
        .collect()
}

/// `f(c, offset, block)` on every `[inner]` block of `out` (`[N, C, inner]`), where `offset`
/// is the block's position in the whole tensor; in parallel over `n`.
fn map_channels(out: &mut [f32], geo: (usize, usize, usize), f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let (_, c, inner) = geo;
    out.par_chunks_mut(c * inner).enumerate().for_each(|(s, sample)| {
        for (ch, block) in sample.chunks_mut(inner).enumerate() {
            f(ch, (s * c + ch) * inner, block);
        }
    });
}

/// Batch statistics `(μ, σ²)` (biased) per channel.
pub fn channel_stats(x: &[f32], geo: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let count = (geo.0 * geo.2) as f64;
    let mean: Vec<f64> = per_channel_sum(x, geo, |_, v| v as f64).into_iter().map(|s| s / count).collect();
    let var: Vec<f64> = per_channel_sum(x, geo, |ch, v| {
        let d = v as f64 - mean[ch];
        d * d
    })
    .into_iter()
    .map(|s| s / count)
    .collect();
    (mean.iter().map(|v| *v as f32).collect(), var.iter().map(|v| *v as f32).collect())
}

/// `y = s_c·x + t_c`.
pub fn channel_affine_forward(x: &[f32], scale: &[f32], shift: &[f32], geo: (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    map_channels(&mut y, geo, |ch, at, out| {
        let (s, t) = (scale[ch], shift[ch]);
        let len = out.len();
        for (o, v) in out.iter_mut().zip(&x[at..at + len]) {
            *o = v * s + t;
        }
    });
    y
}

/// What the training-mode backward pass keeps.
#[derive(Debug, Clone)]
struct TrainSaved {
    x: FlexTensor,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Vec<f32>,
}

#[derive(Debug)]
struct TrainNode;

impl Backward<Cpu, 3> for TrainNode {
    type State = TrainSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pgamma, pbeta] = ops.parents;
        let g = contiguous(&grads.consume::<Cpu>(&ops.node));
        let s = ops.state;
        let geo = geometry(s.x.layout().shape());
        let (x, gv) = (values(&s.x), values(&g));
        let count = (geo.0 * geo.2) as f64;
        let xhat = |ch: usize, v: f32| (v - s.mean[ch]) * s.rstd[ch];
        let sum_g = per_channel_sum(gv, geo, |_, v| v as f64); // Σ ∂L/∂y = ∂L/∂β
        let sum_gx = per_channel_dot(gv, x, geo, |ch, gy, xv| gy as f64 * xhat(ch, xv) as f64); // ∂L/∂γ
        if let Some(node) = px {
            // h = γ·g: mean(h) = γ·Σg/M, mean(h·x̂) = γ·Σ(g·x̂)/M.
            let a: Vec<f32> = (0..geo.1).map(|ch| (s.gamma[ch] as f64 * sum_g[ch] / count) as f32).collect();
            let b: Vec<f32> = (0..geo.1).map(|ch| (s.gamma[ch] as f64 * sum_gx[ch] / count) as f32).collect();
            let mut dx = vec![0f32; x.len()];
            map_channels(&mut dx, geo, |ch, at, out| {
                let (r, g, m, a, b) = (s.rstd[ch], s.gamma[ch], s.mean[ch], a[ch], b[ch]);
                let len = out.len();
                for ((o, gy), xv) in out.iter_mut().zip(&gv[at..at + len]).zip(&x[at..at + len]) {
                    *o = r * (g * gy - a - (xv - m) * r * b);
                }
            });
            grads.register::<Cpu>(node.id, like(&s.x, dx));
        }
        if let Some(node) = pgamma {
            grads.register::<Cpu>(node.id, channel_vector(&sum_gx));
        }
        if let Some(node) = pbeta {
            grads.register::<Cpu>(node.id, channel_vector(&sum_g));
        }
    }
}

/// What the affine map's backward pass keeps.
#[derive(Debug, Clone)]
struct AffineSaved {
    x: FlexTensor,
    scale: Vec<f32>,
}

#[derive(Debug)]
struct AffineNode;

impl Backward<Cpu, 3> for AffineNode {
    type State = AffineSaved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pscale, pshift] = ops.parents;
        let g = contiguous(&grads.consume::<Cpu>(&ops.node));
        let s = ops.state;
        let geo = geometry(s.x.layout().shape());
        let gv = values(&g);
        if let Some(node) = pscale {
            let x = values(&s.x);
            grads.register::<Cpu>(
                node.id,
                channel_vector(&per_channel_dot(gv, x, geo, |_, gy, xv| gy as f64 * xv as f64)),
            );
        }
        if let Some(node) = pshift {
            grads.register::<Cpu>(node.id, channel_vector(&per_channel_sum(gv, geo, |_, v| v as f64)));
        }
        if let Some(node) = px {
            let mut dx = vec![0f32; gv.len()];
            map_channels(&mut dx, geo, |ch, at, out| {
                let k = s.scale[ch];
                let len = out.len();
                for (o, gy) in out.iter_mut().zip(&gv[at..at + len]) {
                    *o = gy * k;
                }
            });
            grads.register::<Cpu>(node.id, like(&g, dx));
        }
    }
}

/// A `[C]` flex tensor of `values`.
fn vector_tensor(values: Vec<f32>) -> FlexTensor {
    let n = values.len();
    FlexTensor::from_data(TensorData::new(values, [n]))
}

/// A `[C]` flex tensor of per-channel f64 sums, in f32.
fn channel_vector(sums: &[f64]) -> FlexTensor {
    vector_tensor(sums.iter().map(|v| *v as f32).collect())
}

/// Training-mode BatchNorm on the CPU backend: `Ok((y, μ, σ²))` with the batch statistics
/// detached (for the running estimates), or `Err(x)` on another backend (the caller then uses
/// burn's operations). `gamma`, `beta`: the affine parameters (`[C]`; ones and zeros when the
/// layer has none).
#[allow(clippy::type_complexity)]
pub fn batch_norm_train<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Result<(Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>), Tensor<B, D>> {
    if !super::on_cpu::<B>() {
        return Err(x);
    }
    let float = |t: FloatTensor<B>| Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t));
    let (xp, gp, bp) = (x.into_primitive().tensor(), gamma.into_primitive().tensor(), beta.into_primitive().tensor());
    let compute = |x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor| {
        let x = contiguous(x);
        let geo = geometry(x.layout().shape());
        let (mean, var) = channel_stats(values(&x), geo);
        let rstd: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
        let gamma = values(&contiguous(gamma)).to_vec();
        let beta = values(&contiguous(beta)).to_vec();
        // y = γ·(x − μ)·r + β, written as the reference computes it (subtract, scale, shift).
        let mut y = vec![0f32; x.layout().num_elements()];
        let xs = values(&x);
        map_channels(&mut y, geo, |ch, at, out| {
            let (m, r, g, b) = (mean[ch], rstd[ch], gamma[ch], beta[ch]);
            let len = out.len();
            for (o, v) in out.iter_mut().zip(&xs[at..at + len]) {
                *o = (v - m) * r * g + b;
            }
        });
        (like(&x, y), x, mean, var, rstd, gamma)
    };
    match (route(xp), route(gp), route(bp)) {
        (Route::Cpu(x), Route::Cpu(g), Route::Cpu(b)) => {
            let (y, _, mean, var, _, _) = compute(&x, &g, &b);
            let y = Tensor::from_primitive(TensorPrimitive::Float(back::<B, _>(y)));
            Ok((y, float(back::<B, _>(vector_tensor(mean))), float(back::<B, _>(vector_tensor(var)))))
        }
        (Route::CpuAutodiff(x), Route::CpuAutodiff(g), Route::CpuAutodiff(b)) => {
            let (y, xc, mean, var, rstd, gamma) = compute(&x.primitive, &g.primitive, &b.primitive);
            let parents = [x.node.clone(), g.node.clone(), b.node.clone()];
            let y: FloatTensor<CpuAutodiff> =
                match TrainNode.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish(TrainSaved { x: xc, mean: mean.clone(), rstd, gamma }, y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                };
            let detached = |v: Vec<f32>| {
                let t: Tensor<CpuAutodiff, 1> =
                    Tensor::from_inner(Tensor::from_primitive(TensorPrimitive::Float(vector_tensor(v))));
                float(back::<B, _>(t.into_primitive().tensor()))
            };
            let y = Tensor::from_primitive(TensorPrimitive::Float(back::<B, _>(y)));
            Ok((y, detached(mean), detached(var)))
        }
        _ => unreachable!("on_cpu said the CPU backend"),
    }
}

/// `y = s_c·x + t_c` over the channel axis on the CPU backend, or `Err(x)` on another backend.
pub fn channel_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !super::on_cpu::<B>() {
        return Err(x);
    }
    let (xp, sp, tp) = (x.into_primitive().tensor(), scale.into_primitive().tensor(), shift.into_primitive().tensor());
    let compute = |x: &FlexTensor, s: &FlexTensor, t: &FlexTensor| {
        let x = contiguous(x);
        let geo = geometry(x.layout().shape());
        let scale = values(&contiguous(s)).to_vec();
        let shift = values(&contiguous(t)).to_vec();
        let y = channel_affine_forward(values(&x), &scale, &shift, geo);
        (like(&x, y), x, scale)
    };
    let out = match (route(xp), route(sp), route(tp)) {
        (Route::Cpu(x), Route::Cpu(s), Route::Cpu(t)) => back::<B, _>(compute(&x, &s, &t).0),
        (Route::CpuAutodiff(x), Route::CpuAutodiff(s), Route::CpuAutodiff(t)) => {
            let (y, xc, scale) = compute(&x.primitive, &s.primitive, &t.primitive);
            let parents = [x.node.clone(), s.node.clone(), t.node.clone()];
            let y: FloatTensor<CpuAutodiff> =
                match AffineNode.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
                    OpsKind::Tracked(prep) => prep.finish(AffineSaved { x: xc, scale }, y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                };
            back::<B, _>(y)
        }
        _ => unreachable!("on_cpu said the CPU backend"),
    };
    Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, random};
    use super::*;

    /// Ours against BatchNorm written with burn's operations, values and gradients.
    const BATCH_NORM_TOLERANCE: f32 = 2e-5;

    type T<const D: usize> = Tensor<CpuAutodiff, D>;

    fn per_channel(v: T<1>) -> T<4> {
        let c = v.dims()[0];
        v.reshape([1, c, 1, 1])
    }

    fn grads_of(loss: T<1>, xs: [&T<4>; 1], ps: [&T<1>; 2]) -> Vec<T<2>> {
        let g = loss.backward();
        let mut out = vec![Tensor::from_inner(xs[0].grad(&g).unwrap()).flatten(0, 2)];
        for p in ps {
            out.push(Tensor::from_inner(p.grad(&g).unwrap()).unsqueeze());
        }
        out
    }

    #[test]
    fn training_mode_matches_burn_operations() {
        let (n, c, h, w) = (3, 5, 7, 6);
        let x = (random([n, c, h, w], 21) * 3.0 + 1.0).require_grad();
        let gamma = (random([c], 22) * 0.2 + 1.0).detach().require_grad();
        let beta = (random([c], 23) * 0.2).detach().require_grad();
        let weights = random([n, c, h, w], 24);
        let (ours, mean, var) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5).ok().unwrap();

        let m = x.clone().mean_dim(0).mean_dim(2).mean_dim(3); // [1, C, 1, 1]
        let v = (x.clone() - m.clone()).square().mean_dim(0).mean_dim(2).mean_dim(3);
        let theirs = (x.clone() - m.clone()) / v.clone().add_scalar(1e-5).sqrt() * per_channel(gamma.clone())
            + per_channel(beta.clone());
        assert!(max_rel(&ours, &theirs) < BATCH_NORM_TOLERANCE, "{}", max_rel(&ours, &theirs));
        assert!(max_rel(&mean.unsqueeze::<2>(), &m.reshape([1, c])) < BATCH_NORM_TOLERANCE);
        assert!(max_rel(&var.unsqueeze::<2>(), &v.reshape([1, c])) < BATCH_NORM_TOLERANCE);

        let a = grads_of((ours * weights.clone()).sum(), [&x], [&gamma, &beta]);
        let b = grads_of((theirs * weights).sum(), [&x], [&gamma, &beta]);
        for (name, a, b) in [("x", &a[0], &b[0]), ("gamma", &a[1], &b[1]), ("beta", &a[2], &b[2])] {
            assert!(max_rel(a, b) < BATCH_NORM_TOLERANCE, "{name}: {}", max_rel(a, b));
        }
    }

    #[test]
    fn the_channel_affine_map_matches_burn_operations() {
        let (n, c, h, w) = (2, 4, 5, 3);
        let x = random([n, c, h, w], 31).require_grad();
        let scale = random([c], 32).detach().require_grad();
        let shift = random([c], 33).detach().require_grad();
        let weights = random([n, c, h, w], 34);
        let ours = channel_affine(x.clone(), scale.clone(), shift.clone()).ok().unwrap();
        let theirs = x.clone() * per_channel(scale.clone()) + per_channel(shift.clone());
        assert!(max_rel(&ours, &theirs) < BATCH_NORM_TOLERANCE);
        let a = grads_of((ours * weights.clone()).sum(), [&x], [&scale, &shift]);
        let b = grads_of((theirs * weights).sum(), [&x], [&scale, &shift]);
        for (name, a, b) in [("x", &a[0], &b[0]), ("scale", &a[1], &b[1]), ("shift", &a[2], &b[2])] {
            assert!(max_rel(a, b) < BATCH_NORM_TOLERANCE, "{name}: {}", max_rel(a, b));
        }
    }
}
