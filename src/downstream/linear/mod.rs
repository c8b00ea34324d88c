//! Linear probing: a frozen image encoder, one linear layer on its global feature, trained on a
//! fraction of a labelled dataset's training split.
//!
//! `z = f(x)` (ViT: the final-LayerNorm class token, `D = 768`; ResNet-50: layer 4 average-
//! pooled after up-sampling the input to 299 px, `D = 2048`), `ŷ = W z + b` with `C` outputs.
//! Loss: binary cross-entropy with logits, mean over `N × C` (CheXpert's 5 tasks, RSNA's 1):
//! `ℓ = mean(max(ŷ, 0) − ŷ y + log(1 + e^{−|ŷ|}))`; softmax cross-entropy with the class index
//! (COVIDx, 3 classes): `ℓ = mean(−ŷ_y + log Σ_c e^{ŷ_c})`. Scores: macro AUROC of the sigmoid
//! outputs (CheXpert, RSNA), top-1 accuracy (COVIDx).
//!
//! The encoder is in eval mode for every batch (ResNet's BatchNorm uses its running
//! statistics) and runs without autodiff; only `W, b` get gradients.
//!
//! **Feature modes.** *Faithful* recomputes the features of every training batch from its
//! freshly transformed images each epoch, as the reference does. *Cached* computes the features
//! of every image once, with the centre crop (the validation and test transform), and trains
//! the head on those: validation and test features are then identical to the faithful ones,
//! but training sees one fixed view per image instead of a new random crop (RSNA, COVIDx) or
//! moco-v2 view (CheXpert) each epoch, so the head and the test number differ.
//!
//! Book: "Linear probing". Reference: `mgca/models/ssl_finetuner.py`, `SSLFineTuner`
//! (`training_step`, `validation_step`, `test_step`, `shared_step`, `configure_optimizers`)
//! and `SSLEvaluator`; `mgca/models/mgca/mgca_finetuner.py`, `cli()`; at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none in faithful mode (the shuffles and crops are this crate's generators,
//! seeded, so they differ from torch's by chance, not in distribution). Cached mode is ours.

pub mod experiment;

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, sigmoid, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::finetune::{Evaluation, Stage, Task};
use crate::data::augment::MocoV2Config;
use crate::data::cache::{Crop, Transform};
use crate::data::labelled::LabelledDataset;
use crate::data::prepare::Dataset;
use crate::data::sampling::LegacyRng;
use crate::metrics::accuracy::accuracy;
use crate::metrics::auroc::auroc_macro;
use crate::metrics::{Matrix, MetricError};
use crate::model::batchnorm::Mode;
use crate::model::mgca::ImageEncoder;
use crate::train::TrainError;

/// How the head's loss is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadLoss {
    /// Binary cross-entropy with logits over `C` independent outputs.
    Bce,
    /// Softmax cross-entropy over `C` classes (the target is the class index).
    CrossEntropy,
}

/// Where the training features come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMode {
    /// Recomputed every epoch from the transformed images (the reference).
    #[default]
    Faithful,
    /// Computed once per image with the centre crop.
    Cached,
}

/// A dataset's linear-probing task: outputs, loss and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeTask {
    pub dataset: Dataset,
    /// C.
    pub classes: usize,
    pub loss: HeadLoss,
    /// The score's name in logs and reports (`auc`, `acc`).
    pub score: &'static str,
}

impl ProbeTask {
    /// CheXpert (5 tasks, BCE, macro AUROC), RSNA (1 output, BCE, AUROC), COVIDx (3 classes,
    /// cross-entropy, accuracy).
    pub fn of(dataset: Dataset) -> Result<Self, String> {
        match dataset {
            Dataset::Chexpert => Ok(Self { dataset, classes: 5, loss: HeadLoss::Bce, score: "auc" }),
            Dataset::Rsna => Ok(Self { dataset, classes: 1, loss: HeadLoss::Bce, score: "auc" }),
            Dataset::Covidx => Ok(Self { dataset, classes: 3, loss: HeadLoss::CrossEntropy, score: "acc" }),
            other => Err(format!("{other:?} has no linear-classification task")),
        }
    }

    /// The score of `outputs` (`[N, C]` probabilities) against `targets` (`[N, T]`).
    pub fn score(&self, outputs: &[f32], targets: &[f32]) -> Result<f64, MetricError> {
        let n = targets.len() / self.target_columns();
        let scores = Matrix::new(outputs, n, self.classes)?;
        match self.loss {
            HeadLoss::Bce => auroc_macro(scores, Matrix::new(targets, n, self.classes)?),
            HeadLoss::CrossEntropy => {
                let labels: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
                accuracy(scores, &labels)
            }
        }
    }

    /// Target columns per image: C for BCE, 1 (the class index) for cross-entropy.
    pub fn target_columns(&self) -> usize {
        match self.loss {
            HeadLoss::Bce => self.classes,
            HeadLoss::CrossEntropy => 1,
        }
    }
}

// ANCHOR: head
/// The probe: one linear layer (PyTorch's default initialisation, `U(−1/√D, 1/√D)` for
/// weights and bias; the reference's dropout before it has p = 0).
#[derive(Module, Debug)]
pub struct LinearHead<B: Backend> {
    linear: Linear<B>,
}

impl<B: Backend> LinearHead<B> {
    /// A head from `features` to `classes` outputs, drawn from `U(−1/√D, 1/√D)` by a generator
    /// seeded with `seed` (weights row by row, then the bias), so that a run's head does not
    /// depend on what else draws from the backend's generator.
    pub fn new(features: usize, classes: usize, seed: u64, device: &B::Device) -> Self {
        let mut rng = LegacyRng::new(seed as u32 ^ 0x5bd1_e995);
        let k = 1.0 / (features as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n).map(|_| (k * (2.0 * rng.next_u32() as f64 / 4_294_967_296.0 - 1.0)) as f32).collect()
        };
        let weight = Tensor::from_data(TensorData::new(draw(features * classes), [features, classes]), device);
        let bias = Tensor::from_data(TensorData::new(draw(classes), [classes]), device);
        let mut linear = LinearConfig::new(features, classes).init(device);
        linear.weight = Param::from_tensor(weight);
        linear.bias = Some(Param::from_tensor(bias));
        Self { linear }
    }

    /// Logits. `[N, D]` → `[N, C]`
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(features)
    }
}
// ANCHOR_END: head

// ANCHOR: losses
/// The mean loss of logits `[N, C]` against targets (`[N, C]` 0/1, or `[N]` class indices).
pub fn head_loss<B: Backend>(loss: HeadLoss, logits: Tensor<B, 2>, targets: &[f32]) -> Tensor<B, 1> {
    let device = logits.device();
    let [n, c] = logits.dims();
    match loss {
        HeadLoss::Bce => {
            let y = Tensor::<B, 2>::from_data(TensorData::new(targets.to_vec(), [n, c]), &device);
            // max(x, 0) − x·y + log(1 + e^{−|x|}): no overflow for any x.
            let per = logits.clone().clamp_min(0.0) - logits.clone() * y + logits.abs().neg().exp().log1p();
            per.mean()
        }
        HeadLoss::CrossEntropy => {
            let labels: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
            let index = Tensor::<B, 2, Int>::from_data(TensorData::new(labels, [n, 1]), &device);
            let picked = log_softmax(logits, 1).gather(1, index); // [N, 1]
            picked.neg().mean()
        }
    }
}
// ANCHOR_END: losses

/// The reference's transform of a split at crop side `crop` (224 for the real encoders):
/// CheXpert's moco-v2 style augmentation and the others' random crop for training, the centre
/// crop otherwise.
pub fn probe_transform(dataset: Dataset, train: bool, crop: usize) -> Transform {
    match (dataset, train) {
        (Dataset::Chexpert, true) => Transform::MocoV2(MocoV2Config { crop, ..MocoV2Config::default() }),
        (_, true) => Transform::Crop { mode: Crop::Random, size: crop },
        _ => Transform::Crop { mode: Crop::Centre, size: crop },
    }
}

/// The splits a probe trains, validates and tests on.
pub struct ProbeSplits {
    pub train: LabelledDataset,
    pub valid: LabelledDataset,
    pub test: LabelledDataset,
}

/// One training batch: frozen features and targets.
pub struct ProbeBatch<B: AutodiffBackend> {
    /// `[N, D]`, no gradient.
    pub features: Tensor<B::InnerBackend, 2>,
    /// `[N, T]` row-major.
    pub targets: Vec<f32>,
}

/// Features of every usable row of a split, computed once (cached mode).
struct SplitFeatures<B: Backend> {
    /// `[R, D]`
    features: Tensor<B, 2>,
    targets: Vec<f32>,
}

/// The linear-probing task for the shared loop.
pub struct LinearProbe<B: AutodiffBackend> {
    pub task: ProbeTask,
    encoder: ImageEncoder<B::InnerBackend>,
    splits: ProbeSplits,
    crop: usize,
    batch: usize,
    mode: FeatureMode,
    cached: Option<[SplitFeatures<B::InnerBackend>; 3]>,
    device: B::Device,
}

/// Batches prepared ahead by the image loaders.
const PREFETCH: usize = 2;

/// The epoch's order of `rows`: a permutation seeded by the run's seed and the epoch.
pub fn epoch_order(rows: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = LegacyRng::new((seed as u32) ^ (epoch as u32 + 1).wrapping_mul(0x9e37_79b9));
    rng.permutation(rows.len()).into_iter().map(|i| rows[i]).collect()
}

fn crop_seed(seed: u64, epoch: usize) -> u32 {
    (seed as u32).wrapping_mul(31).wrapping_add(epoch as u32).wrapping_mul(0x27d4_eb2f)
}

impl<B: AutodiffBackend> LinearProbe<B> {
    /// A probe of `encoder` on `splits` at crop side `crop`; in cached mode every split's
    /// features are computed here.
    pub fn new(
        task: ProbeTask,
        encoder: ImageEncoder<B::InnerBackend>,
        splits: ProbeSplits,
        crop: usize,
        batch: usize,
        mode: FeatureMode,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let mut probe = Self { task, encoder, splits, crop, batch, mode, cached: None, device: device.clone() };
        if mode == FeatureMode::Cached {
            let all = |d: &LabelledDataset| probe.split_features(d);
            probe.cached = Some([all(&probe.splits.train)?, all(&probe.splits.valid)?, all(&probe.splits.test)?]);
        }
        Ok(probe)
    }

    /// The frozen encoder's global feature of normalised images (eval mode, no autodiff).
    /// `[N, 3, S, S]` values → `[N, D]`
    pub fn features(&self, images: Vec<f32>, n: usize) -> Tensor<B::InnerBackend, 2> {
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(images, [n, 3, self.crop, self.crop]),
            &self.device,
        );
        self.encoder.forward(x, Mode::Eval).global
    }

    /// Faithful or cached features.
    pub fn mode(&self) -> FeatureMode {
        self.mode
    }

    /// The feature width D.
    pub fn feature_dim(&self) -> usize {
        self.features(vec![0.0; 3 * self.crop * self.crop], 1).dims()[1]
    }

    fn split_features(&self, data: &LabelledDataset) -> Result<SplitFeatures<B::InnerBackend>, TrainError> {
        let transform = probe_transform(self.task.dataset, false, self.crop);
        let (mut parts, mut targets) = (Vec::new(), Vec::new());
        for batch in data.batches(data.usable_rows(), self.batch, transform, false, 0, PREFETCH) {
            let b = batch?;
            parts.push(self.features(b.images, b.rows.len()));
            targets.extend(b.targets);
        }
        let features =
            if parts.is_empty() { Tensor::empty([0, self.feature_dim()], &self.device) } else { Tensor::cat(parts, 0) };
        Ok(SplitFeatures { features, targets })
    }

    fn stage_data(&self, stage: Stage) -> (&LabelledDataset, usize) {
        match stage {
            Stage::Valid => (&self.splits.valid, 1),
            Stage::Test => (&self.splits.test, 2),
        }
    }

    /// Logits of the head on every evaluated image of `stage`: outputs (probabilities) and the
    /// mean loss.
    fn outputs(&self, head: &LinearHead<B::InnerBackend>, stage: Stage) -> Result<Evaluation, TrainError> {
        let drop_last = stage == Stage::Valid;
        let (data, slot) = self.stage_data(stage);
        let mut batches: Vec<(Tensor<B::InnerBackend, 2>, Vec<f32>)> = Vec::new();
        match &self.cached {
            Some(cached) => {
                let split = &cached[slot];
                let rows = split.features.dims()[0];
                let keep = if drop_last { rows / self.batch * self.batch } else { rows };
                let t = self.task.target_columns();
                for start in (0..keep).step_by(self.batch) {
                    let end = (start + self.batch).min(keep);
                    batches.push((
                        split.features.clone().narrow(0, start, end - start),
                        split.targets[start * t..end * t].to_vec(),
                    ));
                }
            }
            None => {
                let transform = probe_transform(self.task.dataset, false, self.crop);
                for batch in data.batches(data.usable_rows(), self.batch, transform, drop_last, 0, PREFETCH) {
                    let b = batch?;
                    batches.push((self.features(b.images, b.rows.len()), b.targets));
                }
            }
        }
        let (mut outputs, mut targets, mut loss_sum, mut n) = (Vec::new(), Vec::new(), 0.0, 0usize);
        for (features, t) in batches {
            let rows = features.dims()[0];
            let logits = head.forward(features);
            let loss: f32 = head_loss(self.task.loss, logits.clone(), &t).into_scalar().elem();
            loss_sum += loss as f64 * rows as f64;
            n += rows;
            let probs = match self.task.loss {
                HeadLoss::Bce => sigmoid(logits),
                HeadLoss::CrossEntropy => softmax(logits, 1),
            };
            outputs.extend(probs.into_data().to_vec::<f32>().expect("f32 outputs"));
            targets.extend(t);
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

impl<B: AutodiffBackend> Task<B> for LinearProbe<B> {
    type Model = LinearHead<B>;
    type Batch = ProbeBatch<B>;

    fn score_name(&self) -> &'static str {
        self.task.score
    }

    fn train_batches(
        &self,
        epoch: usize,
        seed: u64,
    ) -> Box<dyn Iterator<Item = Result<ProbeBatch<B>, TrainError>> + '_> {
        let data = &self.splits.train;
        match &self.cached {
            Some(cached) => {
                let split = &cached[0];
                let rows: Vec<usize> = (0..split.features.dims()[0]).collect();
                let order = epoch_order(&rows, seed, epoch);
                let t = self.task.target_columns();
                let full = order.len() / self.batch * self.batch;
                let chunks: Vec<Vec<usize>> = order[..full].chunks(self.batch).map(<[usize]>::to_vec).collect();
                Box::new(chunks.into_iter().map(move |chunk| {
                    let index: Vec<i64> = chunk.iter().map(|&r| r as i64).collect();
                    let index = Tensor::<B::InnerBackend, 1, Int>::from_data(
                        TensorData::new(index, [chunk.len()]),
                        &self.device,
                    );
                    let targets = chunk.iter().flat_map(|&r| split.targets[r * t..(r + 1) * t].to_vec()).collect();
                    Ok(ProbeBatch { features: split.features.clone().select(0, index), targets })
                }))
            }
            None => {
                let order = epoch_order(&data.usable_rows(), seed, epoch);
                let transform = probe_transform(self.task.dataset, true, self.crop);
                let batches = data.batches(order, self.batch, transform, true, crop_seed(seed, epoch), PREFETCH);
                Box::new(batches.map(move |b| {
                    let b = b.map_err(TrainError::from)?;
                    Ok(ProbeBatch { features: self.features(b.images, b.rows.len()), targets: b.targets })
                }))
            }
        }
    }

    fn loss(&self, model: &LinearHead<B>, batch: &ProbeBatch<B>) -> Tensor<B, 1> {
        let features = Tensor::<B, 2>::from_inner(batch.features.clone());
        head_loss(self.task.loss, model.forward(features), &batch.targets)
    }

    fn evaluate(&self, model: &LinearHead<B::InnerBackend>, stage: Stage) -> Result<Evaluation, TrainError> {
        let mut evaluation = self.outputs(model, stage)?;
        evaluation.score = match self.task.score(&evaluation.outputs, &evaluation.targets) {
            Ok(score) => score,
            // Validation scores are logged, not used for selection: an undefined one is NaN.
            Err(MetricError::OneClass { .. }) if stage == Stage::Valid => f64::NAN,
            Err(e) => return Err(TrainError::Config(format!("the test {}: {e}", self.task.score))),
        };
        Ok(evaluation)
    }
}

#[cfg(test)]
mod tests;
