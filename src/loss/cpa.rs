//! CPA — cross-modal prototype alignment with swapped prediction.
//!
//! `s_img = v Cᵀ`, `s_txt = t Cᵀ` with unit-norm prototypes `C`; `p = softmax(s / τ₃)`;
//! codes `q = Sinkhorn(exp(s / ε)ᵀ)` without gradient;
//! `L_CPA = ½ [ −(1/N) Σ q_img · log p_txt − (1/N) Σ q_txt · log p_img ]`.
//!
//! Book: "CPA and Sinkhorn–Knopp: prototype-level alignment" (with the worked example). Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA.forward` (the prototype block), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none in the formula. As in the reference, prototypes are re-normalised
//! outside autograd before every forward ([`normalize_prototypes`]), the gradient is taken with
//! respect to the normalised rows, and the log is taken of the softmax output (not a fused
//! log-softmax; the logits are bounded by ±1/τ₃ so it cannot underflow).

use burn::tensor::{Tensor, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use super::{AllReduce, SinkhornConfig, l2_normalize};

/// Configuration of CPA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpaConfig {
    /// τ₃, the temperature of the predicted prototype distributions (reference and paper 0.2).
    pub temperature: f32,
    /// The Sinkhorn–Knopp step that turns scores into codes.
    pub sinkhorn: SinkhornConfig,
}

impl CpaConfig {
    /// The reference's CPA.
    pub fn reference() -> Self {
        Self { temperature: 0.2, sinkhorn: SinkhornConfig::reference() }
    }
}

/// `C[k] ← C[k] / max(‖C[k]‖₂, 1e-12)`, detached: what the reference writes back into the
/// prototype parameter at the start of every forward pass. `[K, D] -> [K, D]`
pub fn normalize_prototypes<B: Backend>(prototypes: Tensor<B, 2>) -> Tensor<B, 2> {
    l2_normalize(prototypes.detach())
}

// ANCHOR: cpa
impl CpaConfig {
    /// `L_CPA` from L2-normalised global embeddings `v`, `t` (`[N, D]`) and normalised
    /// prototypes (`[K, D]`), with Sinkhorn sums reduced by `reduce`.
    pub fn forward<B: Backend>(
        &self,
        v: Tensor<B, 2>,
        t: Tensor<B, 2>,
        prototypes: Tensor<B, 2>,
        reduce: &dyn AllReduce<B>,
    ) -> Tensor<B, 1> {
        let n = v.dims()[0] as f32;
        let protos_t = prototypes.transpose(); // [D, K]
        let s_img = v.matmul(protos_t.clone()); // [N, K]
        let s_txt = t.matmul(protos_t); // [N, K]

        let log_p_img = softmax(s_img.clone().div_scalar(self.temperature), 1).log();
        let log_p_txt = softmax(s_txt.clone().div_scalar(self.temperature), 1).log();
        let q_img = self.sinkhorn.codes(s_img, reduce); // [N, K], no gradient
        let q_txt = self.sinkhorn.codes(s_txt, reduce);

        // Swapped prediction: each modality's codes supervise the other's prediction.
        let i2t = (q_img * log_p_txt).sum().div_scalar(-n);
        let t2i = (q_txt * log_p_img).sum().div_scalar(-n);
        (i2t + t2i).div_scalar(2.0)
    }
}
// ANCHOR_END: cpa

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff, cpu_device};
    use crate::loss::LocalReduce;
    use crate::parity::HAND_WORKED;

    /// The book's worked CPA example (B = 2, K = 3, d = 2), fp64 values.
    #[test]
    fn worked_example() {
        let dev = cpu_device();
        let v = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
        let t = Tensor::<Cpu, 2>::from_floats([[0.8, 0.6], [0.6, 0.8]], &dev);
        let c = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], &dev);
        let loss: f32 = CpaConfig::reference().forward(v, t, c, &LocalReduce).into_scalar();
        assert!((loss - 1.869_313_2).abs() < HAND_WORKED as f32, "{loss}");
    }

    #[test]
    fn prototypes_are_renormalised_without_gradient() {
        let dev = cpu_device();
        let c = Tensor::<CpuAutodiff, 2>::from_floats([[3.0, 4.0], [0.0, 2.0]], &dev).require_grad();
        let n = normalize_prototypes(c);
        assert!(!n.is_require_grad());
        let v = n.into_data().to_vec::<f32>().unwrap();
        assert_eq!(v, vec![0.6, 0.8, 0.0, 1.0]);
    }

    /// Gradients reach the prototypes only through the predictions, never through the codes.
    #[test]
    fn codes_carry_no_gradient() {
        let dev = cpu_device();
        let v = Tensor::<CpuAutodiff, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev).require_grad();
        let t = Tensor::<CpuAutodiff, 2>::from_floats([[0.8, 0.6], [0.6, 0.8]], &dev);
        let c = Tensor::<CpuAutodiff, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], &dev);
        let cfg = CpaConfig::reference();
        let codes = cfg.sinkhorn.codes(v.clone().matmul(c.clone().transpose()), &LocalReduce);
        assert!(!codes.is_require_grad());
        let loss = cfg.forward(v.clone(), t, c, &LocalReduce);
        let grads = loss.backward();
        assert!(v.grad(&grads).is_some());
    }
}
