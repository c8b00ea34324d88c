//! Detection (Table 2): a frozen ResNet-50 returning C3/C4/C5 at 224 px, the YOLOv3 neck and
//! heads ([`crate::model::yolo`]) trained with the YOLO loss ([`crate::loss::yolo`]), and mean
//! average precision over IoU 0.40:0.05:0.75 ([`crate::metrics::map`]) on the decoded,
//! NMS-filtered boxes, with the reference's image-inclusion rule ([`eval`]) and the standard
//! one beside it.
//!
//! `(C3, C4, C5) = f(x)`, `(o₀, o₁, o₂) = g(C3, C4, C5)`, `L = Σₛ L_s(oₛ, targets)`; only `g`
//! is trained (AdamW, wd 1e-6, constant learning rate), selected by `val_mAP` (max), early
//! stopping with patience 10, tested once with the best checkpoint.
//!
//! **The frozen backbone's BatchNorm.** The reference freezes the backbone's parameters but
//! never puts it in evaluation mode, so during training its BatchNorm layers normalise with
//! batch statistics and keep updating their running statistics, which validation and testing
//! (evaluation mode) then use. Faithful mode does the same ([`BackboneNorm::Train`]);
//! [`BackboneNorm::Frozen`] keeps the statistics as loaded.
//!
//! Book: "Detection". Reference: `mgca/models/ssl_detector.py`, `SSLDetector` (`shared_step`,
//! `configure_optimizers`) and `ModelMain`; `mgca/models/backbones/detector_backbone.py`,
//! `ResNetDetector`; `mgca/models/mgca/mgca_detector.py`, `cli()`; at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none in faithful mode (shuffles are this crate's seeded generators). The
//! standard inclusion and frozen statistics are options of ours.

pub mod eval;
pub mod experiment;
pub mod pictures;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use self::eval::{Inclusion, metric_images};
use super::finetune::{Evaluation, Stage, Task};
use super::linear::epoch_order;
use crate::backend::GradientLink;
use crate::data::detection::{DETECTION_SIDE, DetectionDataset};
use crate::loss::yolo::{TargetBox, YoloLossConfig, boxes_from_padded, yolo_loss, yolo_loss_host};
use crate::metrics::map::{DETECTION_IOU_THRESHOLDS, mean_average_precision};
use crate::model::batchnorm::Mode;
use crate::model::resnet::ResNet;
use crate::model::yolo::{Detection, YoloNeck, YoloNeckConfig, decode, non_max_suppression};
use crate::train::TrainError;
use crate::train::stopping::{Goal, Monitor};

/// The monitored quantity: `val_mAP`, higher is better.
pub const VAL_MAP: Monitor = Monitor { name: "val_mAP", goal: Goal::Max };
/// The confidence filter before NMS (`conf_thres`).
pub const CONF_THRESHOLD: f32 = 0.5;
/// NMS drops boxes whose "+1" IoU with a kept one reaches this (`nms_thres`).
pub const NMS_THRESHOLD: f32 = 0.5;
/// Columns of a detection row in [`Evaluation::outputs`]: image, x1, y1, x2, y2, objectness,
/// class score, class.
pub const DETECTION_COLUMNS: usize = 8;

/// What the frozen backbone's BatchNorm does during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackboneNorm {
    /// Batch statistics, running statistics updated (the reference: the backbone stays in
    /// training mode).
    #[default]
    Train,
    /// Running statistics as loaded, never updated.
    Frozen,
}

// ANCHOR: detector
/// The detector: the backbone (parameters frozen, BatchNorm statistics possibly updating) and
/// the trainable neck and heads.
#[derive(Module, Debug)]
pub struct Detector<B: Backend> {
    backbone: ResNet<B>,
    neck: YoloNeck<B>,
}

impl<B: Backend> Detector<B> {
    /// A detector on `backbone` (its up-sampling removed: detection reads 224 px directly) with
    /// a freshly initialised neck sized for it.
    pub fn new(backbone: ResNet<B>, neck: &YoloNeckConfig, device: &B::Device) -> Self {
        let backbone = backbone.without_upsampling().no_grad();
        Self { backbone, neck: neck.init(device) }
    }

    /// The neck of a backbone: the reference's widths on ResNet-50's channels, the smoke
    /// widths on anything smaller.
    pub fn neck_config(backbone: &ResNet<B>) -> YoloNeckConfig {
        let channels = backbone.pyramid_channels();
        if channels == YoloNeckConfig::resnet50().backbone_channels {
            YoloNeckConfig::resnet50()
        } else {
            YoloNeckConfig::smoke(channels)
        }
    }

    /// The three heads' raw outputs. `[N, 3, 224, 224]` → `[N, 18, 7, 7]`, `[N, 18, 14, 14]`,
    /// `[N, 18, 28, 28]`. The pyramid is detached: no gradient reaches the backbone.
    pub fn forward(&self, images: Tensor<B, 4>, backbone: Mode, neck: Mode) -> [Tensor<B, 4>; 3] {
        let [c3, c4, c5] = self.backbone.pyramid(images, backbone);
        self.neck.forward(c3.detach(), c4.detach(), c5.detach(), neck)
    }

    /// The backbone (for checks that it stays frozen).
    pub fn backbone(&self) -> &ResNet<B> {
        &self.backbone
    }
}
// ANCHOR_END: detector

/// The three splits a detector trains, validates and tests on.
pub struct DetectionSplits {
    pub train: DetectionDataset,
    pub valid: DetectionDataset,
    pub test: DetectionDataset,
}

/// One training batch.
pub struct DetectionBatch<B: Backend> {
    /// `[N, 3, 224, 224]`
    pub images: Tensor<B, 4>,
    /// Each image's boxes.
    pub boxes: Vec<Vec<TargetBox>>,
}

/// Batches prepared ahead by the image loader.
const PREFETCH: usize = 2;

/// The detection task for the shared loop.
pub struct DetectionTask<B: AutodiffBackend> {
    splits: DetectionSplits,
    batch: usize,
    norm: BackboneNorm,
    /// Which images `val_mAP` (and selection) sees.
    pub inclusion: Inclusion,
    loss: YoloLossConfig,
    device: B::Device,
}

/// An evaluation's detections and ground truth, per image in split order.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionOutputs {
    /// `None`: nothing passed the confidence filter.
    pub detections: Vec<Option<Vec<Detection>>>,
    pub truth: Vec<Vec<TargetBox>>,
}

impl DetectionOutputs {
    /// Rebuild from an [`Evaluation`]'s `outputs` (`[D, 8]` rows) and `targets` (`[N, T·5]`).
    pub fn from_evaluation(e: &Evaluation, rows_per_image: usize) -> Self {
        let n = e.targets.len() / (rows_per_image * 5);
        let truth = boxes_from_padded(&e.targets, n, rows_per_image);
        let mut detections: Vec<Option<Vec<Detection>>> = vec![None; n];
        for r in e.outputs.chunks(DETECTION_COLUMNS) {
            let d = Detection {
                x1: r[1],
                y1: r[2],
                x2: r[3],
                y2: r[4],
                objectness: r[5],
                class_score: r[6],
                class: r[7] as usize,
            };
            detections[r[0] as usize].get_or_insert_with(Vec::new).push(d);
        }
        Self { detections, truth }
    }

    /// mAP (mean over the eight thresholds) of the images at `rows` (repeats allowed) under
    /// `rule`; −1 when no included image has a ground-truth box.
    pub fn map(&self, rows: &[usize], rule: Inclusion) -> f64 {
        let detections: Vec<Option<Vec<Detection>>> = rows.iter().map(|&r| self.detections[r].clone()).collect();
        let truth: Vec<Vec<TargetBox>> = rows.iter().map(|&r| self.truth[r].clone()).collect();
        mean_average_precision(&metric_images(&detections, &truth, rule), &DETECTION_IOU_THRESHOLDS).map as f64
    }
}

impl<B: AutodiffBackend> DetectionTask<B> {
    pub fn new(
        splits: DetectionSplits,
        batch: usize,
        norm: BackboneNorm,
        inclusion: Inclusion,
        device: &B::Device,
    ) -> Self {
        Self { splits, batch, norm, inclusion, loss: YoloLossConfig::reference(), device: device.clone() }
    }

    fn split(&self, stage: Stage) -> &DetectionDataset {
        match stage {
            Stage::Valid => &self.splits.valid,
            Stage::Test => &self.splits.test,
        }
    }

    /// The test split (for pictures).
    pub fn test_split(&self) -> &DetectionDataset {
        &self.splits.test
    }

    /// Run `model` (evaluation mode throughout) over `stage`: the mean loss, every image's
    /// detections as `[D, 8]` rows and its padded targets.
    pub fn detect(&self, model: &Detector<B::InnerBackend>, stage: Stage) -> Result<Evaluation, TrainError> {
        let data = self.split(stage);
        let drop_last = stage == Stage::Valid;
        let t = data.rows_per_image;
        let (mut outputs, mut targets, mut loss_sum, mut n) = (Vec::new(), Vec::new(), 0.0, 0usize);
        for batch in data.batches(data.usable_rows(), self.batch, drop_last, PREFETCH) {
            let b = batch?;
            let rows = b.rows.len();
            let images = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(b.images, [rows, 3, DETECTION_SIDE, DETECTION_SIDE]),
                &self.device,
            );
            let heads = model.forward(images, Mode::Eval, Mode::Eval);
            let values: Vec<Vec<f32>> =
                heads.into_iter().map(|h| h.into_data().to_vec::<f32>().expect("f32 heads")).collect();
            let boxes = boxes_from_padded(&b.targets, rows, t);
            let parts = yolo_loss_host([&values[0], &values[1], &values[2]], &boxes, &self.loss, 1.0);
            let loss: f64 = parts.iter().map(|(terms, _)| terms.total).sum();
            loss_sum += loss * rows as f64;
            for k in 0..rows {
                let candidates = decode([&values[0], &values[1], &values[2]], k);
                for d in non_max_suppression(&candidates, CONF_THRESHOLD, NMS_THRESHOLD).into_iter().flatten() {
                    outputs.extend([
                        (n + k) as f32,
                        d.x1,
                        d.y1,
                        d.x2,
                        d.y2,
                        d.objectness,
                        d.class_score,
                        d.class as f32,
                    ]);
                }
            }
            targets.extend(b.targets);
            n += rows;
        }
        if n == 0 {
            return Err(TrainError::Config(format!(
                "the {} split has no full batch of {} images",
                if drop_last { "validation" } else { "test" },
                self.batch
            )));
        }
        Ok(Evaluation { loss: loss_sum / n as f64, score: f64::NAN, outputs, targets })
    }
}

impl<B: AutodiffBackend + GradientLink> Task<B> for DetectionTask<B> {
    type Model = Detector<B>;
    type Batch = DetectionBatch<B>;

    fn score_name(&self) -> &'static str {
        "mAP"
    }

    fn train_batches(
        &self,
        epoch: usize,
        seed: u64,
    ) -> Box<dyn Iterator<Item = Result<DetectionBatch<B>, TrainError>> + '_> {
        let data = &self.splits.train;
        let order = epoch_order(&data.usable_rows(), seed, epoch);
        let t = data.rows_per_image;
        Box::new(data.batches(order, self.batch, true, PREFETCH).map(move |b| {
            let b = b.map_err(TrainError::from)?;
            let rows = b.rows.len();
            let images =
                Tensor::from_data(TensorData::new(b.images, [rows, 3, DETECTION_SIDE, DETECTION_SIDE]), &self.device);
            Ok(DetectionBatch { images, boxes: boxes_from_padded(&b.targets, rows, t) })
        }))
    }

    fn loss(&self, model: &Detector<B>, batch: &DetectionBatch<B>) -> Tensor<B, 1> {
        let backbone = match self.norm {
            BackboneNorm::Train => Mode::Train,
            BackboneNorm::Frozen => Mode::Eval,
        };
        let heads = model.forward(batch.images.clone(), backbone, Mode::Train);
        yolo_loss(heads, &batch.boxes, &self.loss).loss
    }

    fn evaluate(
        &self,
        model: &<Detector<B> as AutodiffModule<B>>::InnerModule,
        stage: Stage,
    ) -> Result<Evaluation, TrainError> {
        let mut evaluation = self.detect(model, stage)?;
        let outputs = DetectionOutputs::from_evaluation(&evaluation, self.split(stage).rows_per_image);
        let all: Vec<usize> = (0..outputs.truth.len()).collect();
        evaluation.score = outputs.map(&all, self.inclusion);
        Ok(evaluation)
    }
}

/// The mean loss of one batch as a plain number (tests, benches).
pub fn loss_value<B: AutodiffBackend + GradientLink>(
    task: &DetectionTask<B>,
    model: &Detector<B>,
    batch: &DetectionBatch<B>,
) -> f64 {
    task.loss(model, batch).into_scalar().elem()
}

#[cfg(test)]
mod tests;
