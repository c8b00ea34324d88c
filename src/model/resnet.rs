//! ResNet-50, MGCA's alternative image encoder, as torchvision builds it (v1.5 bottlenecks).
//!
//! `x = Up₂₉₉(img)`, stem `MaxPool(ReLU(BN(Conv7×7/2(x))))`, then four stages of bottlenecks
//! `y = ReLU(BN₃(Conv1×1(ReLU(BN₂(Conv3×3/s(ReLU(BN₁(Conv1×1(x)))))))) + shortcut(x))`, the
//! stride on the 3×3 convolution of each stage's first block. The global feature is the
//! average-pooled layer-4 map (`[N, 2048]`); the local features are the layer-3 map flattened
//! row-major into tokens (`[N, 361, 1024]` at 299 px).
//!
//! Book: "Image encoder: ResNet-50". Reference: `mgca/models/backbones/encoder.py`,
//! `ImageEncoder.resnet_forward` (up-sampling, outputs), and `cnn_backbones.py`, `resnet_50`
//! (torchvision's backbone and key names), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. The reference up-samples the 224 px input bilinearly to 299 px with
//! `align_corners = True` before the stem ([`ResNetConfig::upsample_to`]); detection and
//! segmentation run the same weights at 224 px without it. The ImageNet weight version (V1 for
//! the paper, V2 at the reference's HEAD) is a matter of which checkpoint is loaded.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, backend::Backend};

use super::batchnorm::{BatchNorm, Mode};
use crate::kernels::conv2d::conv2d;
use crate::weights::{WeightError, WeightReader};

pub use crate::config::encoders::{ImagenetWeights, ResNetConfig};

impl ResNetConfig {
    /// A randomly initialised ResNet (burn's default initialisers, BatchNorm γ = 1, β = 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        let conv = |i: usize, o: usize, k: usize, stride: usize| {
            Conv2dConfig::new([i, o], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .with_bias(false)
                .init(device)
        };
        let bn = |c: usize| BatchNorm::new(c, true, device);
        let mut inplanes = self.width;
        let mut stages = Vec::new();
        for (s, &count) in self.blocks.iter().enumerate() {
            let planes = self.width << s;
            let out = planes * self.expansion;
            let stride = if s == 0 { 1 } else { 2 };
            let blocks = (0..count)
                .map(|j| {
                    let (input, stride) = if j == 0 { (inplanes, stride) } else { (out, 1) };
                    let downsample = (j == 0 && (stride != 1 || input != out))
                        .then(|| Downsample { conv: conv(input, out, 1, stride), bn: bn(out) });
                    Bottleneck {
                        conv1: conv(input, planes, 1, 1),
                        bn1: bn(planes),
                        conv2: conv(planes, planes, 3, stride),
                        bn2: bn(planes),
                        conv3: conv(planes, out, 1, 1),
                        bn3: bn(out),
                        downsample,
                    }
                })
                .collect();
            inplanes = out;
            stages.push(blocks);
        }
        let [layer1, layer2, layer3, layer4] = <[Vec<Bottleneck<B>>; 4]>::try_from(stages).expect("four stages");
        ResNet {
            conv1: conv(3, self.width, 7, 2),
            bn1: bn(self.width),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            upsample_to: self.upsample_to,
        }
    }
}

/// The projection shortcut of a stage's first block (`downsample.0` conv, `downsample.1` BN).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

/// A v1.5 bottleneck: 1×1, 3×3 (with the stride), 1×1, plus the shortcut.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv3: Conv2d<B>,
    bn3: BatchNorm<B>,
    downsample: Option<Downsample<B>>,
}

/// The ResNet image encoder (no classifier).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    maxpool: MaxPool2d,
    layer1: Vec<Bottleneck<B>>,
    layer2: Vec<Bottleneck<B>>,
    layer3: Vec<Bottleneck<B>>,
    layer4: Vec<Bottleneck<B>>,
    #[module(skip)]
    upsample_to: Option<usize>,
}

/// What the ResNet hands to MGCA.
#[derive(Debug, Clone)]
pub struct ResNetOutput<B: Backend> {
    /// The average-pooled layer-4 map. `[N, 2048]`
    pub global: Tensor<B, 2>,
    /// The layer-3 map as row-major tokens. `[N, 361, 1024]`
    pub local: Tensor<B, 3>,
}

// ANCHOR: forward
impl<B: Backend> Bottleneck<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let y = relu(self.bn1.forward(conv2d(&self.conv1, x.clone()), mode));
        let y = relu(self.bn2.forward(conv2d(&self.conv2, y), mode)); // stride here (v1.5)
        let y = self.bn3.forward(conv2d(&self.conv3, y), mode);
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(conv2d(&d.conv, x), mode),
            None => x,
        };
        relu(y + shortcut)
    }
}

impl<B: Backend> ResNet<B> {
    /// Encode images `[N, 3, S, S]`; BatchNorm in `mode`.
    pub fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> ResNetOutput<B> {
        // MGCA: [N, 512, 38, 38], [N, 1024, 19, 19], [N, 2048, 10, 10] after the 299 px up-sampling.
        let [_, local, x] = self.pyramid(images, mode);
        let [n, c, _, _] = x.dims();
        let global = x.mean_dim(3).mean_dim(2).reshape([n, c]); // [N, 2048]
        let [_, c, h, w] = local.dims();
        let local = local.reshape([n, c, h * w]).swap_dims(1, 2); // [N, 361, 1024]
        ResNetOutput { global, local }
    }
}

impl<B: Backend> ResNet<B> {
    /// The same network reading its input at the size given (detection and segmentation
    /// skip MGCA's up-sampling to 299 px).
    pub fn without_upsampling(mut self) -> Self {
        self.upsample_to = None;
        self
    }

    // ANCHOR: unet_features
    /// The five feature maps a U-Net decoder reads, finest first: the stem `ReLU(BN(conv1))`
    /// (ResNet-50 at 224 px: 64 × 112²), `layer1(maxpool(·))` (256 × 56²), layer 2 (512 × 28²),
    /// layer 3 (1024 × 14²) and layer 4 (2048 × 7²), as segmentation-models-pytorch's
    /// `ResNetEncoder.get_stages` cuts them (its first "feature", the input, is left out).
    pub fn unet_features(&self, images: Tensor<B, 4>, mode: Mode) -> [Tensor<B, 4>; 5] {
        let stem = relu(self.bn1.forward(conv2d(&self.conv1, images), mode));
        let stage = |x, blocks: &[Bottleneck<B>]| blocks.iter().fold(x, |x, b| b.forward(x, mode));
        let l1 = stage(self.maxpool.forward(stem.clone()), &self.layer1);
        let l2 = stage(l1.clone(), &self.layer2);
        let l3 = stage(l2.clone(), &self.layer3);
        let l4 = stage(l3.clone(), &self.layer4);
        [stem, l1, l2, l3, l4]
    }
    // ANCHOR_END: unet_features

    /// The channels of the five [`ResNet::unet_features`] (ResNet-50: 64, 256, 512, 1024, 2048).
    pub fn unet_channels(&self) -> [usize; 5] {
        let out = |layer: &[Bottleneck<B>]| layer.last().expect("a block per layer").bn3.running_mean.value().dims()[0];
        [
            self.bn1.running_mean.value().dims()[0],
            out(&self.layer1),
            out(&self.layer2),
            out(&self.layer3),
            out(&self.layer4),
        ]
    }

    /// The channels of C3, C4 and C5 (ResNet-50: 512, 1024, 2048).
    pub fn pyramid_channels(&self) -> [usize; 3] {
        let out = |layer: &[Bottleneck<B>]| layer.last().expect("a block per layer").bn3.running_mean.value().dims()[0];
        [out(&self.layer2), out(&self.layer3), out(&self.layer4)]
    }

    /// The feature pyramid a detector reads, `[C3, C4, C5]`: the outputs of layers 2, 3 and 4
    /// (ResNet-50 at 224 px without up-sampling: 512 × 28², 1024 × 14², 2048 × 7²), as the
    /// reference's `ResNetDetector.forward` returns them.
    pub fn pyramid(&self, images: Tensor<B, 4>, mode: Mode) -> [Tensor<B, 4>; 3] {
        let x = match self.upsample_to {
            Some(side) => interpolate(
                images,
                [side, side],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(true),
            ),
            None => images,
        };
        let x = self.maxpool.forward(relu(self.bn1.forward(conv2d(&self.conv1, x), mode)));
        let stage = |x, blocks: &[Bottleneck<B>]| blocks.iter().fold(x, |x, b| b.forward(x, mode));
        let c3 = stage(stage(x, &self.layer1), &self.layer2);
        let c4 = stage(c3.clone(), &self.layer3);
        let c5 = stage(c4.clone(), &self.layer4);
        [c3, c4, c5]
    }
}
// ANCHOR_END: forward

/// The architecture a torchvision ResNet state dict describes; `upsample_to` is not in the
/// weights and is given by the caller (Some(299) for MGCA pretraining).
pub fn config_from_weights(weights: &WeightReader, upsample_to: Option<usize>) -> Result<ResNetConfig, WeightError> {
    let stem = super::sizes(weights, "conv1.weight", "[64, 3, 7, 7]", 4)?;
    let first = super::sizes(weights, "layer1.0.conv1.weight", "[64, 64, 1, 1]", 4)?;
    let third = super::sizes(weights, "layer1.0.conv3.weight", "[256, 64, 1, 1]", 4)?;
    let mut blocks = [0; 4];
    for (s, count) in blocks.iter_mut().enumerate() {
        *count = (0..).take_while(|j| weights.contains(&format!("layer{}.{j}.conv1.weight", s + 1))).count();
        if *count == 0 {
            return Err(WeightError::Architecture(format!("no blocks in layer{}", s + 1)));
        }
    }
    if first[0] != stem[0] || third[0] % first[0] != 0 {
        return Err(WeightError::Architecture(format!(
            "stem width {} and layer1 bottleneck {}→{} are not a torchvision bottleneck ResNet",
            stem[0], first[0], third[0]
        )));
    }
    Ok(ResNetConfig { width: stem[0], blocks, expansion: third[0] / first[0], upsample_to })
}

impl<B: Backend> ResNet<B> {
    /// Load a torchvision-named state dict (no `img_encoder_q.model.` prefix; an `fc.*`
    /// classifier, if present, is reported unused).
    pub fn load(config: &ResNetConfig, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        let mut net = config.init::<B>(device);
        let conv = |weights: &mut WeightReader, key: &str, c: &mut Conv2d<B>| -> Result<(), WeightError> {
            let shape = c.weight.val().dims();
            c.weight = weights.param(device, &format!("{key}.weight"), &shape)?;
            Ok(())
        };
        let bn = |weights: &mut WeightReader, key: &str, b: &mut BatchNorm<B>| -> Result<(), WeightError> {
            let channels = b.running_mean.value_sync().dims()[0];
            *b = BatchNorm::load(key, channels, true, weights, device)?;
            Ok(())
        };
        conv(weights, "conv1", &mut net.conv1)?;
        bn(weights, "bn1", &mut net.bn1)?;
        for (s, stage) in [&mut net.layer1, &mut net.layer2, &mut net.layer3, &mut net.layer4].into_iter().enumerate() {
            for (j, block) in stage.iter_mut().enumerate() {
                let key = |name: &str| format!("layer{}.{j}.{name}", s + 1);
                conv(weights, &key("conv1"), &mut block.conv1)?;
                bn(weights, &key("bn1"), &mut block.bn1)?;
                conv(weights, &key("conv2"), &mut block.conv2)?;
                bn(weights, &key("bn2"), &mut block.bn2)?;
                conv(weights, &key("conv3"), &mut block.conv3)?;
                bn(weights, &key("bn3"), &mut block.bn3)?;
                if let Some(d) = block.downsample.as_mut() {
                    conv(weights, &key("downsample.0"), &mut d.conv)?;
                    bn(weights, &key("downsample.1"), &mut d.bn)?;
                }
            }
        }
        Ok(net)
    }

    /// The stem convolution's kernel, e.g. to inspect its gradient. `[64, 3, 7, 7]`
    pub fn stem_weight(&self) -> Tensor<B, 4> {
        self.conv1.weight.val()
    }

    /// The running statistics `(mean, var)` of the stem BatchNorm.
    pub fn stem_running_stats(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        self.bn1.running_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{Agreement, RESNET_FEATURES, SHALLOW, Tolerance, formula_images};
    use crate::tensor_file::{HostTensor, TensorFile};
    use crate::testing;

    fn golden(name: &str) -> TensorFile {
        TensorFile::read_numeric(&testing::golden(&format!("pytorch/resnet/{name}"))).unwrap()
    }

    /// The pyramid's C4 is the encoder's local tokens and C5 pools to its global feature.
    #[test]
    fn the_pyramid_agrees_with_the_encoder_output() {
        let dev = cpu_device();
        let config = ResNetConfig { width: 4, blocks: [1, 1, 1, 1], expansion: 4, upsample_to: None };
        let net = config.init::<Cpu>(&dev);
        let x = formula_images(2, 64).to_tensor::<Cpu, 4>(&dev);
        let [c3, c4, c5] = net.pyramid(x.clone(), Mode::Eval);
        assert_eq!((c3.dims(), c4.dims(), c5.dims()), ([2, 32, 8, 8], [2, 64, 4, 4], [2, 128, 2, 2]));
        let out = net.forward(x, Mode::Eval);
        let local = c4.reshape([2, 64, 16]).swap_dims(1, 2);
        let a =
            Agreement::measure("local", &HostTensor::from_tensor(local), &HostTensor::from_tensor(out.local), SHALLOW);
        assert!(a.ok, "{a}");
        let global = c5.mean_dim(3).mean_dim(2).reshape([2, 128]);
        let a = Agreement::measure(
            "global",
            &HostTensor::from_tensor(global),
            &HostTensor::from_tensor(out.global),
            SHALLOW,
        );
        assert!(a.ok, "{a}");
    }

    #[test]
    fn resnet50_shapes_follow_torchvision() {
        let c = ResNetConfig::resnet50();
        assert_eq!((c.global_dim(), c.local_dim(), c.local_tokens(224)), (2048, 1024, 361));
        // Detection and segmentation: no up-sampling, 14 × 14 layer-3 tokens.
        let plain = ResNetConfig { upsample_to: None, ..c };
        assert_eq!(plain.local_tokens(224), 196);
    }

    /// The torchvision case of `make_resnet.py` (torchvision's own bottleneck code, narrowed to
    /// width 4 and blocks [2, 1, 2, 1], randomised BatchNorm): eval-mode and train-mode global
    /// and local features after the 224 → 299 up-sampling, and the running statistics the
    /// train step leaves behind.
    #[test]
    fn small_resnet_matches_torchvision() {
        let dev = cpu_device();
        let mut weights = WeightReader::new(golden("resnet_weights.safetensors"));
        let config = config_from_weights(&weights, Some(299)).unwrap();
        assert_eq!(config, ResNetConfig { width: 4, blocks: [2, 1, 2, 1], expansion: 4, upsample_to: Some(299) });
        let net = ResNet::<Cpu>::load(&config, &mut weights, &dev).unwrap();
        // torchvision's state dict carries its classifier; MGCA drops it.
        assert_eq!(weights.unused(), vec!["fc.bias".to_string(), "fc.weight".to_string()]);

        let x = formula_images(2, 224).to_tensor::<Cpu, 4>(&dev);
        let want = golden("resnet_outputs.safetensors");
        let features = RESNET_FEATURES;
        let check = |name: &str, ours: HostTensor, tol: Tolerance| {
            let a = Agreement::measure(name, &ours, &want.tensors[name], tol);
            eprintln!("{a}");
            assert!(a.ok, "{a}");
        };
        let eval = net.forward(x.clone(), Mode::Eval);
        assert_eq!(eval.local.dims(), [2, config.local_tokens(224), config.local_dim()]);
        check("eval.global", HostTensor::from_tensor(eval.global), features);
        check("eval.local", HostTensor::from_tensor(eval.local), features);
        let train = net.forward(x, Mode::Train);
        check("train.global", HostTensor::from_tensor(train.global), features);
        check("train.local", HostTensor::from_tensor(train.local), features);
        let stats = SHALLOW;
        let (mean, var) = net.stem_running_stats();
        check("after.bn1.running_mean", HostTensor::from_tensor(mean), stats);
        check("after.bn1.running_var", HostTensor::from_tensor(var), stats);
        let (mean, var) = net.layer4.last().unwrap().bn3.running_stats();
        check("after.layer4.last.bn3.running_mean", HostTensor::from_tensor(mean), stats);
        check("after.layer4.last.bn3.running_var", HostTensor::from_tensor(var), stats);
    }

    #[test]
    fn a_wrong_shape_or_missing_key_is_named() {
        let mut file = golden("resnet_weights.safetensors");
        let t = file.tensors.get_mut("layer3.1.conv2.weight").unwrap();
        t.shape = vec![16, 16, 1, 9];
        let mut weights = WeightReader::new(file);
        let config = config_from_weights(&weights, Some(299)).unwrap();
        let err = ResNet::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("layer3.1.conv2.weight"), "{err}");

        let mut file = golden("resnet_weights.safetensors");
        file.tensors.remove("layer2.0.downsample.1.running_var");
        let mut weights = WeightReader::new(file);
        let err = ResNet::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("missing `layer2.0.downsample.1.running_var`"), "{err}");
    }
}
