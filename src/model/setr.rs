//! The SETR-style decoder of MGCA's segmentation evaluation on the frozen ViT-B/16.
//!
//! `h = W·t + b` on each of the 196 patch tokens `t` of the final-LayerNorm output (the class
//! token dropped), rearranged to a `[B, 768, 14, 14]` map (token `r·14 + c` at row `r`, column
//! `c`); four stages `x ← up₂(ReLU(BN(Conv3×3(x))))` (convolutions with bias, bilinear ×2 with
//! aligned corners) with widths 512, 256, 128, 64 (14 → 224 px); a final `Conv3×3(64 → 1)` with
//! bias → logits `[B, 224, 224]`. PyTorch's default initialisation (burn's defaults are the same
//! bounds).
//!
//! Book: "Segmentation" (the ViT decoder). Reference:
//! `mgca/models/backbones/transformer_seg.py`, `SETRModel`, `Encoder2D` (`final_dense`, the
//! `rearrange`) and `Decoder2D`, and `mgca/models/mgca/mgca_segmenter.py`, `cli()`
//! (`--base_model vit`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. (`Encoder2D` also builds a generic transformer, replaced by the MGCA
//! ViT before use; it is not built here.)

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::batchnorm::{BatchNorm, Mode};
use super::vit::Vit;
use crate::kernels::conv2d::conv2d;
use crate::weights::{WeightError, WeightReader};

/// The decoder's sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetrConfig {
    /// D, the ViT's width (768).
    pub hidden: usize,
    /// The stages' widths (512, 256, 128, 64): each doubles the resolution, so a patch of side
    /// p needs log₂ p stages (ViT-B/16: four).
    pub features: Vec<usize>,
}

impl SetrConfig {
    /// The reference's decoder on ViT-B/16.
    pub fn vit_base() -> Self {
        Self { hidden: 768, features: vec![512, 256, 128, 64] }
    }

    /// A decoder for a ViT of width `hidden` and patch side `patch` (a power of two): the
    /// reference's widths, the last log₂ `patch` of them, each divided by `shrink` (1: the
    /// reference's; the smoke tier's tiny ViT uses a narrower decoder).
    pub fn for_vit(hidden: usize, patch: usize, shrink: usize) -> Result<Self, String> {
        if !patch.is_power_of_two() || !(2..=16).contains(&patch) {
            return Err(format!(
                "the SETR decoder doubles the resolution per stage: patch side {patch} is not 2, 4, 8 or 16"
            ));
        }
        let stages = patch.trailing_zeros() as usize;
        let widths = [512, 256, 128, 64];
        let features = widths[4 - stages..].iter().map(|w| (w / shrink.max(1)).max(1)).collect();
        Ok(Self { hidden, features })
    }

    /// A fresh decoder (PyTorch's default initialisation).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SetrDecoder<B> {
        let conv = |i: usize, o: usize| {
            Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
        };
        let mut input = self.hidden;
        let stages = self
            .features
            .iter()
            .map(|&f| {
                let stage = SetrStage { conv: conv(input, f), bn: BatchNorm::new(f, true, device) };
                input = f;
                stage
            })
            .collect();
        SetrDecoder {
            final_dense: LinearConfig::new(self.hidden, self.hidden).init(device),
            stages,
            final_out: conv(*self.features.last().expect("at least one stage"), 1),
        }
    }
}

/// `up₂(ReLU(BN(Conv3×3(x))))`.
#[derive(Module, Debug)]
pub struct SetrStage<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

/// The trainable part of the ViT segmenter.
#[derive(Module, Debug)]
pub struct SetrDecoder<B: Backend> {
    final_dense: Linear<B>,
    stages: Vec<SetrStage<B>>,
    final_out: Conv2d<B>,
}

// ANCHOR: forward
impl<B: Backend> SetrDecoder<B> {
    /// Logits `[B, 16·G, 16·G]` from the ViT's final tokens `[B, 1 + G², D]` (class token first).
    pub fn forward(&self, tokens: Tensor<B, 3>, mode: Mode) -> Tensor<B, 3> {
        let [b, n, d] = tokens.dims();
        let side = ((n - 1) as f64).sqrt().round() as usize;
        assert_eq!(side * side, n - 1, "a square grid of patch tokens");
        let x = self.final_dense.forward(tokens.narrow(1, 1, n - 1)); // [B, G², D]
        let mut x = x.reshape([b, side, side, d]).permute([0, 3, 1, 2]); // [B, D, G, G]
        for stage in &self.stages {
            let y = relu(stage.bn.forward(conv2d(&stage.conv, x), mode));
            let [_, _, h, w] = y.dims();
            let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(true);
            x = interpolate(y, [2 * h, 2 * w], options); // [B, f, 2h, 2w]
        }
        conv2d(&self.final_out, x).squeeze_dim(1) // [B, 1, H, W] → [B, H, W]
    }
    // ANCHOR_END: forward

    /// Load the reference's names (`encoder_2d.final_dense.*`, `decoder_2d.decoder_{1-4}.{0,1}.*`,
    /// `decoder_2d.final_out.*`); the sizes are read from the tensors.
    pub fn load(weights: &mut WeightReader, device: &B::Device) -> Result<(Self, SetrConfig), WeightError> {
        let hidden = weights.shape("encoder_2d.final_dense.weight")?[0];
        let mut features = Vec::new();
        while weights.contains(&format!("decoder_2d.decoder_{}.0.weight", features.len() + 1)) {
            features.push(weights.shape(&format!("decoder_2d.decoder_{}.0.weight", features.len() + 1))?[0]);
        }
        if features.is_empty() {
            return Err(WeightError::Missing("decoder_2d.decoder_1.0.weight".into()));
        }
        let config = SetrConfig { hidden, features };
        let mut net = config.init::<B>(device);
        weights.linear(device, "encoder_2d.final_dense", hidden, hidden, &mut net.final_dense)?;
        for (k, stage) in net.stages.iter_mut().enumerate() {
            let prefix = format!("decoder_2d.decoder_{}", k + 1);
            let shape = stage.conv.weight.val().dims();
            stage.conv.weight = weights.param(device, &format!("{prefix}.0.weight"), &shape)?;
            stage.conv.bias = Some(weights.param(device, &format!("{prefix}.0.bias"), &[shape[0]])?);
            stage.bn = BatchNorm::load(&format!("{prefix}.1"), shape[0], true, weights, device)?;
        }
        let shape = net.final_out.weight.val().dims();
        net.final_out.weight = weights.param(device, "decoder_2d.final_out.weight", &shape)?;
        net.final_out.bias = Some(weights.param(device, "decoder_2d.final_out.bias", &[shape[0]])?);
        Ok((net, config))
    }
}

/// The ViT segmenter: the frozen ViT's final tokens through the trainable decoder.
#[derive(Module, Debug)]
pub struct SetrModel<B: Backend> {
    pub encoder: Vit<B>,
    pub decoder: SetrDecoder<B>,
}

impl<B: Backend> SetrModel<B> {
    /// A fresh decoder sized for `encoder` (widths divided by `shrink`, see
    /// [`SetrConfig::for_vit`]) on the frozen `encoder`.
    pub fn new(encoder: Vit<B>, shrink: usize, device: &B::Device) -> Result<Self, String> {
        let [dim, _, patch, _] = encoder.patch_weight().dims();
        let config = SetrConfig::for_vit(dim, patch, shrink)?;
        Ok(Self { encoder: encoder.no_grad(), decoder: config.init(device) })
    }

    /// Logits `[N, S, S]` of images `[N, 3, S, S]` (S the ViT's input side); the ViT's tokens
    /// are detached (no gradient reaches the frozen encoder), the decoder's BatchNorm runs in
    /// `mode`.
    pub fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 3> {
        let tokens = self.encoder.forward(images).tokens.detach(); // [N, 1 + G², D]
        self.decoder.forward(tokens, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::Tolerance;
    use crate::tensor_file::TensorFile;
    use burn::tensor::TensorData;

    /// On a tiny ViT (32 px, patches of 8: a 4 × 4 grid) the decoder has three stages and
    /// returns logits of the input's size; a step's gradients reach the decoder only; a patch
    /// side that is not a power of two is refused.
    #[test]
    fn the_segmenter_on_a_small_vit() {
        use burn::backend::Autodiff;
        type A = Autodiff<Cpu>;
        let device = cpu_device();
        let vit = crate::config::VitConfig { image_size: 32, patch_size: 8, dim: 16, depth: 1, heads: 2, mlp_dim: 32 }
            .init::<A>(&device);
        let model = SetrModel::new(vit, 16, &device).unwrap();
        assert_eq!(model.decoder.stages.len(), 3);
        let images = Tensor::<A, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let logits = model.forward(images, Mode::Train); // [2, 32, 32]
        assert_eq!(logits.dims(), [2, 32, 32]);
        let grads = logits.sum().backward();
        assert!(model.decoder.final_out.weight.grad(&grads).is_some());
        assert!(model.encoder.patch_weight().grad(&grads).is_none(), "the ViT stays frozen");
        assert!(SetrConfig::for_vit(768, 6, 1).unwrap_err().contains("patch side 6"));
        assert_eq!(SetrConfig::for_vit(768, 16, 1).unwrap(), SetrConfig::vit_base());
    }

    /// Agreement with the reference's `SETRModel` decoder: 1e-4 absolute, as the U-Net's.
    const SETR_DECODER: Tolerance = Tolerance { abs: 1e-4, rel: 0.0 };

    /// The reference's `SETRModel` (hidden 64, features 32/16/8/4) on fixed tokens, with the
    /// fixture's formula weights: logits in training mode, then in evaluation mode with the
    /// running statistics the training pass left, within 1e-4; every key taken.
    #[test]
    fn equals_the_reference_setr_decoder() {
        let case = TensorFile::read(&crate::testing::golden("reference/setr/setr_case.safetensors")).unwrap();
        let mut weights = WeightReader::new(crate::testing::formula_weights(&case.metadata["keys"]));
        let device = cpu_device();
        let (net, config) = SetrDecoder::<Cpu>::load(&mut weights, &device).unwrap();
        assert_eq!(config, SetrConfig { hidden: 64, features: vec![32, 16, 8, 4] });
        assert_eq!(weights.unused(), Vec::<String>::new());
        let tokens = &case.tensors["setr.tokens"];
        let x = Tensor::<Cpu, 3>::from_data(TensorData::new(tokens.values.clone(), [1, 197, 64]), &device);
        for (mode, name) in [(Mode::Train, "setr.logits_train"), (Mode::Eval, "setr.logits_eval")] {
            let ours = net.forward(x.clone(), mode).into_data().to_vec::<f32>().unwrap();
            let want = &case.tensors[name];
            assert_eq!(want.shape, [1, 224, 224]);
            let worst = ours.iter().zip(&want.values).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
            eprintln!("{name}: max |Δ| {worst:.2e}");
            assert!(
                ours.iter().zip(&want.values).all(|(a, b)| SETR_DECODER.allows(*a as f64, *b as f64)),
                "{name}: max |Δ| {worst:e}"
            );
        }
    }
}
