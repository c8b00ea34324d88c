//! The segmentation loss of MGCA's segmentation evaluation: `L = α·FL − ln(DC)` with α = 10.
//!
//! Focal term (γ = 2), per pixel with logit `z` and target `y` (fractional at mask edges):
//! `ℓ = exp(γ · log σ(−z(2y − 1))) · [z − z·y + m + ln(e^{−m} + e^{−z−m})]`, `m = max(−z, 0)`
//! (the bracket is binary cross-entropy with logits in its stable form; the prefactor is
//! `(1 − p_t)^γ`), and `FL` is the mean over all `B·H·W` pixels. Soft Dice over the whole batch:
//! `DC = (2·Σ σ(z)·y + s) / (Σ σ(z) + Σ y + s)` with `s = 1`.
//!
//! Book: "Segmentation" (the loss). Reference: `mgca/utils/segmentation_loss.py`, `MixedLoss`,
//! `FocalLoss` and `dice_loss`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. The Dice term is computed over the whole batch (not per image), as
//! the reference's `dice_loss` flattens the batch.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// The loss's constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentationLossConfig {
    /// α, the focal term's weight (10).
    pub alpha: f64,
    /// γ, the focal exponent (2).
    pub gamma: f64,
    /// s, the soft Dice's smoothing (1).
    pub smooth: f64,
}

impl SegmentationLossConfig {
    /// The reference's values: α = 10, γ = 2, s = 1.
    pub fn reference() -> Self {
        Self { alpha: 10.0, gamma: 2.0, smooth: 1.0 }
    }
}

/// The loss and its two terms, each `[1]` and differentiable with respect to the logits.
#[derive(Debug, Clone)]
pub struct SegmentationLoss<B: Backend> {
    /// `L = α·FL − ln(DC)`.
    pub loss: Tensor<B, 1>,
    /// FL, the mean focal term.
    pub focal: Tensor<B, 1>,
    /// DC, the soft Dice coefficient of the batch.
    pub dice_coef: Tensor<B, 1>,
}

/// `log σ(x) = min(x, 0) − ln(1 + e^{−|x|})`, stable for any `x` (PyTorch's `logsigmoid`).
fn log_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_max(0.0) - x.abs().neg().exp().log1p()
}

// ANCHOR: loss
/// The loss of logits against targets, both `[B, H, W]`.
pub fn segmentation_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 3>,
    config: &SegmentationLossConfig,
) -> SegmentationLoss<B> {
    assert_eq!(logits.dims(), targets.dims(), "logits and targets of one shape");
    let (z, y) = (logits, targets);
    // Binary cross-entropy with logits, the reference's stable form.
    let m = z.clone().neg().clamp_min(0.0);
    let bce =
        z.clone() - z.clone() * y.clone() + m.clone() + (m.clone().neg().exp() + (z.clone().neg() - m).exp()).log();
    // (1 − p_t)^γ as exp(γ · log σ(−z(2y − 1))).
    let modulating = log_sigmoid(z.clone().neg() * (y.clone() * 2.0 - 1.0)).mul_scalar(config.gamma).exp();
    let focal = (modulating * bce).mean(); // [1]
    let p = sigmoid(z);
    let intersection = (p.clone() * y.clone()).sum();
    let dice_coef =
        (intersection.mul_scalar(2.0).add_scalar(config.smooth)) / (p.sum() + y.sum()).add_scalar(config.smooth);
    let loss = focal.clone().mul_scalar(config.alpha) - dice_coef.clone().log();
    SegmentationLoss { loss, focal, dice_coef }
}
// ANCHOR_END: loss

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use burn::tensor::TensorData;

    fn tensor(values: &[f32], shape: [usize; 3]) -> Tensor<Cpu, 3> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), &cpu_device())
    }

    /// Hand-computed on two pixels: z = 0 (p = ½) against y = 1, and z = 2 against y = 0.
    #[test]
    fn two_pixels_by_hand() {
        let z = tensor(&[0.0, 2.0], [1, 1, 2]);
        let y = tensor(&[1.0, 0.0], [1, 1, 2]);
        let out = segmentation_loss(z, y, &SegmentationLossConfig::reference());
        let scalar = |t: Tensor<Cpu, 1>| t.into_scalar() as f64;
        // Pixel 1: BCE ln 2, (1 − p_t)² = ¼. Pixel 2: BCE = 2 + ln(1 + e^{−2}), 1 − p_t = σ(2).
        let s2 = 1.0 / (1.0 + (-2f64).exp());
        let fl = (0.25 * 2f64.ln() + s2 * s2 * (2.0 + (1.0 + (-2f64).exp()).ln())) / 2.0;
        let dc = (2.0 * 0.5 + 1.0) / (0.5 + s2 + 1.0 + 1.0);
        let (focal, dice, loss) = (scalar(out.focal), scalar(out.dice_coef), scalar(out.loss));
        assert!((focal - fl).abs() < 1e-6, "{focal} vs {fl}");
        assert!((dice - dc).abs() < 1e-6, "{dice} vs {dc}");
        assert!((loss - (10.0 * fl - dc.ln())).abs() < 1e-5, "{loss}");
    }

    /// Large logits stay finite (the stable forms), and a perfect prediction's loss is small.
    #[test]
    fn extreme_logits_are_finite() {
        let z = tensor(&[80.0, -80.0, 80.0, -80.0], [1, 2, 2]);
        let y = tensor(&[1.0, 0.0, 1.0, 0.0], [1, 2, 2]);
        let out = segmentation_loss(z, y, &SegmentationLossConfig::reference());
        let loss = out.loss.into_scalar();
        assert!(loss.is_finite() && loss.abs() < 0.3, "{loss}");
    }
}
