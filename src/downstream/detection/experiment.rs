//! Detection experiment files (`reproductions/configs/detection/*.toml`: one per cell of the
//! paper's Table 2 detection columns) and running one cell: data prepared and cached at 224 px,
//! the backbone loaded, an untrained detector scored on the test split, the shared loop run
//! with `val_mAP` selection, the best checkpoint tested (faithful and standard mAP with
//! bootstrap intervals, the gain over the untrained head with its one-sided bootstrap p-value),
//! pictures of a few test images, and `test.json`.
//!
//! A file names the dataset, the label fraction, the inclusion rule that drives `val_mAP`, the
//! backbone's BatchNorm behaviour and where the encoder comes from, and may override the
//! loop's values in `[finetune]` (the 1 % runs: lr and batch). The paper tier runs the file on
//! the real data (`--data DIR` with `rsna/` and `object-CXR/`, the latter with the Shapely
//! table `polygon_boxes.csv` beside its CSVs when it has polygon annotations); the smoke tier
//! runs it on the synthetic datasets with the smoke loop values and the smoke ResNet
//! pretraining (`pretrain-smoke-resnet`) as the backbone.
//!
//! Book: "Detection" (training and the report). Reference: `mgca/models/mgca/mgca_detector.py`,
//! `cli()`, and `mgca/models/mgca/run_det_finetune.sh` (the six runs), at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::eval::Inclusion;
use super::{BackboneNorm, DetectionOutputs, DetectionSplits, DetectionTask, Detector, VAL_MAP};
use crate::backend::GradientLink;
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::data::cache::{Geometry, build_with};
use crate::data::detection::{DETECTION_SIDE, DetectionDataset};
use crate::data::prepare::{Dataset, OnBad, PrepareOptions, Task as DataTask, prepare};
use crate::data::{DataError, synth};
use crate::downstream::encoder::{EncoderSource, load_encoder};
pub use crate::downstream::finetune::CellOptions;
use crate::downstream::finetune::{FinetuneConfig, Stage, finetune};
use crate::downstream::linear::experiment::{Fraction, SMOKE_DATA, run_folder};
use crate::experiment::{Tier, check_run_name};
use crate::metrics::MetricError;
use crate::metrics::bootstrap::{BootstrapConfig, bootstrap};
use crate::model::mgca::ImageEncoder;
use crate::train::TrainError;

/// Test images drawn with their boxes into the run folder.
pub const PICTURES: usize = 4;

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionExperiment {
    /// The run folder's name.
    pub name: String,
    /// What it reproduces, in a sentence.
    pub reproduces: String,
    /// `rsna` or `object_cxr`.
    pub dataset: Dataset,
    pub fraction: Fraction,
    /// Which images `val_mAP` sees (selection and early stopping): the reference's rule by
    /// default. Both test numbers are reported either way.
    #[serde(default = "faithful")]
    pub inclusion: Inclusion,
    /// The frozen backbone's BatchNorm during training.
    #[serde(default)]
    pub backbone_norm: BackboneNorm,
    /// Where the ResNet-50 comes from (paper tier).
    pub encoder: EncoderSource,
    /// Overrides of the loop's reference values, e.g. `learning_rate = 2e-4`.
    #[serde(default)]
    pub finetune: toml::Table,
}

fn faithful() -> Inclusion {
    Inclusion::Faithful
}

/// The loop's values for detection.
pub fn reference_finetune() -> FinetuneConfig {
    FinetuneConfig { batch_size: 16, learning_rate: 5e-4, ..FinetuneConfig::reference() }
}

/// The smoke tier's loop: a CPU minute per cell on the synthetic data.
pub fn smoke_finetune() -> FinetuneConfig {
    FinetuneConfig { max_epochs: 20, patience: 10, batch_size: 8, learning_rate: 5e-3, ..FinetuneConfig::reference() }
}

/// A cell ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedCell {
    pub name: String,
    pub reproduces: String,
    pub tier: Tier,
    pub dataset: Dataset,
    pub fraction: Fraction,
    pub inclusion: Inclusion,
    pub backbone_norm: BackboneNorm,
    pub encoder: EncoderSource,
    pub seed: u64,
    pub finetune: FinetuneConfig,
}

impl DetectionExperiment {
    /// Read and check an experiment file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let experiment: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        experiment.resolve(Tier::Paper, None, 0).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(experiment)
    }

    /// The cell for `tier` and `seed` (0: the loop's own), with `encoder` replacing the file's
    /// (and the smoke tier's) when given.
    pub fn resolve(&self, tier: Tier, encoder: Option<&EncoderSource>, seed: u64) -> Result<ResolvedCell, String> {
        check_run_name(&self.name).map_err(|why| format!("name {:?}: {why}", self.name))?;
        crate::data::detection::target_rows(self.dataset)?;
        let finetune = match tier {
            Tier::Smoke => smoke_finetune(),
            Tier::Paper => reference_finetune().with_overrides(&self.finetune, |_| true)?,
        };
        finetune.check().map_err(|e| format!("[finetune]: {e}"))?;
        let encoder = match (encoder, tier) {
            (Some(e), _) => e.clone(),
            (None, Tier::Smoke) => EncoderSource::Pretrained {
                run: crate::downstream::linear::experiment::smoke_pretraining_run(ImageEncoderKind::Resnet50).into(),
            },
            (None, Tier::Paper) => self.encoder.clone(),
        };
        let seed = if seed == 0 { finetune.seed } else { seed };
        Ok(ResolvedCell {
            name: self.name.clone(),
            reproduces: self.reproduces.clone(),
            tier,
            dataset: self.dataset,
            fraction: self.fraction,
            inclusion: self.inclusion,
            backbone_norm: self.backbone_norm,
            encoder,
            seed,
            finetune: FinetuneConfig { seed, ..finetune },
        })
    }
}

/// A test mAP in percent with its bootstrap 95 % interval over test images; `None` where
/// undefined (no image the rule keeps has a ground-truth box; an interval when more than half
/// of the resamples are undefined).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

/// `test.json`: a finished cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    pub tier: Tier,
    pub dataset: Dataset,
    pub fraction: Fraction,
    /// The rule `val_mAP` followed.
    pub inclusion: Inclusion,
    pub backbone_norm: BackboneNorm,
    /// `pretrained`, `released`, `imagenet`, `random`.
    pub encoder: String,
    pub encoder_provenance: String,
    pub seed: u64,
    /// Test mAP with the reference's inclusion rule (the paper's number).
    pub test_faithful: Score,
    /// Test mAP over every test image.
    pub test_standard: Score,
    /// Test images the faithful rule kept (with a detection and a ground-truth box).
    pub faithful_images: usize,
    pub test_images: usize,
    /// Images in the training split (after the fraction).
    pub train_images: usize,
    /// The untrained detector's test mAP (same backbone, fresh neck), standard rule.
    pub untrained_standard: Option<f64>,
    /// Trained − untrained standard mAP (points) with its bootstrap interval.
    pub gain: Score,
    /// One-sided bootstrap p-value of "the trained detector is no better than the untrained"
    /// (paired: both scored on the same resamples).
    pub gain_p: Option<f64>,
    pub test_loss: f64,
    pub best_epoch: usize,
    pub best_val_map: f64,
    pub epochs: usize,
    pub stop_reason: String,
    pub seconds: f64,
    /// Pictures of test images (relative to the run folder).
    pub pictures: Vec<String>,
}

/// The dataset's folder names under `--data` (the published name first).
fn data_folders(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Rsna => &["rsna"],
        _ => &["object-CXR", "object-cxr"],
    }
}

fn cached(split: &Path, root: &Path) -> Result<PathBuf, DataError> {
    let path = split.with_extension(format!("{DETECTION_SIDE}s.cache"));
    let stale = match (std::fs::metadata(&path), std::fs::metadata(split)) {
        (Ok(c), Ok(s)) => c.modified().ok() < s.modified().ok(),
        _ => true,
    };
    if stale {
        build_with(split, root, &path, DETECTION_SIDE, Geometry::Stretch, OnBad::Skip)?;
    }
    Ok(path)
}

/// The three splits of `cell`, prepared under `out/data/` and cached at 224 px.
pub fn open_splits(cell: &ResolvedCell, out: &Path, data: Option<&Path>) -> Result<DetectionSplits, TrainError> {
    let folders = data_folders(cell.dataset);
    let root = match (cell.tier, data) {
        (Tier::Paper, Some(d)) => {
            folders.iter().map(|f| d.join(f)).find(|p| p.is_dir()).unwrap_or_else(|| d.join(folders[0]))
        }
        (Tier::Paper, None) => {
            return Err(TrainError::Config("the paper tier needs --data DIR (with rsna/ and object-CXR/)".into()));
        }
        (Tier::Smoke, _) => {
            let root = out.join("data").join("synthetic").join(folders[folders.len() - 1]);
            let done = root.join(".complete");
            if !done.exists() {
                let (scale, seed) = SMOKE_DATA;
                match cell.dataset {
                    Dataset::Rsna => synth::rsna(&root, scale, seed)?,
                    _ => synth::objectcxr(&root, scale, seed)?,
                }
                std::fs::write(&done, b"").map_err(|e| DataError::file(&done, e.to_string()))?;
            }
            root
        }
    };
    let tier = match cell.tier {
        Tier::Smoke => "smoke",
        Tier::Paper => "paper",
    };
    let folder = folders[folders.len() - 1];
    let prepared = out.join("data").join(format!("{folder}-detection-{tier}-prepared"));
    if !prepared.join("manifest.json").exists() {
        let mut options = PrepareOptions::new(cell.dataset, DataTask::Detection, root.clone());
        let polygons = root.join("polygon_boxes.csv");
        if polygons.exists() {
            options.polygon_boxes = Some(polygons);
        }
        prepare(&options)?.write(&prepared)?;
    }
    let open = |file: &str| -> Result<DetectionDataset, TrainError> {
        let split = prepared.join(file);
        Ok(DetectionDataset::open(&split, &cached(&split, &root)?, cell.dataset)?)
    };
    Ok(DetectionSplits { train: open(cell.fraction.train_file())?, valid: open("valid.csv")?, test: open("test.csv")? })
}

/// The test set's `metric` (a fraction, `None` where undefined) in percent, with its bootstrap
/// interval drawn with the cell's seed (undefined resamples skipped), and the interval's
/// one-sided p-value of "at most 0" (for a difference).
fn interval(n: usize, seed: u64, metric: impl Fn(&[usize]) -> Option<f64>) -> (Score, Option<f64>) {
    let all: Vec<usize> = (0..n).collect();
    let Some(value) = metric(&all) else { return (Score { value: None, ci_low: None, ci_high: None }, None) };
    let config = BootstrapConfig { seed: seed as u32, ..BootstrapConfig::default() };
    let undefined = |count| MetricError::OneClass { class: 0, positives: 0, count };
    match bootstrap(n, config, |rows| metric(rows).ok_or_else(|| undefined(rows.len()))) {
        Ok(i) => (
            Score { value: Some(100.0 * value), ci_low: Some(100.0 * i.low), ci_high: Some(100.0 * i.high) },
            Some(i.p_at_or_below_zero()),
        ),
        Err(_) => (Score { value: Some(100.0 * value), ci_low: None, ci_high: None }, None),
    }
}

/// mAP as a number, `None` where torchmetrics' −1 says undefined.
fn defined(map: f64) -> Option<f64> {
    (map > -1.0).then_some(map)
}

// ANCHOR: run_cell
/// Run one cell into [`run_folder`]. Returns `None` when the run stopped before finishing.
pub fn run_cell<B: AutodiffBackend + GradientLink>(
    cell: &ResolvedCell,
    out: &Path,
    options: &CellOptions,
    device: &B::Device,
) -> Result<Option<CellResult>, TrainError> {
    let preset = match cell.tier {
        Tier::Smoke => MgcaConfig::smoke_for(ImageEncoderKind::Resnet50),
        Tier::Paper => MgcaConfig::reference_for(ImageEncoderKind::Resnet50),
    };
    let source = cell.encoder.resolved(out);
    let loaded = load_encoder::<B>(&source, ImageEncoderKind::Resnet50, &preset, device).map_err(TrainError::Config)?;
    let ImageEncoder::ResNet(backbone) = loaded.encoder else {
        return Err(TrainError::Config(format!("{}: not a ResNet image encoder", loaded.provenance)));
    };
    let splits = open_splits(cell, out, options.data.as_deref())?;
    // The smoke tier caps the batch at the training split's size (a 1 % split of the synthetic
    // data is one or two images).
    let mut cell = cell.clone();
    let rows = splits.train.usable_rows().len();
    if cell.tier == Tier::Smoke && rows < cell.finetune.batch_size {
        cell.finetune.batch_size = rows.max(1);
    }
    let cell = &cell;
    let task = DetectionTask::<B>::new(splits, cell.finetune.batch_size, cell.backbone_norm, cell.inclusion, device);
    // The neck's initialisation is drawn from the backend's generator, seeded by the cell.
    B::seed(device, cell.seed);
    let neck = Detector::neck_config(&backbone);
    let model = Detector::new(backbone, &neck, device);
    let dir = run_folder(out, &cell.name, cell.seed);
    std::fs::create_dir_all(&dir).map_err(|e| crate::train::run::io(&dir, e))?;
    let untrained = task.detect(&model.valid(), Stage::Test)?;
    let run = options.finetune_options(&dir, cell)?;
    let summary = finetune(&task, model.clone(), &cell.finetune, VAL_MAP, &run)?;
    let Some(test) = summary.test else { return Ok(None) };
    let t = task.test_split().rows_per_image;
    let trained = DetectionOutputs::from_evaluation(&test, t);
    let before = DetectionOutputs::from_evaluation(&untrained, t);
    let n = trained.truth.len();
    let all: Vec<usize> = (0..n).collect();
    let (faithful, _) = interval(n, cell.seed, |rows| defined(trained.map(rows, Inclusion::Faithful)));
    let (standard, _) = interval(n, cell.seed, |rows| defined(trained.map(rows, Inclusion::Standard)));
    // Undefined (no ground truth drawn) for both or neither: the same images.
    let (gain, gain_p) = interval(n, cell.seed, |rows| {
        Some(defined(trained.map(rows, Inclusion::Standard))? - defined(before.map(rows, Inclusion::Standard))?)
    });
    let faithful_images = trained
        .detections
        .iter()
        .zip(&trained.truth)
        .filter(|(d, truth)| d.is_some() && truth.iter().any(|b| super::eval::to_pixels(b)[2] > 0.0))
        .count();
    let pictures = super::pictures::write_pictures(&dir, task.test_split(), &trained, PICTURES)
        .map_err(|e| crate::train::run::io(&dir, e))?;
    let (best_val_map, best_epoch) = summary.best.unwrap_or((f64::NAN, 0));
    let result = CellResult {
        name: cell.name.clone(),
        tier: cell.tier,
        dataset: cell.dataset,
        fraction: cell.fraction,
        inclusion: cell.inclusion,
        backbone_norm: cell.backbone_norm,
        encoder: source.kind().into(),
        encoder_provenance: loaded.provenance,
        seed: cell.seed,
        test_faithful: faithful,
        test_standard: standard,
        faithful_images,
        test_images: n,
        train_images: rows,
        untrained_standard: defined(before.map(&all, Inclusion::Standard)).map(|v| 100.0 * v),
        gain,
        gain_p,
        test_loss: test.loss,
        best_epoch,
        best_val_map: 100.0 * best_val_map,
        epochs: summary.epochs_completed,
        stop_reason: summary.stop_reason.unwrap_or_default(),
        seconds: summary.seconds,
        pictures,
    };
    crate::downstream::finetune::write_test_result(&dir, &result)?;
    Ok(Some(result))
}
// ANCHOR_END: run_cell

/// Every `test.json` under `out/<name>/seed-*/`.
pub fn read_results(out: &Path, name: &str) -> Result<Vec<CellResult>, String> {
    crate::downstream::finetune::read_test_results(out, name)
}
