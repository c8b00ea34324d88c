//! Linear-probing experiment files (`reproductions/configs/linear/*.toml`: one per cell of the
//! paper's Table 1) and running one cell: data prepared and cached, the encoder loaded, the
//! shared loop run, the test number with its bootstrap interval written as `test.json`.
//!
//! A file names the dataset, the label fraction, the backbone, the feature mode and where the
//! encoder comes from, and may override the loop's values in `[finetune]`. The tier decides
//! the rest: the paper tier runs the file as written on the real datasets (`--data DIR` with
//! `chexpert/`, `rsna/` and `covidx/` in their published layouts); the smoke tier runs the same
//! cell on the synthetic datasets, with the smoke loop values and the smoke pretraining run of
//! the file's backbone (`pretrain-smoke`, `pretrain-smoke-resnet`) as the encoder.
//!
//! Book: "Linear probing" (the reproductions and the report). Reference:
//! `mgca/models/mgca/mgca_finetuner.py`, `cli()`, and the datasets' `data_pct` subsets in
//! `mgca/datasets/classification_dataset.py`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{FeatureMode, LinearHead, LinearProbe, ProbeSplits, ProbeTask};
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::data::labelled::{LabelledDataset, target_columns};
use crate::data::prepare::{Dataset, OnBad, PrepareOptions, Task, prepare};
use crate::data::{DataError, cache, synth};
use crate::downstream::encoder::{EncoderSource, load_encoder};
pub use crate::downstream::finetune::CellOptions;
use crate::downstream::finetune::{FinetuneConfig, finetune};
use crate::experiment::{Tier, check_run_name};
use crate::metrics::bootstrap::{BootstrapConfig, bootstrap};
use crate::train::TrainError;
use crate::train::stopping::Monitor;

/// The fraction of training labels a cell uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fraction {
    #[serde(rename = "1%")]
    One,
    #[serde(rename = "10%")]
    Ten,
    #[serde(rename = "100%")]
    All,
}

impl Fraction {
    /// The prepared training split of this fraction.
    pub fn train_file(self) -> &'static str {
        match self {
            Self::One => "train_1pct.csv",
            Self::Ten => "train_10pct.csv",
            Self::All => "train.csv",
        }
    }

    /// As the paper's tables write it.
    pub fn label(self) -> &'static str {
        match self {
            Self::One => "1%",
            Self::Ten => "10%",
            Self::All => "100%",
        }
    }
}

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearExperiment {
    /// The run folder's name.
    pub name: String,
    /// What it reproduces, in a sentence.
    pub reproduces: String,
    pub dataset: Dataset,
    pub fraction: Fraction,
    pub image_encoder: ImageEncoderKind,
    #[serde(default)]
    pub features: FeatureMode,
    /// Where the encoder comes from (paper tier).
    pub encoder: EncoderSource,
    /// Overrides of the loop's reference values, e.g. `batch_size = 48`.
    #[serde(default)]
    pub finetune: toml::Table,
}

/// The smoke tier's synthetic data: scale and seed.
pub const SMOKE_DATA: (synth::Scale, u32) = (synth::Scale::Small, 7);

/// The smoke pretraining run of a backbone (`reproductions/configs/pretrain/smoke*.toml`).
pub fn smoke_pretraining_run(kind: ImageEncoderKind) -> &'static str {
    match kind {
        ImageEncoderKind::VitBase => "pretrain-smoke",
        ImageEncoderKind::Resnet50 => "pretrain-smoke-resnet",
    }
}

/// A cell ready to run: the experiment with the tier's choices made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedCell {
    pub name: String,
    pub reproduces: String,
    pub tier: Tier,
    pub dataset: Dataset,
    pub fraction: Fraction,
    pub image_encoder: ImageEncoderKind,
    pub features: FeatureMode,
    pub encoder: EncoderSource,
    pub seed: u64,
    pub finetune: FinetuneConfig,
}

impl LinearExperiment {
    /// Read and check an experiment file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let experiment: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        experiment.resolve(Tier::Paper, None, 0).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(experiment)
    }

    /// The cell for `tier` and `seed` (seed 0: the loop's own seed), with `encoder` replacing
    /// the file's (and the smoke tier's) encoder when given.
    pub fn resolve(&self, tier: Tier, encoder: Option<&EncoderSource>, seed: u64) -> Result<ResolvedCell, String> {
        check_run_name(&self.name).map_err(|why| format!("name {:?}: {why}", self.name))?;
        ProbeTask::of(self.dataset)?;
        let finetune = match tier {
            Tier::Smoke => FinetuneConfig::smoke(),
            Tier::Paper => FinetuneConfig::reference().with_overrides(&self.finetune, |_| true)?,
        };
        finetune.check().map_err(|e| format!("[finetune]: {e}"))?;
        let encoder = match (encoder, tier) {
            (Some(e), _) => e.clone(),
            (None, Tier::Smoke) => EncoderSource::Pretrained { run: smoke_pretraining_run(self.image_encoder).into() },
            (None, Tier::Paper) => self.encoder.clone(),
        };
        let seed = if seed == 0 { finetune.seed } else { seed };
        Ok(ResolvedCell {
            name: self.name.clone(),
            reproduces: self.reproduces.clone(),
            tier,
            dataset: self.dataset,
            fraction: self.fraction,
            image_encoder: self.image_encoder,
            features: self.features,
            encoder,
            seed,
            finetune: FinetuneConfig { seed, ..finetune },
        })
    }
}

/// `test.json`: a finished cell's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub name: String,
    pub tier: Tier,
    pub dataset: Dataset,
    pub fraction: Fraction,
    pub image_encoder: ImageEncoderKind,
    pub features: FeatureMode,
    /// `pretrained`, `released`, `imagenet`, `random`.
    pub encoder: String,
    /// The file or checkpoint folder the encoder was read from.
    pub encoder_provenance: String,
    pub seed: u64,
    /// `auc` or `acc`.
    pub metric: String,
    /// The test score in percent, with its bootstrap 95 % interval over test images.
    pub test: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub test_loss: f64,
    pub test_images: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub epochs: usize,
    pub stop_reason: String,
    /// Training time of the last invocation, seconds.
    pub seconds: f64,
}

/// The folder of a dataset under `--data`.
pub fn dataset_folder(dataset: Dataset) -> &'static str {
    match dataset {
        Dataset::Chexpert => "chexpert",
        Dataset::Rsna => "rsna",
        Dataset::Covidx => "covidx",
        Dataset::Mimic => "mimic",
        Dataset::Siim => "siim",
        Dataset::ObjectCxr => "object-cxr",
    }
}

fn cached(split: &Path, root: &Path, side: usize) -> Result<PathBuf, DataError> {
    let path = split.with_extension(format!("{side}.cache"));
    let stale = match (std::fs::metadata(&path), std::fs::metadata(split)) {
        (Ok(c), Ok(s)) => c.modified().ok() < s.modified().ok(),
        _ => true,
    };
    if stale {
        cache::build(split, root, &path, side, OnBad::Skip)?;
    }
    Ok(path)
}

/// The three splits of `cell`, prepared under `out/data/` and cached at `side` px.
pub fn open_splits(
    cell: &ResolvedCell,
    out: &Path,
    data: Option<&Path>,
    side: usize,
) -> Result<ProbeSplits, TrainError> {
    let folder = dataset_folder(cell.dataset);
    let root = match (cell.tier, data) {
        (Tier::Paper, Some(d)) => d.join(folder),
        (Tier::Paper, None) => {
            return Err(TrainError::Config("the paper tier needs --data DIR (with chexpert/, rsna/, covidx/)".into()));
        }
        (Tier::Smoke, _) => {
            let root = out.join("data").join("synthetic").join(folder);
            let done = root.join(".complete");
            if !done.exists() {
                let (scale, seed) = SMOKE_DATA;
                match cell.dataset {
                    Dataset::Chexpert => synth::chexpert(&root, scale, seed)?,
                    Dataset::Rsna => synth::rsna(&root, scale, seed)?,
                    _ => synth::covidx(&root, scale, seed)?,
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
    let prepared = out.join("data").join(format!("{folder}-{tier}-prepared"));
    if !prepared.join("manifest.json").exists() {
        let options = PrepareOptions::new(cell.dataset, Task::Classification, root.clone());
        prepare(&options)?.write(&prepared)?;
    }
    let columns = target_columns(cell.dataset).map_err(TrainError::Config)?;
    let open = |file: &str| -> Result<LabelledDataset, TrainError> {
        let split = prepared.join(file);
        Ok(LabelledDataset::open(&split, &cached(&split, &root, side)?, &columns)?)
    };
    Ok(ProbeSplits { train: open(cell.fraction.train_file())?, valid: open("valid.csv")?, test: open("test.csv")? })
}

/// The run folder of a cell and seed: `out/<name>/seed-<seed>`.
pub fn run_folder(out: &Path, name: &str, seed: u64) -> PathBuf {
    out.join(name).join(format!("seed-{seed}"))
}

// ANCHOR: run_cell
/// Run one cell into [`run_folder`]: data, encoder, the shared loop with `val_loss` selection,
/// then the test score of the best checkpoint with its bootstrap interval (`test.json`).
/// Returns `None` when the run stopped before finishing (`stop_after_epochs`).
pub fn run_cell<B: AutodiffBackend>(
    cell: &ResolvedCell,
    out: &Path,
    options: &CellOptions,
    device: &B::Device,
) -> Result<Option<CellResult>, TrainError> {
    let task = ProbeTask::of(cell.dataset).map_err(TrainError::Config)?;
    let preset = match cell.tier {
        Tier::Smoke => MgcaConfig::smoke_for(cell.image_encoder),
        Tier::Paper => MgcaConfig::reference_for(cell.image_encoder),
    };
    let source = cell.encoder.resolved(out);
    let loaded =
        load_encoder::<B::InnerBackend>(&source, cell.image_encoder, &preset, device).map_err(TrainError::Config)?;
    let crop = loaded.config.image_size();
    let splits = open_splits(cell, out, options.data.as_deref(), loaded.config.train.cache_side)?;
    // The smoke tier caps the batch at the training split's size, so that a 1 % split of the
    // synthetic data (a handful of images) still makes one step an epoch.
    let mut cell = cell.clone();
    let rows = splits.train.usable_rows().len();
    if cell.tier == Tier::Smoke && rows < cell.finetune.batch_size {
        cell.finetune.batch_size = rows.max(1);
    }
    let cell = &cell;
    let probe =
        LinearProbe::<B>::new(task, loaded.encoder, splits, crop, cell.finetune.batch_size, cell.features, device)?;
    let head = LinearHead::<B>::new(probe.feature_dim(), task.classes, cell.seed, device);
    let dir = run_folder(out, &cell.name, cell.seed);
    std::fs::create_dir_all(&dir).map_err(|e| crate::train::run::io(&dir, e))?;
    let run = options.finetune_options(&dir, cell)?;
    let summary = finetune(&probe, head, &cell.finetune, Monitor::VAL_LOSS, &run)?;
    let Some(test) = summary.test else { return Ok(None) };
    let columns = task.target_columns();
    let n = test.targets.len() / columns;
    let score = |rows: &[usize]| {
        let outputs: Vec<f32> =
            rows.iter().flat_map(|&r| test.outputs[r * task.classes..(r + 1) * task.classes].to_vec()).collect();
        let targets: Vec<f32> =
            rows.iter().flat_map(|&r| test.targets[r * columns..(r + 1) * columns].to_vec()).collect();
        task.score(&outputs, &targets)
    };
    let interval = bootstrap(n, BootstrapConfig { seed: cell.seed as u32, ..BootstrapConfig::default() }, score)
        .map_err(|e| TrainError::Config(format!("the test {}: {e}", task.score)))?;
    let (best_val_loss, best_epoch) = summary.best.unwrap_or((f64::NAN, 0));
    let result = CellResult {
        name: cell.name.clone(),
        tier: cell.tier,
        dataset: cell.dataset,
        fraction: cell.fraction,
        image_encoder: cell.image_encoder,
        features: cell.features,
        encoder: source.kind().into(),
        encoder_provenance: loaded.provenance,
        seed: cell.seed,
        metric: task.score.into(),
        test: 100.0 * interval.estimate,
        ci_low: 100.0 * interval.low,
        ci_high: 100.0 * interval.high,
        test_loss: test.loss,
        test_images: n,
        best_epoch,
        best_val_loss,
        epochs: summary.epochs_completed,
        stop_reason: summary.stop_reason.unwrap_or_default(),
        seconds: summary.seconds,
    };
    crate::downstream::finetune::write_test_result(&dir, &result)?;
    Ok(Some(result))
}
// ANCHOR_END: run_cell

/// Every `test.json` under `out/<name>/seed-*/`.
pub fn read_results(out: &Path, name: &str) -> Result<Vec<CellResult>, String> {
    crate::downstream::finetune::read_test_results(out, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cell_file_names_the_field() {
        let text = r#"
name = "x"
reproduces = "y"
dataset = "siim"
fraction = "1%"
image_encoder = "vit_base"
[encoder]
from = "random"
seed = 1
"#;
        let experiment: LinearExperiment = toml::from_str(text).unwrap();
        assert!(experiment.resolve(Tier::Paper, None, 0).unwrap_err().contains("no linear-classification task"));
        let over: LinearExperiment =
            toml::from_str(&text.replace("siim", "rsna").replace("[encoder]", "[finetune]\nbatch_sise = 4\n[encoder]"))
                .unwrap();
        assert!(
            over.resolve(Tier::Paper, None, 0)
                .unwrap_err()
                .contains("`finetune.batch_sise` is not a fine-tuning field")
        );
        let fraction = text.replace("siim", "rsna").replace("1%", "5%");
        assert!(toml::from_str::<LinearExperiment>(&fraction).is_err());
    }
}
