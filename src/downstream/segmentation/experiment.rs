//! Segmentation experiment files (`reproductions/configs/segmentation/*.toml`: one per cell of
//! the paper's Table 2 segmentation columns) and running one cell: data prepared (the SIIM leak
//! reproduced, or fixed with `fix_leaks`), the encoder loaded, the untrained U-Net scored on the
//! test split, the shared loop run with `val_loss` selection (best 5 kept), the best checkpoint
//! tested (Dice as the reference averages it, and the image mean with a bootstrap interval), the
//! gain over the untrained decoder with its paired bootstrap p-value, pictures, `test.json`.
//!
//! Book: "Segmentation" (training and the report). Reference:
//! `mgca/models/mgca/mgca_segmenter.py`, `cli()`, and `run_seg_finetune.sh` (the six runs, SIIM
//! 10 % with seed 0), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{SegmentationSplits, SegmentationTask, Segmenter};
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::data::prepare::{Dataset, PrepareOptions, Task as DataTask, prepare};
use crate::data::segmentation::{SEGMENTATION_SIDE, SegmentationDataset};
use crate::data::{DataError, synth};
use crate::downstream::detection::BackboneNorm;
use crate::downstream::detection::experiment::Score;
use crate::downstream::encoder::{EncoderSource, load_encoder};
pub use crate::downstream::finetune::CellOptions;
use crate::downstream::finetune::{FinetuneConfig, Stage, best_checkpoint, finetune};
use crate::downstream::linear::experiment::{Fraction, SMOKE_DATA, run_folder, smoke_pretraining_run};
use crate::experiment::{Tier, check_run_name};
use crate::metrics::MetricError;
use crate::metrics::bootstrap::{BootstrapConfig, bootstrap};
use crate::model::batchnorm::Mode;
use crate::model::mgca::ImageEncoder;
use crate::model::setr::SetrModel;
use crate::model::unet::UnetConfig;
use crate::train::TrainError;
use crate::train::checkpoint;
use crate::train::stopping::Monitor;

/// Test images drawn with their masks into the run folder.
pub const PICTURES: usize = 4;

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationExperiment {
    pub name: String,
    pub reproduces: String,
    /// `siim` or `rsna`.
    pub dataset: Dataset,
    pub fraction: Fraction,
    /// `resnet50` (the U-Net, the scripted runs; the default) or `vit_base` (the SETR-style
    /// decoder).
    #[serde(default = "resnet")]
    pub image_encoder: ImageEncoderKind,
    /// The frozen encoder's BatchNorm during training.
    #[serde(default)]
    pub backbone_norm: BackboneNorm,
    /// Split SIIM by image instead of by CSV row (the reference's leak fixed).
    #[serde(default)]
    pub fix_leaks: bool,
    /// Where the encoder comes from (paper tier).
    pub encoder: EncoderSource,
    /// Overrides of the loop's reference values (`batch_size = 16`, `seed = 0`).
    #[serde(default)]
    pub finetune: toml::Table,
}

fn resnet() -> ImageEncoderKind {
    ImageEncoderKind::Resnet50
}

/// The loop's values for segmentation: batch 8, lr 5e-4 (every scripted run), weight decay
/// 0.05, the best five checkpoints by `val_loss`.
pub fn reference_finetune() -> FinetuneConfig {
    FinetuneConfig {
        batch_size: 8,
        learning_rate: 5e-4,
        weight_decay: 0.05,
        keep_best: 5,
        ..FinetuneConfig::reference()
    }
}

/// The smoke tier's loop for an encoder: 8 epochs on the U-Net; 30 on the 32 px ViT, whose
/// decoder first learns to say "nothing" everywhere (an epoch there costs about a second).
pub fn smoke_finetune(kind: ImageEncoderKind) -> FinetuneConfig {
    let max_epochs = match kind {
        ImageEncoderKind::Resnet50 => 8,
        ImageEncoderKind::VitBase => 30,
    };
    FinetuneConfig { max_epochs, learning_rate: 3e-3, ..reference_finetune() }
}

/// The smoke tier's decoder widths (the library's are 256, 128, 64, 32, 16).
pub const SMOKE_DECODER: [usize; 5] = [32, 16, 16, 8, 8];

/// The smoke tier's image side for the tiny ResNet (the reference's 224 costs ~12× more per
/// step on a CPU; 64 keeps the U-Net's five halvings whole).
pub const SMOKE_SIDE: usize = 64;

/// The smoke tier's SETR widths are the reference's divided by this.
pub const SMOKE_SETR_SHRINK: usize = 16;

/// A cell ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedCell {
    pub name: String,
    pub reproduces: String,
    pub tier: Tier,
    pub dataset: Dataset,
    pub fraction: Fraction,
    pub image_encoder: ImageEncoderKind,
    pub backbone_norm: BackboneNorm,
    pub fix_leaks: bool,
    pub encoder: EncoderSource,
    pub seed: u64,
    pub finetune: FinetuneConfig,
}

impl SegmentationExperiment {
    /// Read and check an experiment file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let experiment: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        experiment.resolve(Tier::Paper, None, 0).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(experiment)
    }

    /// The cell for `tier` and `seed` (0: the file's or the loop's own), with `encoder`
    /// replacing the file's (and the smoke tier's) when given. A fixed-leak cell's run name
    /// ends in `-fixed`.
    pub fn resolve(&self, tier: Tier, encoder: Option<&EncoderSource>, seed: u64) -> Result<ResolvedCell, String> {
        check_run_name(&self.name).map_err(|why| format!("name {:?}: {why}", self.name))?;
        if !matches!(self.dataset, Dataset::Siim | Dataset::Rsna) {
            return Err(format!("{:?} has no segmentation task (SIIM and RSNA have)", self.dataset));
        }
        // The smoke tier keeps its own loop but the file's seed (SIIM 10 %: 0).
        let finetune = match tier {
            Tier::Smoke => smoke_finetune(self.image_encoder).with_overrides(&self.finetune, |k| k == "seed")?,
            Tier::Paper => reference_finetune().with_overrides(&self.finetune, |_| true)?,
        };
        finetune.check().map_err(|e| format!("[finetune]: {e}"))?;
        let encoder = match (encoder, tier) {
            (Some(e), _) => e.clone(),
            (None, Tier::Smoke) => EncoderSource::Pretrained { run: smoke_pretraining_run(self.image_encoder).into() },
            (None, Tier::Paper) => self.encoder.clone(),
        };
        let seed = if seed == 0 { finetune.seed } else { seed };
        let name = if self.fix_leaks { format!("{}-fixed", self.name) } else { self.name.clone() };
        Ok(ResolvedCell {
            name,
            reproduces: self.reproduces.clone(),
            tier,
            dataset: self.dataset,
            fraction: self.fraction,
            image_encoder: self.image_encoder,
            backbone_norm: self.backbone_norm,
            fix_leaks: self.fix_leaks,
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
    #[serde(default = "resnet")]
    pub image_encoder: ImageEncoderKind,
    pub backbone_norm: BackboneNorm,
    pub fix_leaks: bool,
    /// The images' side (224 in the reference; the smoke tier's is smaller).
    #[serde(default = "reference_side")]
    pub side: usize,
    pub encoder: String,
    pub encoder_provenance: String,
    pub seed: u64,
    /// Test Dice in percent as the reference computes it: the mean of per-batch means (the
    /// paper's number).
    pub test_dice: f64,
    /// The mean over test images, with its bootstrap interval.
    pub test_dice_images: Score,
    /// The untrained U-Net's test Dice (same encoder, fresh decoder), image mean.
    pub untrained_dice: f64,
    /// Trained − untrained per-image Dice (points), paired bootstrap interval.
    pub gain: Score,
    pub gain_p: Option<f64>,
    pub test_loss: f64,
    pub test_images: usize,
    pub train_images: usize,
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub epochs: usize,
    pub stop_reason: String,
    pub seconds: f64,
    pub pictures: Vec<String>,
}

fn data_folders(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Rsna => &["rsna"],
        _ => &["SIIM_Pneumothorax", "siim"],
    }
}

/// The three splits of `cell`, prepared under `out/data/`.
pub fn open_splits(
    cell: &ResolvedCell,
    out: &Path,
    data: Option<&Path>,
    side: usize,
) -> Result<SegmentationSplits, TrainError> {
    let folders = data_folders(cell.dataset);
    let root = match (cell.tier, data) {
        (Tier::Paper, Some(d)) => {
            folders.iter().map(|f| d.join(f)).find(|p| p.is_dir()).unwrap_or_else(|| d.join(folders[0]))
        }
        (Tier::Paper, None) => {
            return Err(TrainError::Config(
                "the paper tier needs --data DIR (with rsna/ and SIIM_Pneumothorax/)".into(),
            ));
        }
        (Tier::Smoke, _) => {
            let root = out.join("data").join("synthetic").join(folders[folders.len() - 1]);
            let done = root.join(".complete");
            if !done.exists() {
                let (scale, seed) = SMOKE_DATA;
                match cell.dataset {
                    Dataset::Rsna => synth::rsna(&root, scale, seed)?,
                    _ => synth::siim(&root, scale, seed.wrapping_add(1))?,
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
    let fixed = if cell.fix_leaks { "-fixed" } else { "" };
    let folder = folders[folders.len() - 1];
    let prepared = out.join("data").join(format!("{folder}-segmentation-{tier}{fixed}-prepared"));
    if !prepared.join("manifest.json").exists() {
        let mut options = PrepareOptions::new(cell.dataset, DataTask::Segmentation, root.clone());
        options.fix_leaks = cell.fix_leaks;
        prepare(&options)?.write(&prepared)?;
    }
    let train_file = match (cell.dataset, cell.fraction) {
        (Dataset::Siim, Fraction::All) => "train_balanced.csv",
        (_, f) => f.train_file(),
    };
    let open = |file: &str| -> Result<SegmentationDataset, TrainError> {
        Ok(SegmentationDataset::open(&prepared.join(file), &root, cell.dataset)?.with_side(side))
    };
    Ok(SegmentationSplits { train: open(train_file)?, valid: open("valid.csv")?, test: open("test.csv")? })
}

fn reference_side() -> usize {
    SEGMENTATION_SIDE
}

/// The mean of `values` at `rows` (a bootstrap resample).
fn mean_at(values: &[f32], rows: &[usize]) -> f64 {
    rows.iter().map(|&r| values[r] as f64).sum::<f64>() / rows.len() as f64
}

// ANCHOR: run_cell
/// Run one cell into [`run_folder`]. Returns `None` when the run stopped before finishing.
pub fn run_cell<B: AutodiffBackend>(
    cell: &ResolvedCell,
    out: &Path,
    options: &CellOptions,
    device: &B::Device,
) -> Result<Option<CellResult>, TrainError> {
    let kind = cell.image_encoder;
    let preset = match cell.tier {
        Tier::Smoke => MgcaConfig::smoke_for(kind),
        Tier::Paper => MgcaConfig::reference_for(kind),
    };
    let source = cell.encoder.resolved(out);
    let loaded = load_encoder::<B>(&source, kind, &preset, device).map_err(TrainError::Config)?;
    // The decoder's initialisation is drawn from the backend's generator, seeded by the cell.
    B::seed(device, cell.seed);
    // [N, 3, S, S] → [N, S, S]: the U-Net at 224 px (the smoke tier's tiny ResNet at 64), the
    // SETR decoder at the ViT's own input side.
    let (model, side) = match (loaded.encoder, cell.tier) {
        (ImageEncoder::ResNet(encoder), tier) => {
            let encoder = encoder.without_upsampling().no_grad();
            let config = UnetConfig::for_encoder(encoder.unet_channels());
            let (config, side) = match tier {
                Tier::Smoke => (UnetConfig { decoder_channels: SMOKE_DECODER, ..config }, SMOKE_SIDE),
                Tier::Paper => (config, SEGMENTATION_SIDE),
            };
            (Segmenter::Unet(config.init(encoder, device)), side)
        }
        (ImageEncoder::Vit(vit), tier) => {
            let shrink = if tier == Tier::Smoke { SMOKE_SETR_SHRINK } else { 1 };
            let side = vit.input_side();
            let setr = SetrModel::new(vit, shrink, device).map_err(TrainError::Config)?;
            (Segmenter::Setr(setr), side)
        }
    };
    let splits = open_splits(cell, out, options.data.as_deref(), side)?;
    let mut cell = cell.clone();
    let train_images = splits.train.len();
    if cell.tier == Tier::Smoke && train_images < cell.finetune.batch_size {
        cell.finetune.batch_size = train_images.max(1);
    }
    let cell = &cell;
    let task = SegmentationTask::<B>::new(splits, cell.finetune.batch_size, cell.backbone_norm, device);
    let dir = run_folder(out, &cell.name, cell.seed);
    std::fs::create_dir_all(&dir).map_err(|e| crate::train::run::io(&dir, e))?;
    let untrained = task.score(&model.valid(), Stage::Test)?;
    let run = options.finetune_options(&dir, cell)?;
    let summary = finetune(&task, model.clone(), &cell.finetune, Monitor::VAL_LOSS, &run)?;
    let Some(test) = summary.test else { return Ok(None) };
    let (trained, before) = (&test.outputs, &untrained.outputs);
    let n = trained.len();
    let resamples = BootstrapConfig { seed: cell.seed as u32, ..BootstrapConfig::default() };
    let images = bootstrap(n, resamples, |rows| Ok(mean_at(trained, rows)))
        .map_err(|e: MetricError| TrainError::Config(format!("the test Dice: {e}")))?;
    let gain = bootstrap(n, resamples, |rows| Ok(mean_at(trained, rows) - mean_at(before, rows)))
        .map_err(|e: MetricError| TrainError::Config(format!("the test Dice: {e}")))?;
    let all: Vec<usize> = (0..n).collect();
    let best_dir =
        best_checkpoint(&dir).ok_or_else(|| TrainError::Io(format!("{}: no best checkpoint", dir.display())))?;
    let best: Segmenter<B> = checkpoint::load_model(&best_dir, model, device)?;
    let pictures = write_pictures(&dir, task.test_split(), &best.valid(), device)?;
    let (best_val_loss, best_epoch) = summary.best.unwrap_or((f64::NAN, 0));
    let percent = |i: &crate::metrics::bootstrap::Interval| Score {
        value: Some(100.0 * i.estimate),
        ci_low: Some(100.0 * i.low),
        ci_high: Some(100.0 * i.high),
    };
    let result = CellResult {
        name: cell.name.clone(),
        tier: cell.tier,
        dataset: cell.dataset,
        fraction: cell.fraction,
        image_encoder: kind,
        backbone_norm: cell.backbone_norm,
        fix_leaks: cell.fix_leaks,
        side,
        encoder: source.kind().into(),
        encoder_provenance: loaded.provenance,
        seed: cell.seed,
        test_dice: 100.0 * test.score,
        test_dice_images: percent(&images),
        untrained_dice: 100.0 * mean_at(before, &all),
        gain: percent(&gain),
        gain_p: Some(gain.p_at_or_below_zero()),
        test_loss: test.loss,
        test_images: n,
        train_images,
        best_epoch,
        best_val_loss,
        epochs: summary.epochs_completed,
        stop_reason: summary.stop_reason.unwrap_or_default(),
        seconds: summary.seconds,
        pictures,
    };
    crate::downstream::finetune::write_test_result(&dir, &result)?;
    Ok(Some(result))
}
// ANCHOR_END: run_cell

/// Pictures of up to [`PICTURES`] test images with foreground (then any) into `run/pictures/`.
fn write_pictures<B: burn::tensor::backend::Backend>(
    run: &Path,
    test: &SegmentationDataset,
    model: &Segmenter<B>,
    device: &B::Device,
) -> Result<Vec<String>, TrainError> {
    let dir = run.join("pictures");
    std::fs::create_dir_all(&dir).map_err(|e| crate::train::run::io(&dir, e))?;
    let mut written = Vec::new();
    let mut chosen = Vec::new();
    for row in 0..test.len() {
        let s = test.sample(row, None)?;
        if s.mask.iter().any(|v| *v > 0.5) {
            chosen.push((row, s));
        }
        if chosen.len() == PICTURES {
            break;
        }
    }
    let side = test.side();
    for (row, s) in chosen {
        let x = Tensor::<B, 4>::from_data(TensorData::new(s.image.clone(), [1, 3, side, side]), device);
        let probs = sigmoid(model.forward(x, Mode::Eval, Mode::Eval)).into_data().to_vec::<f32>().expect("f32");
        let name = format!("pictures/test-{row:04}.png");
        let path = run.join(&name);
        super::pictures::picture(&s.image, &s.mask, &probs, side)
            .save(&path)
            .map_err(|e| crate::train::run::io(&path, e))?;
        written.push(name);
    }
    Ok(written)
}

/// Every `test.json` under `out/<name>/seed-*/`.
pub fn read_results(out: &Path, name: &str) -> Result<Vec<CellResult>, String> {
    crate::downstream::finetune::read_test_results(out, name)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The twelve shipped cells (the run script's six on the ResNet, the same six on the ViT):
    /// each resolves on both tiers with the run script's values (SIIM 10 % with seed 0 on both
    /// tiers, RSNA batch 16), the smoke tier with its backbone's smoke pretraining, and
    /// `fix_leaks` names its runs `-fixed`.
    #[test]
    fn the_shipped_cells_are_the_run_script() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/segmentation");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let experiment = SegmentationExperiment::read(&entry.unwrap().path()).unwrap_or_else(|e| panic!("{e}"));
            let paper = experiment.resolve(Tier::Paper, None, 0).unwrap();
            let smoke = experiment.resolve(Tier::Smoke, None, 0).unwrap();
            let siim_10 = experiment.dataset == Dataset::Siim && experiment.fraction == Fraction::Ten;
            assert_eq!((paper.seed, smoke.seed), if siim_10 { (0, 0) } else { (42, 42) }, "{}", experiment.name);
            let batch = if experiment.dataset == Dataset::Rsna { 16 } else { 8 };
            let f = &paper.finetune;
            assert_eq!((f.batch_size, f.learning_rate, f.weight_decay, f.keep_best), (batch, 5e-4, 0.05, 5));
            assert_eq!(smoke.finetune, FinetuneConfig { seed: smoke.seed, ..smoke_finetune(experiment.image_encoder) });
            let vit = experiment.image_encoder == ImageEncoderKind::VitBase;
            assert_eq!(vit, experiment.name.ends_with("-vit"), "{}", experiment.name);
            let EncoderSource::Pretrained { run } = &smoke.encoder else { panic!("{:?}", smoke.encoder) };
            assert_eq!(run, &PathBuf::from(smoke_pretraining_run(experiment.image_encoder)));
            let fixed = SegmentationExperiment { fix_leaks: true, ..experiment.clone() };
            assert_eq!(fixed.resolve(Tier::Paper, None, 0).unwrap().name, format!("{}-fixed", experiment.name));
            names.push(experiment.name);
        }
        names.sort();
        assert_eq!(names.len(), 12);
        assert!(names.iter().all(|n| n.starts_with("segmentation-")));
        let bad = SegmentationExperiment {
            dataset: Dataset::Chexpert,
            ..SegmentationExperiment::read(&dir.join("siim_1pct.toml")).unwrap()
        };
        assert!(bad.resolve(Tier::Paper, None, 0).unwrap_err().contains("no segmentation task"));
    }
}
