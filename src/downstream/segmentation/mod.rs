//! Segmentation (Table 2): the U-Net of segmentation-models-pytorch on the frozen ResNet-50
//! ([`crate::model::unet`]) or the SETR-style decoder on the frozen ViT-B/16's tokens
//! ([`crate::model::setr`]), trained with `L = 10·FL − ln DC` ([`crate::loss::segmentation`]),
//! scored by Dice with the reference's empty-mask rule and per-batch averaging
//! ([`crate::metrics::dice`]).
//!
//! Only the decoder and head train (AdamW, weight decay 0.05, constant learning rate), the best
//! five checkpoints by `val_loss` are kept, early stopping has patience 10, and the test set is
//! scored once with the best. As in detection, the reference freezes the encoder's parameters
//! but leaves it in training mode, so its BatchNorm statistics drift
//! ([`BackboneNorm::Train`]; [`BackboneNorm::Frozen`] keeps them).
//!
//! Book: "Segmentation". Reference: `mgca/models/ssl_segmenter.py`, `SSLSegmenter`
//! (`shared_step`, `get_dice`, `shared_epoch_end`, `configure_optimizers`), and
//! `mgca/models/mgca/mgca_segmenter.py`, `cli()`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none in faithful mode (augmentation draws and shuffles are this crate's
//! seeded generators).

pub mod experiment;
pub mod pictures;

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::detection::BackboneNorm;
use super::finetune::{Evaluation, Stage, Task};
use super::linear::epoch_order;
use crate::data::segmentation::SegmentationDataset;
use crate::loss::segmentation::{SegmentationLossConfig, segmentation_loss};
use crate::metrics::dice::{dice_epoch, dice_per_image};
use crate::model::batchnorm::Mode;
use crate::model::setr::SetrModel;
use crate::model::unet::Unet;
use crate::train::TrainError;

// ANCHOR: segmenter
/// The two segmenters of the reference (`--base_model resnet50` and `vit`).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per run; burn's derive wants the modules inline
pub enum Segmenter<B: Backend> {
    /// segmentation-models-pytorch's U-Net on the frozen ResNet-50.
    Unet(Unet<B>),
    /// The SETR-style decoder on the frozen ViT-B/16.
    Setr(SetrModel<B>),
}

impl<B: Backend> Segmenter<B> {
    /// Logits `[N, S, S]` of images `[N, 3, S, S]`: the frozen encoder's BatchNorm (ResNet
    /// only; the ViT has none) in `encoder` mode, the decoder's in `decoder` mode.
    pub fn forward(&self, images: Tensor<B, 4>, encoder: Mode, decoder: Mode) -> Tensor<B, 3> {
        match self {
            Self::Unet(unet) => unet.forward(images, encoder, decoder, true),
            Self::Setr(setr) => setr.forward(images, decoder),
        }
    }
}
// ANCHOR_END: segmenter

/// The three splits.
pub struct SegmentationSplits {
    pub train: SegmentationDataset,
    pub valid: SegmentationDataset,
    pub test: SegmentationDataset,
}

/// One training batch.
pub struct SegmentationBatch<B: Backend> {
    /// `[N, 3, S, S]`
    pub images: Tensor<B, 4>,
    /// `[N, S, S]`
    pub masks: Tensor<B, 3>,
}

/// Batches prepared ahead by the loader.
const PREFETCH: usize = 2;

/// The segmentation task for the shared loop.
pub struct SegmentationTask<B: AutodiffBackend> {
    splits: SegmentationSplits,
    batch: usize,
    norm: BackboneNorm,
    loss: SegmentationLossConfig,
    device: B::Device,
}

fn images<B: Backend>(values: Vec<f32>, n: usize, side: usize, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, [n, 3, side, side]), device)
}

fn masks<B: Backend>(values: Vec<f32>, n: usize, side: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values, [n, side, side]), device)
}

impl<B: AutodiffBackend> SegmentationTask<B> {
    pub fn new(splits: SegmentationSplits, batch: usize, norm: BackboneNorm, device: &B::Device) -> Self {
        Self { splits, batch, norm, loss: SegmentationLossConfig::reference(), device: device.clone() }
    }

    /// The test split (for pictures).
    pub fn test_split(&self) -> &SegmentationDataset {
        &self.splits.test
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    // ANCHOR: evaluate
    /// Run `model` (evaluation mode) over `stage`: the mean loss, each image's Dice
    /// (`outputs`, in split order) and the epoch Dice (the mean of per-batch means).
    pub fn score(&self, model: &Segmenter<B::InnerBackend>, stage: Stage) -> Result<Evaluation, TrainError> {
        let data = match stage {
            Stage::Valid => &self.splits.valid,
            Stage::Test => &self.splits.test,
        };
        let side = data.side();
        let drop_last = stage == Stage::Valid;
        let (mut per_image, mut loss_sum, mut n) = (Vec::new(), 0.0, 0usize);
        for batch in data.batches((0..data.len()).collect(), self.batch, false, drop_last, 0, PREFETCH) {
            let b = batch?;
            let rows = b.rows.len();
            let target = masks::<B::InnerBackend>(b.masks.clone(), rows, side, &self.device);
            let logits = model.forward(images(b.images, rows, side, &self.device), Mode::Eval, Mode::Eval);
            let loss: f64 = segmentation_loss(logits.clone(), target, &self.loss).loss.into_scalar().elem();
            loss_sum += loss * rows as f64;
            n += rows;
            let probs = sigmoid(logits).into_data().to_vec::<f32>().expect("f32 logits");
            per_image.extend(dice_per_image(&probs, &b.masks, rows).map_err(|e| TrainError::Config(e.to_string()))?);
        }
        if n == 0 {
            return Err(TrainError::Config(format!(
                "the {} split has no full batch of {} images",
                if drop_last { "validation" } else { "test" },
                self.batch
            )));
        }
        let score = dice_epoch(&per_image, self.batch).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(Evaluation { loss: loss_sum / n as f64, score, outputs: per_image, targets: Vec::new() })
    }
    // ANCHOR_END: evaluate
}

impl<B: AutodiffBackend> Task<B> for SegmentationTask<B> {
    type Model = Segmenter<B>;
    type Batch = SegmentationBatch<B>;

    fn score_name(&self) -> &'static str {
        "dice"
    }

    fn train_batches(
        &self,
        epoch: usize,
        seed: u64,
    ) -> Box<dyn Iterator<Item = Result<SegmentationBatch<B>, TrainError>> + '_> {
        let data = &self.splits.train;
        let rows: Vec<usize> = (0..data.len()).collect();
        let order = epoch_order(&rows, seed, epoch);
        let augment_seed = (seed as u32).wrapping_mul(31).wrapping_add(epoch as u32).wrapping_mul(0x2545_f491);
        let side = data.side();
        Box::new(data.batches(order, self.batch, true, true, augment_seed, PREFETCH).map(move |b| {
            let b = b.map_err(TrainError::from)?;
            let n = b.rows.len();
            Ok(SegmentationBatch {
                images: images(b.images, n, side, &self.device),
                masks: masks(b.masks, n, side, &self.device),
            })
        }))
    }

    fn loss(&self, model: &Segmenter<B>, batch: &SegmentationBatch<B>) -> Tensor<B, 1> {
        let encoder = match self.norm {
            BackboneNorm::Train => Mode::Train,
            BackboneNorm::Frozen => Mode::Eval,
        };
        let logits = model.forward(batch.images.clone(), encoder, Mode::Train);
        segmentation_loss(logits, batch.masks.clone(), &self.loss).loss
    }

    fn evaluate(
        &self,
        model: &<Segmenter<B> as AutodiffModule<B>>::InnerModule,
        stage: Stage,
    ) -> Result<Evaluation, TrainError> {
        self.score(model, stage)
    }
}
