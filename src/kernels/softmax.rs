//! Softmax over the last axis, one pass per row each way:
//! `y_i = e^{x_i − m} / Σ_j e^{x_j − m}` with `m = max_j x_j`, and
//! `∂L/∂x_i = y_i·(g_i − Σ_j g_j·y_j)` for the upstream gradient `g`.
//!
//! Book: "Build, backends and speed", section "Our kernels". Reference: `torch.softmax(…, dim=-1)`
//! on the attention scores of timm's `Attention` and transformers' `BertSelfAttention`.
//!
//! **Deviation:** none; `exp` by the approximation in `kernels::math` (relative error ~1e-7).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use super::math::{LANES, exp, lane_sum};
use super::{Route, back, contiguous, for_rows, like, multiversion, route, unary_node, values};
use crate::backend::Cpu;

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = tail.iter().fold(f32::NEG_INFINITY, |m, v| if *v > m { *v } else { m });
    for a in acc {
        m = if a > m { a } else { m };
    }
    m
}

#[inline(always)]
fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

multiversion! {
    /// Softmax of each row of `width` values of `x` into `y`.
    pub fn softmax_forward(x: &[f32], y: &mut [f32], width: usize) {
        for (x, y) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
            let m = row_max(x);
            let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
            for (x, y) in x.iter().zip(y.iter_mut()) {
                *y = exp(x - m);
            }
            let inv = 1.0 / lane_sum(y, |v| v);
            for y in y.iter_mut() {
                *y *= inv;
            }
        }
    }
}

multiversion! {
    /// The gradient with respect to the input of each row's softmax: `g` holds the upstream
    /// gradient on entry and the input's gradient on exit; `y` is the softmax.
    pub fn softmax_backward(y: &[f32], g: &mut [f32], width: usize) {
        for (y, g) in y.chunks_exact(width).zip(g.chunks_exact_mut(width)) {
            let s = row_dot(y, g);
            for (y, g) in y.iter().zip(g.iter_mut()) {
                *g = y * (*g - s);
            }
        }
    }
}

fn forward_flex(x: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let width = *x.layout().shape().last().expect("at least one axis");
    let xs = values(&x);
    let mut out = vec![0f32; xs.len()];
    if width > 0 {
        for_rows(xs, &mut out, width, |x, y| softmax_forward(x, y, width));
    }
    like(&x, out)
}

fn backward_flex(y: &FlexTensor, grad: FlexTensor) -> FlexTensor {
    let grad = contiguous(&grad);
    let width = *y.layout().shape().last().expect("at least one axis");
    let mut dx = values(&grad).to_vec();
    if width > 0 {
        for_rows(values(y), &mut dx, width, |y, g| softmax_backward(y, g, width));
    }
    like(&grad, dx)
}

#[derive(Debug)]
struct SoftmaxNode;

impl Backward<Cpu, 1> for SoftmaxNode {
    /// The output (contiguous).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| backward_flex(&y, grad));
    }
}

// ANCHOR: softmax
/// Softmax over the last axis: our fused kernel on the CPU backend (with or without autodiff),
/// burn's `activation::softmax` elsewhere.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let primitive = x.into_primitive().tensor();
    let out = match route(primitive) {
        Route::Cpu(x) => back::<B, _>(forward_flex(&x)),
        Route::CpuAutodiff(x) => {
            let out = forward_flex(&x.primitive);
            back::<B, _>(unary_node(SoftmaxNode, x, out.clone(), out))
        }
        Route::Other(x) => {
            return burn::tensor::activation::softmax(Tensor::from_primitive(TensorPrimitive::Float(x)), D - 1);
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
// ANCHOR_END: softmax

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, random};
    use super::*;

    /// Ours against burn's decomposed softmax (max, exp, sum, divide), values and gradients.
    const SOFTMAX_TOLERANCE: f32 = 1e-6;
    /// The gradients (inputs up to ±30, upstream weights of scale 2), relative to the largest.
    const SOFTMAX_GRAD_TOLERANCE: f32 = 4e-6;

    #[test]
    fn softmax_matches_burn_forward_and_backward() {
        // Rows of 197 (a ViT's tokens: not a multiple of the lanes), many rows, masked entries.
        let x = (random([2, 3, 50, 197], 11) * 4.0).require_grad();
        let mask = random([2, 3, 50, 197], 12).greater_elem(1.5).float() * -10000.0;
        let weights = random([2, 3, 50, 197], 13);
        let ours = softmax_last(x.clone() + mask.clone());
        let theirs = burn::tensor::activation::softmax(x.clone() + mask.clone(), 3);
        // Both against softmax in f64.
        let exact: Vec<f64> = {
            let v: Vec<f64> =
                (x.clone() + mask.clone()).to_data().to_vec::<f32>().unwrap().iter().map(|v| *v as f64).collect();
            let row = |r: &[f64]| {
                let m = r.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / s)
            };
            v.chunks(197).flat_map(row).collect()
        };
        let err = |t: &Tensor<crate::backend::CpuAutodiff, 4>| {
            let v = t.to_data().to_vec::<f32>().unwrap();
            v.iter().zip(&exact).fold(0f32, |m, (a, b)| m.max((*a as f64 - b).abs() as f32))
        };
        assert!(
            err(&ours) < SOFTMAX_TOLERANCE,
            "ours {:e} from the f64 softmax (burn: {:e})",
            err(&ours),
            err(&theirs)
        );
        assert!(max_rel(&ours, &theirs) < SOFTMAX_TOLERANCE, "{}", max_rel(&ours, &theirs));
        let rows = ours.clone().sum_dim(3).to_data().to_vec::<f32>().unwrap();
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-6));

        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        let (a, b) = (Tensor::from_inner(x.grad(&g_ours).unwrap()), Tensor::from_inner(x.grad(&g_theirs).unwrap()));
        assert!(max_rel(&a, &b) < SOFTMAX_GRAD_TOLERANCE, "{}", max_rel(&a, &b));
    }

    #[test]
    fn a_row_of_equal_values_is_uniform() {
        use crate::backend::cpu_device;
        let x = Tensor::<Cpu, 2>::from_floats([[3.0; 5], [-1e4, 0.0, -1e4, -1e4, -1e4]], &cpu_device());
        let y = softmax_last(x).to_data().to_vec::<f32>().unwrap();
        assert_eq!(&y[..5], &[0.2; 5]);
        assert_eq!(&y[5..], &[0.0, 1.0, 0.0, 0.0, 0.0]);
    }
}
