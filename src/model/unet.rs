//! The U-Net of MGCA's segmentation evaluation: segmentation-models-pytorch 0.2.0's
//! `Unet("resnet50", encoder_weights=None, classes=1, activation=None)` on the frozen ResNet-50.
//!
//! Encoder features, finest first: `f₁ = ReLU(BN(conv1))` (64 × 112²), `f₂ = layer1` (256 × 56²),
//! `f₃ = layer2` (512 × 28²), `f₄ = layer3` (1024 × 14²), `f₅ = layer4` (2048 × 7²). Decoder (no
//! centre block): `x₀ = f₅`; block `i` = 0…4: `x ← up₂(x)` (nearest ×2), `x ← [x, skipᵢ]` with
//! skips `f₄, f₃, f₂, f₁` and none for the last, then two `ReLU(BN(Conv3×3(·)))` (no bias) with
//! widths 256, 128, 64, 32, 16. Head: `Conv3×3(16 → 1)` with bias, no activation → logits
//! `[B, 224, 224]`. Initialisation as the library's: decoder convolutions Kaiming-uniform
//! (fan-in, ReLU gain), BatchNorm γ = 1, β = 0, the head Xavier-uniform with a zero bias.
//!
//! Parameter names are the library's (`encoder.*` as torchvision's ResNet, `decoder.blocks.{i}.
//! conv{1,2}.{0,1}.*`, `segmentation_head.0.*`), so its state dicts load as they are.
//!
//! Book: "Segmentation" (the U-Net). Reference: `mgca/models/mgca/mgca_segmenter.py`, `cli()`
//! (`smp.Unet`) and `mgca/models/ssl_segmenter.py`, `SSLSegmenter`, at HKU-MedAI/MGCA
//! `680fe4a6ee0c`; segmentation-models-pytorch 0.2.0, `Unet`, `UnetDecoder`, `DecoderBlock`,
//! `SegmentationHead`, `initialize_decoder`, `initialize_head`.
//!
//! **Deviation:** none.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::batchnorm::{BatchNorm, Mode};
use super::resnet::{ResNet, ResNetConfig};
use crate::kernels::conv2d::conv2d;
use crate::weights::{WeightError, WeightReader};

/// The decoder's sizes: the encoder's five feature widths (finest first) and the five blocks'
/// output widths.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnetConfig {
    /// Channels of `f₁ … f₅` (ResNet-50: 64, 256, 512, 1024, 2048).
    pub encoder_channels: [usize; 5],
    /// The blocks' output channels (the library's default: 256, 128, 64, 32, 16).
    pub decoder_channels: [usize; 5],
}

impl UnetConfig {
    /// The reference's U-Net on ResNet-50.
    pub fn resnet50() -> Self {
        Self { encoder_channels: [64, 256, 512, 1024, 2048], decoder_channels: [256, 128, 64, 32, 16] }
    }

    /// The library's decoder on any encoder's features.
    pub fn for_encoder(encoder_channels: [usize; 5]) -> Self {
        Self { encoder_channels, ..Self::resnet50() }
    }

    /// `(input, skip, output)` channels of each block.
    pub fn blocks(&self) -> [(usize, usize, usize); 5] {
        let e = self.encoder_channels;
        let d = self.decoder_channels;
        let skips = [e[3], e[2], e[1], e[0], 0];
        std::array::from_fn(|i| (if i == 0 { e[4] } else { d[i - 1] }, skips[i], d[i]))
    }

    /// A fresh decoder and head (the library's initialisation) on `encoder`.
    pub fn init<B: Backend>(&self, encoder: ResNet<B>, device: &B::Device) -> Unet<B> {
        let blocks = self
            .blocks()
            .iter()
            .map(|&(input, skip, output)| DecoderBlock {
                conv1: ConvBnRelu::new(input + skip, output, device),
                conv2: ConvBnRelu::new(output, output, device),
            })
            .collect();
        let mut head = Conv2dConfig::new([self.decoder_channels[4], 1], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_initializer(Initializer::XavierUniform { gain: 1.0 })
            .init(device);
        head.bias = Some(Param::from_tensor(Tensor::zeros([1], device)));
        Unet { encoder, blocks, head }
    }
}

/// `ReLU(BN(Conv3×3(x)))`, the convolution without bias (the library's `Conv2dReLU`).
#[derive(Module, Debug)]
pub struct ConvBnRelu<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> ConvBnRelu<B> {
    fn new(input: usize, output: usize, device: &B::Device) -> Self {
        let conv = Conv2dConfig::new([input, output], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .with_initializer(Initializer::KaimingUniform { gain: std::f64::consts::SQRT_2, fan_out_only: false })
            .init(device);
        Self { conv, bn: BatchNorm::new(output, true, device) }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        relu(self.bn.forward(conv2d(&self.conv, x), mode))
    }

    fn load(&mut self, prefix: &str, weights: &mut WeightReader, device: &B::Device) -> Result<(), WeightError> {
        let shape = self.conv.weight.val().dims();
        self.conv.weight = weights.param(device, &format!("{prefix}.0.weight"), &shape)?;
        self.bn = BatchNorm::load(&format!("{prefix}.1"), shape[0], true, weights, device)?;
        Ok(())
    }
}

/// Up-sample, concatenate the skip, two convolution units.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    conv1: ConvBnRelu<B>,
    conv2: ConvBnRelu<B>,
}

/// The U-Net: the ResNet encoder, five decoder blocks and the head.
#[derive(Module, Debug)]
pub struct Unet<B: Backend> {
    encoder: ResNet<B>,
    blocks: Vec<DecoderBlock<B>>,
    head: Conv2d<B>,
}

fn upsample2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, [2 * h, 2 * w], InterpolateOptions::new(InterpolateMode::Nearest))
}

// ANCHOR: forward
impl<B: Backend> Unet<B> {
    /// Logits `[N, H, W]` of images `[N, 3, H, W]` (H, W multiples of 32). The encoder's
    /// BatchNorm runs in `encoder` mode, the decoder's in `decoder` mode; the encoder's features
    /// are detached when `frozen_encoder` (no gradient reaches it).
    pub fn forward(&self, images: Tensor<B, 4>, encoder: Mode, decoder: Mode, frozen_encoder: bool) -> Tensor<B, 3> {
        let features = self.encoder.unet_features(images, encoder);
        let [f1, f2, f3, f4, f5] = features.map(|f| if frozen_encoder { f.detach() } else { f });
        let skips = [Some(f4), Some(f3), Some(f2), Some(f1), None];
        let mut x = f5; // [N, 2048, H/32, W/32]
        for (block, skip) in self.blocks.iter().zip(skips) {
            x = upsample2(x);
            if let Some(skip) = skip {
                x = Tensor::cat(vec![x, skip], 1); // [N, in + skip, ·, ·]
            }
            x = block.conv2.forward(block.conv1.forward(x, decoder), decoder);
        }
        conv2d(&self.head, x).squeeze_dim(1) // [N, 1, H, W] → [N, H, W]
    }
    // ANCHOR_END: forward

    /// The encoder.
    pub fn encoder(&self) -> &ResNet<B> {
        &self.encoder
    }

    /// Load a segmentation-models-pytorch state dict (`encoder.*`, `decoder.blocks.*`,
    /// `segmentation_head.0.*`, each under `prefix`: `""` for the library's own file, `"unet."`
    /// after the `smp-unet` key table); the encoder's architecture is read from its tensors.
    pub fn load(
        prefix: &str,
        weights: &mut WeightReader,
        device: &B::Device,
    ) -> Result<(Self, UnetConfig), WeightError> {
        weights.set_prefix(&format!("{prefix}encoder."));
        let encoder = super::resnet::config_from_weights(weights, None)
            .and_then(|c: ResNetConfig| ResNet::load(&c, weights, device));
        weights.set_prefix(prefix);
        let encoder = encoder?;
        let config = UnetConfig::for_encoder(encoder.unet_channels());
        let mut decoder_channels = [0; 5];
        for (i, c) in decoder_channels.iter_mut().enumerate() {
            *c = weights.shape(&format!("decoder.blocks.{i}.conv1.0.weight"))?[0];
        }
        let config = UnetConfig { decoder_channels, ..config };
        let mut net = config.init(encoder, device);
        for (i, block) in net.blocks.iter_mut().enumerate() {
            block.conv1.load(&format!("decoder.blocks.{i}.conv1"), weights, device)?;
            block.conv2.load(&format!("decoder.blocks.{i}.conv2"), weights, device)?;
        }
        let shape = net.head.weight.val().dims();
        net.head.weight = weights.param(device, "segmentation_head.0.weight", &shape)?;
        net.head.bias = Some(weights.param(device, "segmentation_head.0.bias", &[shape[0]])?);
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

    /// Agreement with segmentation-models-pytorch's U-Net: 1e-4 absolute, as the issue states.
    const SMP_UNET: Tolerance = Tolerance { abs: 1e-4, rel: 0.0 };

    fn fixture() -> TensorFile {
        TensorFile::read(&crate::testing::golden("pytorch/unet/unet_case.safetensors")).unwrap()
    }

    /// The logits in training mode, then in evaluation mode with the running statistics the
    /// training pass left, against the fixture's, within 1e-4.
    fn check_logits(net: &Unet<Cpu>, case: &TensorFile) {
        let device = cpu_device();
        let images = &case.tensors["unet.images"];
        let x = Tensor::<Cpu, 4>::from_data(TensorData::new(images.values.clone(), [2, 3, 64, 64]), &device);
        for (mode, name) in [(Mode::Train, "unet.logits_train"), (Mode::Eval, "unet.logits_eval")] {
            let ours = net.forward(x.clone(), mode, mode, true).into_data().to_vec::<f32>().unwrap();
            let want = &case.tensors[name];
            assert_eq!(want.shape, [2, 64, 64]);
            let worst = ours.iter().zip(&want.values).fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64));
            eprintln!("{name}: max |Δ| {worst:.2e}");
            assert!(
                ours.iter().zip(&want.values).all(|(a, b)| SMP_UNET.allows(*a as f64, *b as f64)),
                "{name}: max |Δ| {worst:e}"
            );
        }
    }

    /// segmentation-models-pytorch 0.2.0's `Unet("resnet50")` with the fixture's weights, loaded
    /// by the library's key names: equal logits; every key taken.
    #[test]
    fn equals_segmentation_models_pytorch() {
        let case = fixture();
        let file = crate::testing::formula_weights(&case.metadata["keys"]);
        assert_eq!(file.tensors.len(), 317);
        let mut weights = WeightReader::new(file);
        let (net, config) = Unet::<Cpu>::load("", &mut weights, &cpu_device()).unwrap();
        assert_eq!(config, UnetConfig::resnet50());
        assert_eq!(weights.unused(), Vec::<String>::new());
        check_logits(&net, &case);
    }

    /// The same weights as a checkpoint file, through `mgca weights import`'s importer and the
    /// `smp-unet` key table: every key loaded, none unexpected, equal logits.
    #[test]
    fn a_library_checkpoint_imports_through_its_key_table() {
        use crate::model::import::{Architecture, Loaded, import};
        use crate::weights::keymap::Layout;
        let case = fixture();
        let path = crate::testing::scratch("smp-unet").join("unet.safetensors");
        crate::testing::formula_weights(&case.metadata["keys"]).write(&path).unwrap();
        let preset = crate::config::MgcaConfig::reference();
        let (module, report) =
            import::<Cpu>(&path, Layout::SmpUnet, None, Architecture::FromWeights(&preset), &cpu_device()).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(report.unused, Vec::<String>::new());
        assert!(report.loaded_into.starts_with("U-Net"), "{}", report.loaded_into);
        let Loaded::Unet(net) = module else { panic!("smp-unet loads a U-Net") };
        check_logits(&net, &case);
    }

    /// The library's initialisation: decoder convolutions within the Kaiming-uniform bound
    /// `√(6 / fan_in)`, the head within Xavier's `√(6 / (fan_in + fan_out))` with a zero bias.
    #[test]
    fn fresh_decoder_follows_the_library_initialisation() {
        let device = cpu_device();
        let encoder = ResNetConfig { width: 4, blocks: [1, 1, 1, 1], expansion: 2, upsample_to: None }.init(&device);
        assert_eq!(encoder.unet_channels(), [4, 8, 16, 32, 64]);
        let config = UnetConfig::for_encoder(encoder.unet_channels());
        let net = config.init::<Cpu>(encoder, &device);
        assert_eq!(config.blocks(), [(64, 32, 256), (256, 16, 128), (128, 8, 64), (64, 4, 32), (32, 0, 16)]);
        let w = net.blocks[0].conv1.conv.weight.val().into_data().to_vec::<f32>().unwrap();
        let bound = (6.0f32 / ((64 + 32) * 9) as f32).sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > 0.8 * bound));
        let h = net.head.weight.val().into_data().to_vec::<f32>().unwrap();
        let bound = (6.0f32 / (16.0 * 9.0 + 9.0)).sqrt();
        assert!(h.iter().all(|v| v.abs() <= bound) && h.iter().any(|v| v.abs() > 0.8 * bound));
        assert_eq!(net.head.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap(), vec![0.0]);
        let x = Tensor::<Cpu, 4>::zeros([1, 3, 64, 64], &device);
        assert_eq!(net.forward(x, Mode::Eval, Mode::Eval, true).dims(), [1, 64, 64]);
    }
}
