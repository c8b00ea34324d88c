//! GELU, exact (erf) form, with its derivative, in one pass each:
//! `GELU(x) = x·Φ(x)`, `GELU′(x) = Φ(x) + x·φ(x)`.
//!
//! Book: "Build, backends and speed", section "Our kernels". Reference: `torch.nn.functional.gelu`
//! (`approximate='none'`), the activation of timm's ViT MLP and of BERT's intermediate layer.
//!
//! **Deviation:** none; `Φ` by the approximation in `kernels::math` (absolute error < 3e-7).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use super::math::normal_cdf_pdf;
use super::{Route, back, contiguous, for_rows, like, multiversion, route, unary_node, values};
use crate::backend::Cpu;

multiversion! {
    /// `y = x·Φ(x)`, element-wise (`x` and `y` of equal length).
    pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
        for (x, y) in x.iter().zip(y.iter_mut()) {
            let (cdf, _) = normal_cdf_pdf(*x);
            *y = x * cdf;
        }
    }
}

multiversion! {
    /// `dx = dy·(Φ(x) + x·φ(x))`, element-wise; `dx` holds `dy` on entry.
    pub fn gelu_backward(x: &[f32], dx: &mut [f32]) {
        for (x, d) in x.iter().zip(dx.iter_mut()) {
            let (cdf, pdf) = normal_cdf_pdf(*x);
            *d *= cdf + x * pdf;
        }
    }
}

/// The elements of `x` as rows for [`for_rows`] (element-wise: any width will do).
const BLOCK: usize = 4096;

fn forward_flex(x: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let xs = values(&x);
    let mut out = vec![0f32; xs.len()];
    for_rows(xs, &mut out, BLOCK, gelu_forward);
    like(&x, out)
}

fn backward_flex(x: &FlexTensor, grad: FlexTensor) -> FlexTensor {
    let grad = contiguous(&grad);
    let mut dx = values(&grad).to_vec();
    for_rows(values(x), &mut dx, BLOCK, gelu_backward);
    like(&grad, dx)
}

#[derive(Debug)]
struct GeluNode;

impl Backward<Cpu, 1> for GeluNode {
    /// The contiguous input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| backward_flex(&x, grad));
    }
}

// ANCHOR: gelu
/// GELU (erf form): our fused kernel on the CPU backend (with or without autodiff), burn's
/// `activation::gelu` elsewhere.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let primitive = x.into_primitive().tensor();
    let out = match route(primitive) {
        Route::Cpu(x) => back::<B, _>(forward_flex(&x)),
        Route::CpuAutodiff(x) => {
            let input = contiguous(&x.primitive);
            let out = forward_flex(&input);
            back::<B, _>(unary_node(GeluNode, x, out, input))
        }
        Route::Other(x) => {
            return burn::tensor::activation::gelu(Tensor::from_primitive(TensorPrimitive::Float(x)));
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
// ANCHOR_END: gelu

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, random};
    use super::*;

    /// Ours against burn's GELU (scalar libm `erf`), values and gradients.
    const GELU_TOLERANCE: f32 = 1e-6;

    #[test]
    fn gelu_matches_burn_forward_and_backward() {
        // Large enough to take the parallel path, with a ragged tail.
        let x = random([3, 97, 131], 7).require_grad();
        let weights = random([3, 97, 131], 8);
        let ours = gelu(x.clone());
        let theirs = burn::tensor::activation::gelu(x.clone());
        assert!(max_rel(&ours, &theirs) < GELU_TOLERANCE, "{}", max_rel(&ours, &theirs));

        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        let (a, b) = (x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
        let (a, b) = (Tensor::from_inner(a), Tensor::from_inner(b));
        assert!(max_rel(&a, &b) < GELU_TOLERANCE, "{}", max_rel(&a, &b));
    }

    #[test]
    fn gelu_without_autodiff_and_on_views() {
        use crate::backend::cpu_device;
        let x = Tensor::<Cpu, 2>::from_floats([[-8.0, -1.0, 0.0, 0.5], [1.0, 2.0, 3.0, 30.0]], &cpu_device());
        // A transposed (strided) view goes through the contiguous copy.
        let ours = gelu(x.clone().transpose()).transpose().to_data().to_vec::<f32>().unwrap();
        let want = [-5.0e-15_f32, -0.158_655_26, 0.0, 0.345_731_3, 0.841_344_7, 1.954_5, 2.995_95, 30.0];
        for (o, w) in ours.iter().zip(want) {
            assert!((o - w).abs() < 2e-6, "{ours:?}");
        }
    }
}
