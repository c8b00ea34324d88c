//! The shared fine-tuning loop of every downstream task: seeded, up to `max_epochs` epochs of
//! AdamW steps at a constant learning rate on the task's trainable module, validation after
//! every epoch, early stopping and the best checkpoint on the monitored quantity, the best and
//! last checkpoints kept by the crash-safe protocol, and the test set evaluated once with the
//! best checkpoint.
//!
//! For a monitored quantity `q` (goal min or max) the kept checkpoint after epoch `e` is
//! `argbest_{e' ≤ e} q(e')`; training stops after epoch `e` when `q` has not strictly
//! improved for `patience` validations, or after `max_epochs`.
//!
//! Book: "Linear probing" (the protocol). Reference: `mgca/models/mgca/mgca_finetuner.py`,
//! `cli()` (`max_epochs = 50`, `EarlyStopping(patience = 10)`, `ModelCheckpoint(save_last,
//! save_top_k = 1)`, `trainer.test(ckpt_path = "best")`), and `mgca/models/ssl_finetuner.py`,
//! `SSLFineTuner`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** checkpoints are written at epoch ends only; a run killed inside an epoch
//! resumes at the start of that epoch and redoes it exactly (its batches and crops are drawn
//! from the seed and the epoch), so the result is the uninterrupted run's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use crate::train::TrainError;
use crate::train::checkpoint::{self, TrainState};
use crate::train::log::CsvLog;
use crate::train::optim::AdamW;
use crate::train::progress;
use crate::train::run::{check_saved_config, io, save_config};
use crate::train::stopping::{Monitor, early_stop, keep_best};

/// The loop's hyperparameters (the reference's downstream defaults in [`FinetuneConfig::reference`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// The seed of shuffles, crops and the head's initialisation (42).
    pub seed: u64,
    /// Upper bound on epochs (50, forced by every reference script).
    pub max_epochs: usize,
    /// Early-stopping patience in validations (10).
    pub patience: usize,
    /// Best checkpoints kept besides `last` (1).
    pub keep_best: usize,
    /// Images per batch, B (48).
    pub batch_size: usize,
    /// η, the constant learning rate (5e-4).
    pub learning_rate: f64,
    /// λ, AdamW's decoupled weight decay (1e-6).
    pub weight_decay: f32,
    /// β₁ (0.9).
    pub beta1: f32,
    /// β₂ (0.999).
    pub beta2: f32,
    /// ε (1e-8).
    pub epsilon: f32,
}

impl FinetuneConfig {
    /// The reference's linear-classification values.
    pub fn reference() -> Self {
        Self {
            seed: 42,
            max_epochs: 50,
            patience: 10,
            keep_best: 1,
            batch_size: 48,
            learning_rate: 5e-4,
            weight_decay: 1e-6,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// The paper states the same values as the code for linear probing.
    pub fn paper() -> Self {
        Self::reference()
    }

    /// CPU minutes on the synthetic datasets: small batches, few epochs, short patience.
    pub fn smoke() -> Self {
        Self { max_epochs: 12, patience: 4, batch_size: 8, learning_rate: 5e-3, ..Self::reference() }
    }

    /// Every field in its range, listed by name.
    pub fn check(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        for (name, value) in
            [("max_epochs", self.max_epochs), ("patience", self.patience), ("batch_size", self.batch_size)]
        {
            if value == 0 {
                bad.push(format!("{name} = 0 (allowed: at least 1)"));
            }
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            bad.push(format!("learning_rate = {} (allowed: a finite number > 0)", self.learning_rate));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad.push(format!("weight_decay = {} (allowed: a finite number >= 0)", self.weight_decay));
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                bad.push(format!("{name} = {beta} (allowed: [0, 1))"));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            bad.push(format!("epsilon = {} (allowed: a finite number > 0)", self.epsilon));
        }
        if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
    }

    /// These values with an experiment file's `[finetune]` table applied: every key must name a
    /// field; those `apply` accepts replace its value.
    pub fn with_overrides(self, overrides: &toml::Table, apply: impl Fn(&str) -> bool) -> Result<Self, String> {
        let mut value = toml::Value::try_from(self).map_err(|e| e.to_string())?;
        if let toml::Value::Table(table) = &mut value {
            for (k, v) in overrides {
                if !table.contains_key(k) {
                    return Err(format!("`finetune.{k}` is not a fine-tuning field"));
                }
                if apply(k) {
                    table.insert(k.clone(), v.clone());
                }
            }
        }
        value.try_into().map_err(|e: toml::de::Error| format!("[finetune]: {e}"))
    }

    fn adamw(&self) -> AdamW {
        AdamW { beta1: self.beta1, beta2: self.beta2, epsilon: self.epsilon, weight_decay: self.weight_decay }
    }
}

/// Which evaluation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Validation: the last partial batch dropped.
    Valid,
    /// Test: every image.
    Test,
}

/// An evaluation's result: the mean loss, the task's score, and what the score was computed
/// from (for confidence intervals).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// AUROC or accuracy as a fraction, mAP, Dice.
    pub score: f64,
    /// Per-image outputs, `[N, C]` row-major.
    pub outputs: Vec<f32>,
    /// Per-image targets, `[N, T]` row-major.
    pub targets: Vec<f32>,
}

/// A downstream task as the loop sees it.
pub trait Task<B: AutodiffBackend> {
    /// The trainable module (the head; the frozen encoder belongs to the task).
    type Model: AutodiffModule<B> + Clone;
    /// One training batch, ready for the model.
    type Batch;
    /// The score's name in logs (`auc`, `acc`).
    fn score_name(&self) -> &'static str;
    /// The training batches of `epoch`, in the epoch's order (drawn from `seed` and `epoch`).
    fn train_batches(&self, epoch: usize, seed: u64) -> Box<dyn Iterator<Item = Result<Self::Batch, TrainError>> + '_>;
    /// The differentiable mean loss of a batch. `[1]`
    fn loss(&self, model: &Self::Model, batch: &Self::Batch) -> Tensor<B, 1>;
    /// Evaluate without gradients.
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        stage: Stage,
    ) -> Result<Evaluation, TrainError>;
}

/// How to run a downstream cell (not hyperparameters): what the task binaries' flags set.
#[derive(Debug, Clone, Default)]
pub struct CellOptions {
    /// The real datasets' parent folder (paper tier).
    pub data: Option<PathBuf>,
    pub resume: bool,
    pub force_config_change: bool,
    pub progress: bool,
    /// Stop after this many epochs (as an interruption would).
    pub stop_after_epochs: Option<usize>,
}

impl CellOptions {
    /// The loop's options for the run folder `dir` of `cell` (saved as its `config.toml`).
    pub fn finetune_options(&self, dir: &Path, cell: &impl Serialize) -> Result<FinetuneOptions, TrainError> {
        let config = toml::to_string_pretty(cell).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(FinetuneOptions {
            resume: self.resume,
            force_config_change: self.force_config_change,
            progress: self.progress,
            stop_after_epochs: self.stop_after_epochs,
            ..FinetuneOptions::new(dir, config)
        })
    }
}

/// How to run (not hyperparameters).
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// The run folder: `config.toml`, `metrics.csv`, `checkpoints/`, `test.json`.
    pub out: PathBuf,
    /// The resolved configuration, saved as `config.toml` (and compared on resume).
    pub config_toml: String,
    /// Continue from `out/checkpoints/last` if it exists.
    pub resume: bool,
    /// Resume even if the configuration differs from the saved one.
    pub force_config_change: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop, as an interruption would (after saving `last`), once this many epochs are done.
    pub stop_after_epochs: Option<usize>,
    /// Testing aid: make the loss of this step NaN, to exercise the guard.
    pub inject_nan_at: Option<usize>,
}

impl FinetuneOptions {
    /// A new run in `out` (no resume, no bar).
    pub fn new(out: impl Into<PathBuf>, config_toml: String) -> Self {
        Self {
            out: out.into(),
            config_toml,
            resume: false,
            force_config_change: false,
            progress: false,
            stop_after_epochs: None,
            inject_nan_at: None,
        }
    }
}

/// What a run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneSummary {
    pub epochs_completed: usize,
    pub steps: usize,
    pub finished: bool,
    pub stop_reason: Option<String>,
    /// The monitored quantity's best value and the epoch that reached it.
    pub best: Option<(f64, usize)>,
    /// The test set with the best checkpoint (`None` while the run is unfinished).
    pub test: Option<Evaluation>,
    /// The training time of this invocation, seconds.
    pub seconds: f64,
}

/// `metrics.csv`'s columns after `epoch`.
fn header(score: &str) -> String {
    format!("epoch,lr,train_loss,val_loss,val_{score},steps,seconds")
}

// ANCHOR: finetune
/// Train `model` on `task` as `config` says, selecting by `monitor`, writing the run into
/// `options.out`; then test the best checkpoint.
pub fn finetune<B, T>(
    task: &T,
    model: T::Model,
    config: &FinetuneConfig,
    monitor: Monitor,
    options: &FinetuneOptions,
) -> Result<FinetuneSummary, TrainError>
where
    B: AutodiffBackend,
    T: Task<B>,
{
    config.check().map_err(TrainError::Config)?;
    let out = &options.out;
    let ckpt_dir = out.join("checkpoints");
    let last_dir = ckpt_dir.join(checkpoint::LAST);
    if options.resume && checkpoint::resolve(&last_dir).is_some() {
        check_saved_config(out, &options.config_toml, options.force_config_change)?;
    } else if ckpt_dir.exists() {
        // A new run in an old run's folder: its checkpoints go (its log is truncated).
        std::fs::remove_dir_all(&ckpt_dir).map_err(|e| io(&ckpt_dir, e))?;
    }
    std::fs::create_dir_all(&ckpt_dir).map_err(|e| io(&ckpt_dir, e))?;
    save_config(out, &options.config_toml)?;

    let device = burn::module::Module::<B>::devices(&model).first().cloned().expect("a module on a device");
    let mut model = model;
    let mut optim = config.adamw().config().init::<B, T::Model>();
    let mut state = TrainState::default();
    let mut protocol = checkpoint::Protocol::new(&ckpt_dir, None);
    if let Some(recovered) = checkpoint::recover(&ckpt_dir)?.filter(|_| options.resume) {
        state = recovered;
        model = checkpoint::load_model(&last_dir, model, &device)?;
        optim = optim.load_record(checkpoint::load_optimizer(&last_dir, &device)?);
    }
    let mut log =
        CsvLog::open(&out.join("metrics.csv"), &header(task.score_name()), state.epoch).map_err(|e| io(out, e))?;
    let bar = progress::bar(config.max_epochs, state.epoch, options.progress);
    let started = Instant::now();
    let lr = config.learning_rate;

    while !state.finished && state.epoch < config.max_epochs {
        if options.stop_after_epochs.is_some_and(|s| state.epoch >= s) {
            break;
        }
        let epoch = state.epoch;
        let tick = Instant::now();
        let mut losses = Vec::new();
        for batch in task.train_batches(epoch, config.seed) {
            let batch = batch?;
            let loss = task.loss(&model, &batch);
            let mut value: f64 = loss.clone().into_scalar().elem();
            if options.inject_nan_at == Some(state.step) {
                value = f64::NAN;
            }
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: state.step,
                    epoch,
                    losses: format!("loss {value}"),
                    last_checkpoint: checkpoint::resolve(&last_dir),
                });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            losses.push(value);
            state.step += 1;
        }
        if losses.is_empty() {
            return Err(TrainError::Config(format!(
                "no full training batch of {} images: the training split is smaller than the batch",
                config.batch_size
            )));
        }
        let train_loss = losses.iter().sum::<f64>() / losses.len() as f64;
        let valid = task.evaluate(&model.valid(), Stage::Valid)?;
        let watched = if monitor.name == "val_loss" { valid.loss } else { valid.score };
        let (new_best, superseded) = keep_best(&mut state, monitor, epoch, watched, config.keep_best);
        if early_stop(&mut state, monitor, watched, config.patience) {
            state.finished = true;
            state.stop_reason = Some(format!(
                "early stopping: no better {} for {} epochs (epoch {epoch})",
                monitor.name, config.patience
            ));
        }
        state.epoch += 1;
        if state.epoch >= config.max_epochs && !state.finished {
            state.finished = true;
            state.stop_reason = Some(format!("{} epochs done", config.max_epochs));
        }
        let seconds = tick.elapsed().as_secs_f64();
        log.push(&format!(
            "{epoch},{lr:e},{train_loss:.7},{:.7},{:.6},{},{seconds:.3}",
            valid.loss, valid.score, state.step
        ))
        .map_err(|e| io(out, e))?;
        progress::epoch_line(
            &bar,
            false,
            &format!(
                "epoch {epoch}: train_loss {train_loss:.4} val_loss {:.4} val_{} {:.4}",
                valid.loss,
                task.score_name(),
                valid.score
            ),
        );
        bar.inc(1);
        let last = checkpoint::last_files(&model, optim.to_record(), &state)?;
        let best = match &new_best {
            Some(name) => Some((name.as_str(), checkpoint::best_files(&model, &state)?)),
            None => None,
        };
        protocol.save(&last, best.as_ref().map(|(n, f)| (*n, f)), &superseded)?;
    }
    bar.finish_and_clear();
    let best = state.best.first().map(|b| (b.0, b.1));
    let test = if state.finished {
        let name = &state
            .best
            .first()
            .ok_or_else(|| {
                TrainError::Io(format!("{}: the run finished without a best checkpoint", ckpt_dir.display()))
            })?
            .2;
        let best_model = checkpoint::load_model(&ckpt_dir.join(name), model.clone(), &device)?;
        Some(task.evaluate(&best_model.valid(), Stage::Test)?)
    } else {
        None
    };
    Ok(FinetuneSummary {
        epochs_completed: state.epoch,
        steps: state.step,
        finished: state.finished,
        stop_reason: state.stop_reason,
        best,
        test,
        seconds: started.elapsed().as_secs_f64(),
    })
}
// ANCHOR_END: finetune

/// Write a finished cell's `test.json` into its run folder (a temporary name, then renamed).
pub fn write_test_result<T: Serialize>(dir: &Path, result: &T) -> Result<(), TrainError> {
    let path = dir.join("test.json");
    let text = serde_json::to_string_pretty(result).map_err(|e| TrainError::Io(e.to_string()))? + "\n";
    let part = dir.join("test.json.part");
    std::fs::write(&part, text).map_err(|e| io(&part, e))?;
    std::fs::rename(&part, &path).map_err(|e| io(&path, e))
}

/// Every `test.json` under `out/<name>/seed-*/`, in seed-folder order.
pub fn read_test_results<T: serde::de::DeserializeOwned>(out: &Path, name: &str) -> Result<Vec<T>, String> {
    let dir = out.join(name);
    let mut results = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(results) };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path().join("test.json"))).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        results.push(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(results)
}

/// The folder of the best checkpoint a finished fine-tuning run kept, if any.
pub fn best_checkpoint(out: &Path) -> Option<PathBuf> {
    let dir = out.join("checkpoints");
    let state = checkpoint::load_state(&dir.join(checkpoint::LAST)).ok()?;
    state.best.first().map(|b| dir.join(&b.2))
}
