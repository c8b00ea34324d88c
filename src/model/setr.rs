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
use crate::weights::{WeightError, WeightReader};

/// The decoder's sizes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetrConfig {
    /// D, the ViT's width (768).
    pub hidden: usize,
    /// The four stages' widths (512, 256, 128, 64).
    pub features: [usize; 4],
}

impl SetrConfig {
    /// The reference's decoder on ViT-B/16.
    pub fn vit_base() -> Self {
        Self { hidden: 768, features: [512, 256, 128, 64] }
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
            final_out: conv(self.features[3], 1),
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
            let y = relu(stage.bn.forward(stage.conv.forward(x), mode));
            let [_, _, h, w] = y.dims();
            let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(true);
            x = interpolate(y, [2 * h, 2 * w], options); // [B, f, 2h, 2w]
        }
        self.final_out.forward(x).squeeze_dim(1) // [B, 1, H, W] → [B, H, W]
    }
    // ANCHOR_END: forward

    /// Load the reference's names (`encoder_2d.final_dense.*`, `decoder_2d.decoder_{1-4}.{0,1}.*`,
    /// `decoder_2d.final_out.*`); the sizes are read from the tensors.
    pub fn load(weights: &mut WeightReader, device: &B::Device) -> Result<(Self, SetrConfig), WeightError> {
        let hidden = weights.shape("encoder_2d.final_dense.weight")?[0];
        let mut features = [0; 4];
        for (k, f) in features.iter_mut().enumerate() {
            *f = weights.shape(&format!("decoder_2d.decoder_{}.0.weight", k + 1))?[0];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::Tolerance;
    use crate::tensor_file::TensorFile;
    use burn::tensor::TensorData;

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
        assert_eq!(config, SetrConfig { hidden: 64, features: [32, 16, 8, 4] });
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
