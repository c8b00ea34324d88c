//! The YOLOv3 neck and heads of MGCA's detection evaluation, and the detector's inference
//! output: decoding the three heads into boxes, the confidence filter and greedy
//! non-maximum suppression.
//!
//! Neck: CBL = 1×1 or 3×3 convolution (no bias) + BatchNorm + LeakyReLU(0.1); an embedding is
//! six CBLs alternating 1×1 (to `f₀`) and 3×3 (to `f₁`) and a 1×1 convolution with bias to
//! 18 = 3 anchors × 6 channels, tapping the fifth CBL's output as the branch. Scale 0 embeds C5
//! (`f = 512, 1024`) → `out0`; its branch goes through CBL(512→256), nearest ×2 up-sampling and
//! is concatenated `[up-sampled, C4]` → embedding (256, 512) → `out1`; likewise CBL(256→128),
//! ×2, `[up-sampled, C3]` → embedding (128, 256) → `out2`. PyTorch's default initialisation
//! (burn's defaults for convolutions are the same Kaiming-uniform bounds).
//!
//! Decode, per scale `s` with grid `G`, stride `r` and grid-unit anchors `(a_w, a_h)`:
//! `b_x = (σ(t_x) + col)·r`, `b_y = (σ(t_y) + row)·r`, `b_w = e^{t_w}·a_w·r`, `b_h = e^{t_h}·a_h·r`,
//! objectness `σ(t_o)`, class score `σ(t_c)`; scales 0, 1, 2 concatenated, within a scale in
//! the order anchor, row, column. Per image: corners, keep `σ(t_o) ≥ 0.5`, sort by objectness
//! (descending), keep the top box and drop the rest whose "+1" IoU with it is ≥ 0.5; repeat.
//!
//! Book: "Detection" (architecture, inference and NMS). Reference:
//! `mgca/models/ssl_detector.py`, `ModelMain` (neck and heads), and `mgca/utils/yolo_loss.py`,
//! `YOLOLoss.forward` without targets and `non_max_suppression`, and
//! `mgca/models/ssl_detector.py`, `SSLDetector.shared_step` (thresholds 0.5 and 0.5), at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Ties in objectness (which `torch.sort` orders arbitrarily) keep their
//! decode order here.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::batchnorm::{BatchNorm, Mode};
use crate::kernels::conv2d::conv2d;
use crate::loss::yolo::{ANCHORS_PER_SCALE, ATTRIBUTES, GRIDS, anchors_grid, iou_plus_one, sigmoid, stride};
use crate::weights::{WeightError, WeightReader};

/// The neck's sizes: the backbone's C3, C4, C5 channels (ResNet-50: 512, 1024, 2048) and the
/// widths of the three embeddings (the reference: 512/1024, 256/512, 128/256).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct YoloNeckConfig {
    /// Channels of C3, C4, C5.
    pub backbone_channels: [usize; 3],
    /// `(f₀, f₁)` of the embeddings of scales 0, 1, 2.
    pub widths: [[usize; 2]; 3],
}

impl YoloNeckConfig {
    /// The reference's neck on ResNet-50.
    pub fn resnet50() -> Self {
        Self { backbone_channels: [512, 1024, 2048], widths: [[512, 1024], [256, 512], [128, 256]] }
    }

    /// A small neck for the smoke tier and tests.
    pub fn smoke(backbone_channels: [usize; 3]) -> Self {
        Self { backbone_channels, widths: [[16, 32], [8, 16], [8, 16]] }
    }

    /// A randomly initialised neck.
    pub fn init<B: Backend>(&self, device: &B::Device) -> YoloNeck<B> {
        let [c3, c4, c5] = self.backbone_channels;
        let [w0, w1, w2] = self.widths;
        YoloNeck {
            embedding0: Embedding::new(c5, w0, device),
            embedding1_cbl: Cbl::new(w0[0], w1[0], 1, device),
            embedding1: Embedding::new(c4 + w1[0], w1, device),
            embedding2_cbl: Cbl::new(w1[0], w2[0], 1, device),
            embedding2: Embedding::new(c3 + w2[0], w2, device),
        }
    }
}

/// Convolution (no bias) + BatchNorm + LeakyReLU(0.1).
#[derive(Module, Debug)]
pub struct Cbl<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

impl<B: Backend> Cbl<B> {
    fn new(input: usize, output: usize, kernel: usize, device: &B::Device) -> Self {
        let pad = (kernel - 1) / 2;
        let conv = Conv2dConfig::new([input, output], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNorm::new(output, true, device) }
    }

    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        leaky_relu(self.bn.forward(conv2d(&self.conv, x), mode), 0.1)
    }

    fn load(&mut self, prefix: &str, weights: &mut WeightReader, device: &B::Device) -> Result<(), WeightError> {
        let shape = self.conv.weight.val().dims();
        self.conv.weight = weights.param(device, &format!("{prefix}.conv.weight"), &shape)?;
        self.bn = BatchNorm::load(&format!("{prefix}.bn"), shape[0], true, weights, device)?;
        Ok(())
    }
}

/// Six CBLs and the output convolution; the fifth CBL's output is the branch.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    cbls: Vec<Cbl<B>>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Embedding<B> {
    fn new(input: usize, [f0, f1]: [usize; 2], device: &B::Device) -> Self {
        let cbls = (0..6)
            .map(|i| match i {
                0 => Cbl::new(input, f0, 1, device),
                _ if i % 2 == 1 => Cbl::new(f0, f1, 3, device),
                _ => Cbl::new(f1, f0, 1, device),
            })
            .collect();
        let conv_out = Conv2dConfig::new([f1, ANCHORS_PER_SCALE * ATTRIBUTES], [1, 1]).init(device);
        Self { cbls, conv_out }
    }

    /// `(output, branch)`.
    fn forward(&self, mut x: Tensor<B, 4>, mode: Mode) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let mut branch = None;
        for (i, cbl) in self.cbls.iter().enumerate() {
            x = cbl.forward(x, mode);
            if i == 4 {
                branch = Some(x.clone());
            }
        }
        (conv2d(&self.conv_out, x), branch.expect("six CBLs"))
    }

    fn load(&mut self, prefix: &str, weights: &mut WeightReader, device: &B::Device) -> Result<(), WeightError> {
        for (i, cbl) in self.cbls.iter_mut().enumerate() {
            cbl.load(&format!("{prefix}.{i}"), weights, device)?;
        }
        let shape = self.conv_out.weight.val().dims();
        self.conv_out.weight = weights.param(device, &format!("{prefix}.conv_out.weight"), &shape)?;
        self.conv_out.bias = Some(weights.param(device, &format!("{prefix}.conv_out.bias"), &[shape[0]])?);
        Ok(())
    }
}

/// The YOLOv3 neck and heads.
#[derive(Module, Debug)]
pub struct YoloNeck<B: Backend> {
    embedding0: Embedding<B>,
    embedding1_cbl: Cbl<B>,
    embedding1: Embedding<B>,
    embedding2_cbl: Cbl<B>,
    embedding2: Embedding<B>,
}

fn upsample2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, [2 * h, 2 * w], InterpolateOptions::new(InterpolateMode::Nearest))
}

// ANCHOR: neck
impl<B: Backend> YoloNeck<B> {
    /// The three head outputs `[B, 18, G, G]` (G = 7, 14, 28 at 224 px) from C3, C4, C5.
    pub fn forward(&self, c3: Tensor<B, 4>, c4: Tensor<B, 4>, c5: Tensor<B, 4>, mode: Mode) -> [Tensor<B, 4>; 3] {
        let (out0, branch0) = self.embedding0.forward(c5, mode);
        let x = upsample2(self.embedding1_cbl.forward(branch0, mode)); // [B, f₀¹, 14, 14]
        let (out1, branch1) = self.embedding1.forward(Tensor::cat(vec![x, c4], 1), mode);
        let x = upsample2(self.embedding2_cbl.forward(branch1, mode)); // [B, f₀², 28, 28]
        let (out2, _) = self.embedding2.forward(Tensor::cat(vec![x, c3], 1), mode);
        [out0, out1, out2]
    }
}
// ANCHOR_END: neck

impl<B: Backend> YoloNeck<B> {
    /// Load the reference's `ModelMain` neck (keys `embedding0.0.conv.weight`, …, without the
    /// `backbone.` entries).
    pub fn load(config: &YoloNeckConfig, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        let mut neck = config.init::<B>(device);
        neck.embedding0.load("embedding0", weights, device)?;
        neck.embedding1_cbl.load("embedding1_cbl", weights, device)?;
        neck.embedding1.load("embedding1", weights, device)?;
        neck.embedding2_cbl.load("embedding2_cbl", weights, device)?;
        neck.embedding2.load("embedding2", weights, device)?;
        Ok(neck)
    }
}

/// One detection: corners in pixels of the 224 px frame, objectness, class score, class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub objectness: f32,
    pub class_score: f32,
    pub class: usize,
}

/// The decoded candidates of one image, before filtering: `(cx, cy, w, h, objectness, class)`.
pub type Candidate = [f32; 6];

// ANCHOR: decode
/// Decode image `b` of the three head outputs (`[B, 18, G, G]` each) into its 3087 candidates.
pub fn decode(heads: [&[f32]; 3], b: usize) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(3087);
    for (s, raw) in heads.iter().enumerate() {
        let (g, r, anchors) = (GRIDS[s], stride(s), anchors_grid(s));
        let plane = g * g;
        for (k, anchor) in anchors.iter().enumerate() {
            let base = (b * ANCHORS_PER_SCALE + k) * ATTRIBUTES * plane;
            let at = |attr: usize, pos: usize| raw[base + attr * plane + pos];
            for row in 0..g {
                for col in 0..g {
                    let pos = row * g + col;
                    // As the reference: grid units in f32, then times the stride.
                    let x = (sigmoid(at(0, pos)) + col as f32) * r;
                    let y = (sigmoid(at(1, pos)) + row as f32) * r;
                    let w = (at(2, pos).exp() * anchor[0]) * r;
                    let h = (at(3, pos).exp() * anchor[1]) * r;
                    out.push([x, y, w, h, sigmoid(at(4, pos)), sigmoid(at(5, pos))]);
                }
            }
        }
    }
    out
}
// ANCHOR_END: decode

// ANCHOR: nms
/// The confidence filter and greedy NMS of one image's candidates; `None` when no candidate
/// passes the filter (the reference's "no detection list").
pub fn non_max_suppression(
    candidates: &[Candidate],
    conf_threshold: f32,
    nms_threshold: f32,
) -> Option<Vec<Detection>> {
    let mut kept: Vec<Detection> = candidates
        .iter()
        .filter(|c| c[4] >= conf_threshold)
        .map(|c| Detection {
            x1: c[0] - c[2] / 2.0,
            y1: c[1] - c[3] / 2.0,
            x2: c[0] + c[2] / 2.0,
            y2: c[1] + c[3] / 2.0,
            objectness: c[4],
            class_score: c[5],
            class: 0,
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    kept.sort_by(|a, b| b.objectness.total_cmp(&a.objectness)); // stable: ties keep decode order
    let mut out = Vec::new();
    while let Some((first, rest)) = kept.split_first() {
        let top = *first;
        out.push(top);
        let corners = |d: &Detection| [d.x1, d.y1, d.x2, d.y2];
        kept = rest.iter().copied().filter(|d| iou_plus_one(corners(&top), corners(d)) < nms_threshold).collect();
    }
    Some(out)
}
// ANCHOR_END: nms

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{Agreement, RESNET_FEATURES};
    use crate::tensor_file::{HostTensor, TensorFile};
    use crate::testing;

    /// The reference's own `ModelMain` (widths ÷ 32, `golden/reference/detection/gen_neck_case.py`):
    /// the three head outputs in training mode (batch statistics, updating the running ones)
    /// and then in evaluation mode, from the same C3/C4/C5; every weight of the case used.
    #[test]
    fn the_neck_matches_the_reference_model_main() {
        let dev = cpu_device();
        let file = TensorFile::read(&testing::golden("reference/detection/neck_case.safetensors")).unwrap();
        let mut weights = WeightReader::new(file.clone());
        let config = YoloNeckConfig { backbone_channels: [16, 32, 64], widths: [[16, 32], [8, 16], [4, 8]] };
        let neck = YoloNeck::<Cpu>::load(&config, &mut weights, &dev).unwrap();
        let unused: Vec<String> = weights.unused().into_iter().filter(|k| k.starts_with("embedding")).collect();
        assert!(unused.is_empty(), "{unused:?}");
        let input = |name: &str| file.tensors[name].to_tensor::<Cpu, 4>(&dev);
        for mode in [Mode::Train, Mode::Eval] {
            let outs = neck.forward(input("in.c3"), input("in.c4"), input("in.c5"), mode);
            let tag = if mode == Mode::Train { "train" } else { "eval" };
            for (i, out) in outs.into_iter().enumerate() {
                let name = format!("out.{tag}.{i}");
                let a = Agreement::measure(&name, &HostTensor::from_tensor(out), &file.tensors[&name], RESNET_FEATURES);
                assert!(a.ok, "{a}");
            }
        }
    }

    /// A head output with every logit at `fill`, `[1, 18, G, G]` for each scale.
    fn heads(fill: f32) -> [Vec<f32>; 3] {
        GRIDS.map(|g| vec![fill; 18 * g * g])
    }

    #[test]
    fn decoding_places_boxes_on_the_grid() {
        let h = heads(0.0);
        let c = decode([&h[0], &h[1], &h[2]], 0);
        assert_eq!(c.len(), 3 * (49 + 196 + 784));
        // Scale 0, anchor 0, row 0, col 0: centre (0.5·32, 0.5·32), size = anchor in pixels.
        assert!((c[0][0] - 16.0).abs() < 1e-5 && (c[0][1] - 16.0).abs() < 1e-5);
        assert!((c[0][2] - 62.461_54).abs() < 1e-3 && (c[0][3] - 48.461_54).abs() < 1e-3);
        // Row 1, col 2 of the same anchor.
        assert!((c[9][0] - 2.5 * 32.0).abs() < 1e-4 && (c[9][1] - 1.5 * 32.0).abs() < 1e-4);
        assert_eq!(c[0][4], 0.5);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let cands = vec![
            [50.0, 50.0, 20.0, 20.0, 0.6, 0.9],
            [51.0, 50.0, 20.0, 20.0, 0.9, 0.8], // overlaps the first, higher objectness
            [150.0, 150.0, 10.0, 10.0, 0.7, 0.5], // apart
            [10.0, 10.0, 10.0, 10.0, 0.49, 0.5], // below the threshold
        ];
        let kept = non_max_suppression(&cands, 0.5, 0.5).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].objectness, 0.9);
        assert_eq!(kept[1].objectness, 0.7);
        assert_eq!((kept[0].x1, kept[0].y2), (41.0, 60.0));
        assert!(non_max_suppression(&cands[3..], 0.5, 0.5).is_none());
    }
}
