//! CTA — token-level cross-modal alignment.
//!
//! Word side: `α = softmax_m(Wd·Pᵀ / τ₂)`, `Cw = normalize(α·P)`, `Sw = Wd·Cwᵀ / τ₂`,
//! `L_word = ½ [ (1/N) Σ_n Σ_i ω_ni CE(Sw[n,i,:], i) + (1/N) Σ_n Σ_k ω_nk CE(Sw[n,:,k], k) ]`.
//! Patch side (bidirectional): `β = softmax_i(mask_pad(P·Wdᵀ) / τ₂)`, `Cp = β·Wd` (re-normalised
//! for ResNet only), `Sp = P·Cpᵀ / τ₂`, the same two-way CE weighted by π; `L_CTA = L_patch + L_word`.
//! Weights ω and π are the encoders' [CLS] attention, clipped to their 10 %–90 % quantiles and
//! renormalised (ResNet patches: uniform).
//!
//! Book: "CTA: token-level alignment" (with the worked examples). Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA.forward` (the local-alignment block), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** faithful mode reproduces four reference quirks, each an option here:
//! padded word slots stay in `Sw`/`Sp` as negatives (only their own rows get weight 0, always);
//! the ViT patch-side context is not re-normalised (`normalize_patch_context`); the two sides
//! are summed (`side_reduction`); weights are quantile-clipped (`word_weight_clip`,
//! `patch_weight_clip`). The attention is parameter-free, as in the published run.

use burn::tensor::{Bool, Tensor, TensorData, activation::softmax, backend::Backend};
use serde::{Deserialize, Serialize};

use super::cta_cpu::CtaKernel;
use super::{Reduction, l2_normalize, token_cross_entropy};
use crate::backend::{GradientLink, gradient_link, take_values};

/// A pair of quantile levels `(lo, hi)` to clip token weights to (reference: 0.1 and 0.9).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileRange {
    /// Lower quantile level.
    pub lo: f32,
    /// Upper quantile level.
    pub hi: f32,
}

/// Where the image-token weights π come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchWeighting {
    /// The last ViT block's [CLS]→patch attention, averaged over heads (ViT).
    ClsAttention,
    /// `1 / M` for every token (ResNet).
    Uniform,
}

/// Configuration of CTA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CtaConfig {
    /// τ₂, the token-level temperature, also the attention softmax temperature (reference
    /// 0.1; the paper lists 0.07).
    pub temperature: f32,
    /// Whether the patch side (each patch attends to the words) is on (reference: true).
    pub bidirectional: bool,
    /// How the word side and the patch side are combined (reference: sum; paper: mean).
    pub side_reduction: Reduction,
    /// Quantile clipping of the word weights ω, over each sample's non-zero weights
    /// (reference: 10 %–90 %; `None` uses the raw attention, renormalised).
    pub word_weight_clip: Option<QuantileRange>,
    /// Where the patch weights π come from (reference: ViT attention, ResNet uniform).
    pub patch_weighting: PatchWeighting,
    /// Quantile clipping of attention-derived patch weights, over all patches (reference:
    /// 10 %–90 %).
    pub patch_weight_clip: Option<QuantileRange>,
    /// Whether the attended word context `Cp` of each patch is L2-normalised (reference: true
    /// for ResNet, **false** for ViT; paper: true).
    pub normalize_patch_context: bool,
}

/// The reference's quantile levels.
pub const REFERENCE_CLIP: QuantileRange = QuantileRange { lo: 0.1, hi: 0.9 };

impl CtaConfig {
    /// The reference's CTA for a ViT image encoder.
    pub fn reference_vit() -> Self {
        Self {
            temperature: 0.1,
            bidirectional: true,
            side_reduction: Reduction::Sum,
            word_weight_clip: Some(REFERENCE_CLIP),
            patch_weighting: PatchWeighting::ClsAttention,
            patch_weight_clip: Some(REFERENCE_CLIP),
            normalize_patch_context: false,
        }
    }

    /// The reference's CTA for a ResNet image encoder.
    pub fn reference_resnet() -> Self {
        Self { patch_weighting: PatchWeighting::Uniform, normalize_patch_context: true, ..Self::reference_vit() }
    }

    /// CTA as the paper describes it: τ₂ = 0.07, sides averaged,
    /// raw attention weights, every attended context normalised.
    pub fn paper(patch_weighting: PatchWeighting) -> Self {
        Self {
            temperature: 0.07,
            bidirectional: true,
            side_reduction: Reduction::Mean,
            word_weight_clip: None,
            patch_weighting,
            patch_weight_clip: None,
            normalize_patch_context: true,
        }
    }
}

// ANCHOR: weights
impl CtaConfig {
    /// Word weights ω from the merged-word attention (`[N, W]`, no gradient): over each
    /// sample's non-zero entries, clip to the configured quantiles, then divide by the sum.
    pub fn word_weights<B: Backend>(&self, word_attn: Tensor<B, 2>) -> Tensor<B, 2> {
        let w = word_attn.detach();
        let valid = w.clone().not_equal_elem(0.0); // N_b, an exact zero test
        normalized_token_weights(w, valid, self.word_weight_clip)
    }

    /// Patch weights π (`[N, M]`, no gradient): the head-averaged [CLS] attention, clipped over
    /// all patches and renormalised; or uniform.
    pub fn patch_weights<B: Backend>(
        &self,
        patch_attn: Option<Tensor<B, 3>>, // [N, H, M]
        [n, m]: [usize; 2],
        device: &B::Device,
    ) -> Tensor<B, 2> {
        match (self.patch_weighting, patch_attn) {
            (PatchWeighting::Uniform, _) => Tensor::full([n, m], 1.0 / m as f32, device),
            (PatchWeighting::ClsAttention, Some(attn)) => {
                let a = attn.detach().mean_dim(1).squeeze_dim::<2>(1); // [N, H, M] -> [N, M]
                let valid = Tensor::<B, 2, Bool>::full([n, m], true, &a.device());
                normalized_token_weights(a, valid, self.patch_weight_clip)
            }
            (PatchWeighting::ClsAttention, None) => {
                panic!("CTA is configured with attention patch weights but no attention was given")
            }
        }
    }
}

/// Clip each row's valid entries to its `(lo, hi)` quantiles (if any), zero the rest, and
/// divide by the row sum. `[N, T] -> [N, T]`. A row without valid entries gets all zeros.
pub fn normalized_token_weights<B: Backend>(
    w: Tensor<B, 2>,           // [N, T]
    valid: Tensor<B, 2, Bool>, // [N, T]
    clip: Option<QuantileRange>,
) -> Tensor<B, 2> {
    let invalid = valid.bool_not();
    let clipped = match clip {
        Some(QuantileRange { lo, hi }) => {
            let (lo, hi) = masked_quantiles(w.clone(), invalid.clone(), [lo, hi]);
            // Element-wise clamp to per-row bounds.
            w.clone().max_pair(lo).min_pair(hi)
        }
        None => w,
    };
    let clipped = clipped.mask_fill(invalid, 0.0);
    let sum = clipped.clone().sum_dim(1).clamp_min(f32::MIN_POSITIVE); // [N, 1]
    clipped / sum
}

/// Linear-interpolation quantiles (PyTorch's `torch.quantile`, default `linear`) of each row's
/// entries where `invalid` is false. Returns the two levels' values broadcast to `[N, T]`.
///
/// Invalid entries are pushed to `+inf`, so after an ascending sort the `n_b` valid values sit
/// in positions `0..n_b`; rank `r = q·(n_b − 1)` is computed in f32 as PyTorch does, and the
/// value is `lerp(x_⌊r⌋, x_⌈r⌉, r − ⌊r⌋)` with PyTorch's two-sided lerp formula.
pub fn masked_quantiles<B: Backend>(
    w: Tensor<B, 2>,             // [N, T]
    invalid: Tensor<B, 2, Bool>, // [N, T]
    levels: [f32; 2],
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [n, t] = w.dims();
    let sorted = w.mask_fill(invalid.clone(), f32::INFINITY).sort(1); // [N, T]
    let count = invalid.bool_not().int().sum_dim(1); // [N, 1]
    let last = count.sub_scalar(1).clamp_min(0).float(); // n_b - 1, [N, 1]
    let at = |q: f32| {
        let rank = last.clone().mul_scalar(q); // [N, 1]
        let below = rank.clone().floor();
        let frac = rank.clone() - below.clone();
        let above = rank.ceil();
        let x0 = sorted.clone().gather(1, below.int()); // [N, 1]
        let x1 = sorted.clone().gather(1, above.int()); // [N, 1]
        let small = frac.clone().lower_elem(0.5);
        let from_below = x0.clone() + frac.clone() * (x1.clone() - x0.clone());
        let from_above = x1.clone() - (x1 - x0) * (frac.neg().add_scalar(1.0));
        let value: Tensor<B, 2> = from_above.mask_where(small, from_below);
        value.expand([n, t])
    };
    (at(levels[0]), at(levels[1]))
}
// ANCHOR_END: weights

// ANCHOR: cta
impl CtaConfig {
    /// `L_CTA` from L2-normalised patch and word embeddings and constant weights.
    pub fn forward<B: Backend>(
        &self,
        patches: Tensor<B, 3>,        // P [N, M, D]
        words: Tensor<B, 3>,          // Wd [N, W, D]
        word_pad: Tensor<B, 2, Bool>, // [N, W]
        word_weights: Tensor<B, 2>,   // ω [N, W]
        patch_weights: Tensor<B, 2>,  // π [N, M]
    ) -> Tensor<B, 1> {
        let tau = self.temperature;
        let patches_t = patches.clone().swap_dims(1, 2); // [N, D, M]
        let words_t = words.clone().swap_dims(1, 2); // [N, D, W]

        // Word side: each word attends to its own image's patches; nothing is masked.
        let alpha = softmax(words.clone().matmul(patches_t.clone()).div_scalar(tau), 2); // [N, W, M]
        let word_ctx = l2_normalize(alpha.matmul(patches.clone())); // Cw [N, W, D]
        let s_word = words.clone().matmul(word_ctx.swap_dims(1, 2)).div_scalar(tau); // [N, W, W]
        let (a, b) = token_cross_entropy(s_word, word_weights);
        let word_loss = (a + b).div_scalar(2.0);
        if !self.bidirectional {
            return word_loss;
        }

        // Patch side: each patch attends to its own report's words; padded words are masked.
        let [n, m, _] = patches.dims();
        let w = words.dims()[1];
        let pad = word_pad.unsqueeze_dim::<3>(1).expand([n, m, w]); // [N, M, W]
        let logits = patches.clone().matmul(words_t).mask_fill(pad, f32::NEG_INFINITY);
        let beta = softmax(logits.div_scalar(tau), 2); // [N, M, W]
        let mut patch_ctx = beta.matmul(words); // Cp [N, M, D]
        if self.normalize_patch_context {
            patch_ctx = l2_normalize(patch_ctx);
        }
        let s_patch = patches.matmul(patch_ctx.swap_dims(1, 2)).div_scalar(tau); // [N, M, M]
        let (a, b) = token_cross_entropy(s_patch, patch_weights);
        let patch_loss = (a + b).div_scalar(2.0);

        self.side_reduction.combine(patch_loss, word_loss)
    }
}
// ANCHOR_END: cta

// ANCHOR: fused
impl CtaConfig {
    /// `L_CTA` computed by the fused CPU kernel ([`super::cta_cpu`]) from the **raw** local
    /// embeddings (the kernel normalises them itself); otherwise as [`CtaConfig::forward`]. The
    /// kernel returns the loss and its gradients with respect to its inputs; they enter the
    /// autodiff graph through [`gradient_link`]. Runs on the host: meant for CPU backends, where
    /// the embeddings' values are taken without a copy.
    pub fn forward_fused<B: GradientLink>(
        &self,
        patches: Tensor<B, 3>,        // P̂ [N, M, D], not normalised
        words: Tensor<B, 3>,          // Ŵ [N, W, D], not normalised
        word_pad: Tensor<B, 2, Bool>, // [N, W]
        word_weights: Tensor<B, 2>,   // ω [N, W]
        patch_weights: Tensor<B, 2>,  // π [N, M]
    ) -> Tensor<B, 1> {
        let ([n, m, d], w) = (patches.dims(), words.dims()[1]);
        let floats = |t: TensorData| t.convert::<f32>().into_vec::<f32>().expect("f32 tensor");
        let side = match self.side_reduction {
            Reduction::Sum => 1.0,
            Reduction::Mean => 0.5,
        };
        let kernel = CtaKernel {
            temperature: self.temperature,
            bidirectional: self.bidirectional,
            normalize_patch_context: self.normalize_patch_context,
            side_weights: if self.bidirectional { (side, side) } else { (1.0, 0.0) },
        };
        let device = patches.device();
        let (patch_values, patch_handle) = take_values(patches);
        let (word_values, word_handle) = take_values(words);
        let r = kernel.run(
            [n, m, w, d],
            &patch_values,
            &word_values,
            &word_pad.into_data().into_vec::<bool>().expect("bool tensor"),
            &floats(word_weights.into_data()),
            &floats(patch_weights.into_data()),
        );
        let loss = if self.bidirectional { side as f64 * (r.word_loss + r.patch_loss) } else { r.word_loss };
        let grad_p = Tensor::<B, 3>::from_data(TensorData::new(r.grad_patches, [n, m, d]), &device);
        let grad_w = Tensor::<B, 3>::from_data(TensorData::new(r.grad_words, [n, w, d]), &device);
        gradient_link(patch_handle, grad_p)
            + gradient_link(word_handle, grad_w)
            + Tensor::from_floats([loss as f32], &device)
    }
}
// ANCHOR_END: fused

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{HAND_WORKED, HAND_WORKED_WEIGHTS};

    fn vec2(t: Tensor<Cpu, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn assert_all_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() <= tol, "got {got:?}, want {want:?}");
        }
    }

    /// The book's worked example: quantile clipping of one sample's word weights.
    #[test]
    fn word_weights_worked_example() {
        let dev = cpu_device();
        let w = Tensor::<Cpu, 2>::from_floats([[0.5, 0.1, 0.0, 0.3, 0.2, 0.0]], &dev);
        let cfg = CtaConfig::reference_vit();
        let omega = vec2(cfg.word_weights(w));
        assert_all_close(&omega, &[0.411_215, 0.121_495, 0.0, 0.280_374, 0.186_916, 0.0], HAND_WORKED_WEIGHTS as f32);
    }

    /// The book's word-weight pipeline end to end: the merge example's weights, end to end (and several rows at once,
    /// with different numbers of valid entries).
    #[test]
    fn word_weights_rows_are_independent() {
        let dev = cpu_device();
        let w = Tensor::<Cpu, 2>::from_floats(
            [[0.20, 0.20, 0.30, 0.0, 0.0, 0.0], [0.5, 0.1, 0.0, 0.3, 0.2, 0.0], [0.0, 0.7, 0.0, 0.0, 0.0, 0.0]],
            &dev,
        );
        let omega = vec2(CtaConfig::reference_vit().word_weights(w));
        assert_all_close(&omega[..6], &[0.294_118, 0.294_118, 0.411_765, 0.0, 0.0, 0.0], HAND_WORKED_WEIGHTS as f32);
        assert_all_close(
            &omega[6..12],
            &[0.411_215, 0.121_495, 0.0, 0.280_374, 0.186_916, 0.0],
            HAND_WORKED_WEIGHTS as f32,
        );
        // One valid entry: both quantiles equal it, and it gets all the weight.
        assert_all_close(&omega[12..], &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], HAND_WORKED_WEIGHTS as f32);
    }

    #[test]
    fn a_row_without_words_gets_no_weight_and_no_nan() {
        let dev = cpu_device();
        let w = Tensor::<Cpu, 2>::from_floats([[0.0, 0.0, 0.0]], &dev);
        let omega = vec2(CtaConfig::reference_vit().word_weights(w));
        assert_eq!(omega, vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn quantiles_interpolate_linearly() {
        let dev = cpu_device();
        // Unsorted, with one invalid slot (value 9 must be ignored).
        let w = Tensor::<Cpu, 2>::from_floats([[4.0, 9.0, 1.0, 3.0, 2.0]], &dev);
        let invalid = Tensor::<Cpu, 2, Bool>::from_bool([[false, true, false, false, false]].into(), &dev);
        let (lo, hi) = masked_quantiles(w, invalid, [0.25, 0.9]);
        // Sorted valid [1, 2, 3, 4]: rank 0.75 -> 1.75; rank 2.7 -> 3.7.
        assert!((vec2(lo)[0] - 1.75).abs() < HAND_WORKED_WEIGHTS as f32);
        assert!((vec2(hi)[0] - 3.7).abs() < HAND_WORKED_WEIGHTS as f32);
    }

    #[test]
    fn uniform_patch_weights_for_resnet() {
        let pi = vec2(CtaConfig::reference_resnet().patch_weights::<Cpu>(None, [2, 4], &cpu_device()));
        assert_eq!(pi, vec![0.25; 8]);
    }

    /// The book's worked word-side example on one sample with a padding-like third slot, which
    /// still acts as a negative although its own weight is 0.
    #[test]
    fn word_side_worked_example() {
        let dev = cpu_device();
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let words = Tensor::<Cpu, 3>::from_floats([[[1.0, 0.0], [0.0, 1.0], [s, s]]], &dev);
        let patches = Tensor::<Cpu, 3>::from_floats([[[0.8, 0.6], [0.6, 0.8]]], &dev);
        let omega = Tensor::<Cpu, 2>::from_floats([[0.6, 0.4, 0.0]], &dev);
        let pad = Tensor::<Cpu, 2, Bool>::from_bool([[false, false, true]].into(), &dev);
        let pi = Tensor::<Cpu, 2>::from_floats([[0.5, 0.5]], &dev);
        let cfg = CtaConfig { bidirectional: false, ..CtaConfig::reference_vit() };
        let loss: f32 = cfg.forward(patches, words, pad, omega, pi).into_scalar();
        assert!((loss - 1.405_754).abs() < HAND_WORKED as f32, "{loss}");
    }
}
