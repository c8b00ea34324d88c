//! LayerNorm over the last axis, one pass per row each way. Forward:
//! `μ = mean(x)`, `σ² = mean((x − μ)²)`, `r = 1/√(σ² + ε)`, `x̂ = (x − μ)·r`, `y = γ⊙x̂ + β`.
//! Backward, with `h = γ⊙∂L/∂y` and `D` the width:
//! `∂L/∂x = r·(h − mean(h) − x̂·mean(h⊙x̂))`, `∂L/∂γ = Σ_rows ∂L/∂y⊙x̂`, `∂L/∂β = Σ_rows ∂L/∂y`.
//! The backward pass keeps only the input and two numbers per row (`μ`, `r`).
//!
//! Book: "Build, backends and speed", section "Our kernels". Reference: `torch.nn.LayerNorm`
//! (biased variance), ε = 1e-6 in timm's ViT-B/16 and 1e-12 in BERT.
//!
//! **Deviation:** none.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use super::math::{LANES, lane_sum};
use super::{PARALLEL_MIN_ELEMENTS, Route, back, contiguous, like, multiversion, route, values};
use crate::backend::{Cpu, CpuAutodiff};

multiversion! {
    /// Normalise each row of `gamma.len()` values of `x` into `y`; `stats` receives `(μ, r)`
    /// per row.
    pub fn layer_norm_forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32], stats: &mut [f32]) {
        let width = gamma.len();
        let n = width as f32;
        for ((x, y), s) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)).zip(stats.chunks_exact_mut(2)) {
            let mean = lane_sum(x, |v| v) / n;
            let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
            let r = 1.0 / (var + eps).sqrt();
            for (((x, y), g), b) in x.iter().zip(y.iter_mut()).zip(gamma).zip(beta) {
                *y = (x - mean) * r * g + b;
            }
            s[0] = mean;
            s[1] = r;
        }
    }
}

multiversion! {
    /// The backward pass of [`layer_norm_forward`] over some rows: `g` holds `∂L/∂y` on entry
    /// and `∂L/∂x` on exit; `∂L/∂γ` and `∂L/∂β` of these rows are added to `dgamma`, `dbeta`.
    pub fn layer_norm_backward(
        x: &[f32],
        stats: &[f32],
        gamma: &[f32],
        g: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let width = gamma.len();
        let n = width as f32;
        for ((x, g), s) in x.chunks_exact(width).zip(g.chunks_exact_mut(width)).zip(stats.chunks_exact(2)) {
            let (mean, r) = (s[0], s[1]);
            let mut acc_h = [0f32; LANES];
            let mut acc_hx = [0f32; LANES];
            let (mut tail_h, mut tail_hx) = (0f32, 0f32);
            let full = width - width % LANES;
            for c in (0..full).step_by(LANES) {
                for k in 0..LANES {
                    let i = c + k;
                    let xhat = (x[i] - mean) * r;
                    let h = g[i] * gamma[i];
                    acc_h[k] += h;
                    acc_hx[k] += h * xhat;
                    dgamma[i] += g[i] * xhat;
                    dbeta[i] += g[i];
                }
            }
            for i in full..width {
                let xhat = (x[i] - mean) * r;
                let h = g[i] * gamma[i];
                tail_h += h;
                tail_hx += h * xhat;
                dgamma[i] += g[i] * xhat;
                dbeta[i] += g[i];
            }
            let mean_h = (acc_h.iter().sum::<f32>() + tail_h) / n;
            let mean_hx = (acc_hx.iter().sum::<f32>() + tail_hx) / n;
            for i in 0..width {
                let xhat = (x[i] - mean) * r;
                g[i] = r * (g[i] * gamma[i] - mean_h - xhat * mean_hx);
            }
        }
    }
}

/// Rows per parallel block: a fixed number, so that the partial sums of `∂L/∂γ`, `∂L/∂β` are
/// added in the same order on any number of threads (runs stay bit-reproducible).
fn rows_per_block(width: usize) -> usize {
    (PARALLEL_MIN_ELEMENTS / width.max(1)).max(1)
}

/// `(y, stats)` for contiguous `x` of width `gamma.len()`.
fn forward_values(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let width = gamma.len();
    let rows = x.len() / width;
    let mut y = vec![0f32; x.len()];
    let mut stats = vec![0f32; 2 * rows];
    let block = rows_per_block(width);
    if x.len() < PARALLEL_MIN_ELEMENTS {
        layer_norm_forward(x, gamma, beta, eps, &mut y, &mut stats);
    } else {
        x.par_chunks(block * width)
            .zip(y.par_chunks_mut(block * width))
            .zip(stats.par_chunks_mut(block * 2))
            .for_each(|((x, y), s)| layer_norm_forward(x, gamma, beta, eps, y, s));
    }
    (y, stats)
}

/// `(∂L/∂x, ∂L/∂γ, ∂L/∂β)`.
fn backward_values(x: &[f32], stats: &[f32], gamma: &[f32], mut g: Vec<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let width = gamma.len();
    let block = rows_per_block(width);
    // One (∂γ, ∂β) partial per block, summed in block order.
    let partials: Vec<Vec<f32>> = x
        .par_chunks(block * width)
        .zip(g.par_chunks_mut(block * width))
        .zip(stats.par_chunks(block * 2))
        .map(|((x, g), s)| {
            let mut part = vec![0f32; 2 * width];
            let (dgamma, dbeta) = part.split_at_mut(width);
            layer_norm_backward(x, s, gamma, g, dgamma, dbeta);
            part
        })
        .collect();
    let mut dgamma = vec![0f32; width];
    let mut dbeta = vec![0f32; width];
    for part in &partials {
        for i in 0..width {
            dgamma[i] += part[i];
            dbeta[i] += part[width + i];
        }
    }
    (g, dgamma, dbeta)
}

/// What the backward pass keeps: the input, `(μ, r)` per row and `γ`.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    stats: Vec<f32>,
    gamma: Vec<f32>,
}

#[derive(Debug)]
struct LayerNormNode;

impl Backward<Cpu, 3> for LayerNormNode {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pgamma, pbeta] = ops.parents;
        let upstream = contiguous(&grads.consume::<Cpu>(&ops.node));
        let saved = ops.state;
        let (dx, dgamma, dbeta) =
            backward_values(values(&saved.x), &saved.stats, &saved.gamma, values(&upstream).to_vec());
        let vector = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, [saved.gamma.len()]));
        if let Some(node) = px {
            grads.register::<Cpu>(node.id, like(&saved.x, dx));
        }
        if let Some(node) = pgamma {
            grads.register::<Cpu>(node.id, vector(dgamma));
        }
        if let Some(node) = pbeta {
            grads.register::<Cpu>(node.id, vector(dbeta));
        }
    }
}

fn forward_flex(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    eps: f64,
) -> (FlexTensor, FlexTensor, Vec<f32>, Vec<f32>) {
    let x = contiguous(x);
    let gamma = values(&contiguous(gamma)).to_vec();
    let beta = values(&contiguous(beta)).to_vec();
    let (y, stats) = forward_values(values(&x), &gamma, &beta, eps as f32);
    (like(&x, y), x, stats, gamma)
}

fn autodiff_forward(
    x: FloatTensor<CpuAutodiff>,
    gamma: FloatTensor<CpuAutodiff>,
    beta: FloatTensor<CpuAutodiff>,
    eps: f64,
) -> FloatTensor<CpuAutodiff> {
    let (y, xc, stats, gamma_values) = forward_flex(&x.primitive, &gamma.primitive, &beta.primitive, eps);
    let parents = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    match LayerNormNode.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(Saved { x: xc, stats, gamma: gamma_values }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

// ANCHOR: layer_norm
/// `ln` applied to `x` over its last axis with `eps` (the ε `ln` was configured with): our
/// fused kernel on the CPU backend (with or without autodiff), burn's `layer_norm` elsewhere.
pub fn layer_norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let gamma = ln.gamma.val();
    let Some(beta) = ln.beta.as_ref().map(|b| b.val()) else {
        return ln.forward(x);
    };
    let (x, gamma, beta) =
        (x.into_primitive().tensor(), gamma.into_primitive().tensor(), beta.into_primitive().tensor());
    let out = match (route(x), route(gamma), route(beta)) {
        (Route::Cpu(x), Route::Cpu(gamma), Route::Cpu(beta)) => back::<B, _>(forward_flex(&x, &gamma, &beta, eps).0),
        (Route::CpuAutodiff(x), Route::CpuAutodiff(gamma), Route::CpuAutodiff(beta)) => {
            back::<B, _>(autodiff_forward(x, gamma, beta, eps))
        }
        (x, gamma, beta) => {
            let [x, gamma, beta] = [x, gamma, beta].map(|r| match r {
                Route::Other(t) => t,
                Route::Cpu(t) => back::<B, _>(t),
                Route::CpuAutodiff(t) => back::<B, _>(t),
            });
            B::layer_norm(x, gamma, Some(beta), eps)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
// ANCHOR_END: layer_norm

#[cfg(test)]
mod tests {
    use burn::nn::LayerNormConfig;

    use super::super::testing::{max_rel, random};
    use super::*;
    use crate::backend::cpu_device;

    /// Ours against burn's decomposed LayerNorm, values and the gradients of x, γ and β.
    const LAYER_NORM_TOLERANCE: f32 = 2e-6;

    #[test]
    fn layer_norm_matches_burn_forward_and_backward() {
        for (rows, width, eps) in [(3 * 197, 768, 1e-6), (5, 37, 1e-12)] {
            let mut ln = LayerNormConfig::new(width).with_epsilon(eps).init::<CpuAutodiff>(&cpu_device());
            ln.gamma = ln.gamma.map(|g| (g + random([width], 1) * 0.1).detach().require_grad());
            ln.beta = ln.beta.map(|b| b.map(|b| (b + random([width], 2) * 0.1).detach().require_grad()));
            let x = (random([rows, width], 3) + 0.5).require_grad();
            let weights = random([rows, width], 4);
            let ours = layer_norm(&ln, x.clone(), eps);
            let theirs = ln.forward(x.clone());
            assert!(max_rel(&ours, &theirs) < LAYER_NORM_TOLERANCE, "{}", max_rel(&ours, &theirs));

            let g_ours = (ours * weights.clone()).sum().backward();
            let g_theirs = (theirs * weights).sum().backward();
            let gamma = ln.gamma.val();
            let beta = ln.beta.as_ref().unwrap().val();
            for (name, a, b) in [
                ("x", x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap()),
                (
                    "gamma",
                    gamma.grad(&g_ours).unwrap().reshape([1, width]),
                    gamma.grad(&g_theirs).unwrap().reshape([1, width]),
                ),
                (
                    "beta",
                    beta.grad(&g_ours).unwrap().reshape([1, width]),
                    beta.grad(&g_theirs).unwrap().reshape([1, width]),
                ),
            ] {
                let (a, b) = (Tensor::from_inner(a), Tensor::from_inner(b));
                assert!(max_rel(&a, &b) < LAYER_NORM_TOLERANCE, "{name} (width {width}): {}", max_rel(&a, &b));
            }
        }
    }

    #[test]
    fn layer_norm_without_autodiff_matches_burn() {
        let ln = LayerNormConfig::new(64).with_epsilon(1e-6).init::<Cpu>(&cpu_device());
        let x = Tensor::<Cpu, 3>::random([4, 9, 64], burn::tensor::Distribution::Normal(1.0, 3.0), &cpu_device());
        let ours = layer_norm(&ln, x.clone(), 1e-6).to_data().to_vec::<f32>().unwrap();
        let theirs = ln.forward(x).to_data().to_vec::<f32>().unwrap();
        let worst = ours.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < LAYER_NORM_TOLERANCE, "{worst}");
    }
}
