//! Pretraining: the MGCA loop over image–report pairs.
//!
//! One optimiser step takes `shards` batches of `shard_batch` pairs. Each shard is forwarded
//! and back-propagated on its own — its own BatchNorm statistics, ITA negatives and Sinkhorn,
//! as each of the reference's 2 GPUs computed them — and the shards' gradients are averaged
//! (`ḡ = (g₁ + … + g_S) / S`, the DDP all-reduce). Then the prototype gradient is dropped in
//! epoch 0, AdamW steps (decoupled weight decay 0.05 on every parameter that has a gradient,
//! per-parameter step counts) at the schedule's learning rate. Shards run one after another
//! on one device ("virtual shards"), or one per device with burn's collective all-reduce.
//!
//! Each epoch ends with validation (eval mode, the same shards), early stopping on the
//! validation loss (patience 5), the best 5 checkpoints by validation loss and the last.
//!
//! Built on the generic machinery of [`crate::train`] (optimiser, checkpoints, stopping, logs).
//!
//! Book: "Pretraining". Reference: `mgca/models/mgca/mgca_module.py`, `MGCA.training_step`,
//! `MGCA.validation_step`, `MGCA.on_after_backward` (the prototype freezing),
//! `MGCA.configure_optimizers` and `cli_main` (trainer, callbacks), and
//! `mgca/datasets/data_module.py`, `DataModule` (loaders), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the epoch's shuffle, the crops and the text encoder's dropout masks come from
//! this crate's generators (keyed by the run's seed, the epoch or step, the batch or shard), not
//! torch's, so a run's batches and masks differ from the reference's by chance, not in
//! distribution.

pub mod data;
pub mod losses;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::backend::GradientLink;
use crate::config::MgcaConfig;
use crate::data::cache::Crop;
use crate::data::pairs::{PairBatch, PairDataset};
use crate::data::sampling::LegacyRng;
use crate::loss::{CtaEngine, Objective, ObjectiveOutput};
use crate::model::batchnorm::Mode;
use crate::model::dropout::DropoutKey;
use crate::model::mgca::{Mgca, MgcaBatch};
use crate::text::tokenizer::ReportTokenizer;
pub use crate::train::TrainError;
use crate::train::checkpoint::{self, TrainState};
use crate::train::optim::{AdamW, mean_gradients};
use crate::train::progress;
use crate::train::run::{check_saved_config, io, save_config};
use crate::train::schedule::CosineWarmup;
use crate::train::stopping::{Monitor, early_stop, keep_best};
use losses::{CsvLog, Losses};

/// The pairs a run trains and validates on.
pub struct PretrainData {
    pub train: PairDataset,
    pub valid: Option<PairDataset>,
    pub tokenizer: ReportTokenizer,
}

/// How to run (not hyperparameters: those are in [`MgcaConfig::train`]).
#[derive(Debug, Clone)]
pub struct RunOptions<D> {
    /// The run folder: `metrics.csv`, `valid.csv`, `config.toml`, `checkpoints/`, `plot.svg`.
    pub out: PathBuf,
    /// Continue from `out/checkpoints/last` if it exists.
    pub resume: bool,
    /// One device: virtual shards. Several (as many as shards): one shard per device.
    pub devices: Vec<D>,
    /// Stop (as an interruption would, after saving `last`) once this many steps are done.
    pub stop_after: Option<usize>,
    /// Show a progress bar.
    pub progress: bool,
    /// How CTA is computed.
    pub engine: CtaEngine,
    /// Without a progress bar, print one line per epoch to stderr.
    pub log_epochs: bool,
    /// Testing aid: make the loss of this step NaN, to exercise the guard.
    pub inject_nan_at: Option<usize>,
    /// Resume even if the configuration differs from the run's saved `config.toml`.
    pub force_config_change: bool,
    /// Testing aid: stop the process (exit status [`checkpoint::FAULT_EXIT`]) at this
    /// operation of the checkpoint protocol (0-based, counted over the run), as a kill would.
    pub crash_at_write: Option<usize>,
}

impl<D> RunOptions<D> {
    /// Defaults for `out` on `devices`: no resume, no progress bar, graph CTA.
    pub fn new(out: impl Into<PathBuf>, devices: Vec<D>) -> Self {
        Self {
            out: out.into(),
            resume: false,
            devices,
            stop_after: None,
            progress: false,
            engine: CtaEngine::Graph,
            log_epochs: false,
            inject_nan_at: None,
            force_config_change: false,
            crash_at_write: None,
        }
    }
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub steps: usize,
    pub epochs_completed: usize,
    pub finished: bool,
    pub stop_reason: Option<String>,
    pub best_val: Option<f64>,
    /// The last step's training losses.
    pub last: Option<Losses>,
    /// Pairs skipped because their image could not be read (train and valid).
    pub skipped: usize,
    /// Steps per second-free throughput of the whole run, pairs per second.
    pub pairs_per_s: f64,
    /// A resume found the run finished: nothing was run or written (only what an
    /// interrupted save left in `checkpoints/` was removed).
    pub already_finished: bool,
}

/// A collated batch as tensors on `device` (no dropout: see [`MgcaBatch::dropout`]).
pub fn model_batch<B: Backend>(b: &PairBatch, crop: usize, device: &B::Device) -> MgcaBatch<B> {
    let (n, l) = (b.rows.len(), b.text.length);
    MgcaBatch {
        images: Tensor::from_data(TensorData::new(b.images.clone(), [n, 3, crop, crop]), device),
        ids: Tensor::<B, 2, Int>::from_data(TensorData::new(b.text.ids.clone(), [n, l]), device),
        mask: Tensor::from_data(TensorData::new(b.text.mask.clone(), [n, l]), device),
        words: b.text.words.clone(),
        dropout: None,
    }
}

/// The objective's outputs as numbers (the λ-weighted losses and the accuracies).
pub fn read_losses<B: Backend>(out: &ObjectiveOutput<B>) -> Losses {
    let v = |t: &Tensor<B, 1>| t.clone().into_scalar().elem::<f64>();
    Losses {
        loss: v(&out.total),
        loss_ita: v(&out.ita),
        loss_local: v(&out.local),
        loss_proto: v(&out.proto),
        acc1: v(&out.acc1),
        acc5: v(&out.acc5),
    }
}

/// Forward and backward of one shard: its gradients and losses.
pub fn shard_gradients<B: AutodiffBackend + GradientLink>(
    model: &Mgca<B>,
    objective: &Objective,
    batch: &PairBatch,
    crop: usize,
    mode: Mode,
    dropout: Option<(f64, DropoutKey)>,
    poison: bool,
) -> (GradientsParams, Losses) {
    let device = model.prototypes().device();
    let inputs = model.forward(MgcaBatch { dropout, ..model_batch::<B>(batch, crop, &device) }, mode);
    let out = objective.forward(inputs);
    let mut losses = read_losses(&out);
    if poison {
        losses.loss = f64::NAN;
    }
    let grads = out.total.backward();
    (GradientsParams::from_grads(grads, model), losses)
}

/// AdamW over the whole MGCA model.
pub type Adam<B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Mgca<B>, B>;

/// AdamW as the reference configures it: one group, decoupled weight decay on every
/// parameter, per-parameter step counts (burn's AdamW keeps one per parameter and skips a
/// parameter without a gradient, as PyTorch does).
pub fn adamw(config: &MgcaConfig) -> AdamWConfig {
    let t = &config.train;
    AdamW { beta1: t.beta1, beta2: t.beta2, epsilon: t.adam_epsilon, weight_decay: t.weight_decay }.config()
}

fn optimizer<B: AutodiffBackend>(config: &MgcaConfig) -> Adam<B> {
    adamw(config).init::<B, Mgca<B>>()
}

/// The epoch's order of the usable rows: a permutation seeded by the run's seed and the epoch.
pub fn epoch_order(rows: &[usize], seed: u32, epoch: usize) -> Vec<usize> {
    let mut rng = LegacyRng::new(seed ^ (epoch as u32 + 1).wrapping_mul(0x85eb_ca6b));
    rng.permutation(rows.len()).into_iter().map(|i| rows[i]).collect()
}

fn crop_seed(seed: u32, epoch: usize) -> u32 {
    seed.wrapping_mul(31).wrapping_add(epoch as u32).wrapping_mul(0x27d4_eb2f)
}

/// Mean losses of the validation pairs: batches of `shard_batch` in split order, the last
/// partial one dropped, eval mode (running BatchNorm statistics), centre crops.
pub fn validate<B: AutodiffBackend>(
    model: &Mgca<B>,
    config: &MgcaConfig,
    objective: &Objective,
    data: &PairDataset,
    tokenizer: &ReportTokenizer,
) -> Result<Losses, TrainError>
where
    B::InnerBackend: GradientLink,
{
    let t = &config.train;
    let crop = config.image_size();
    let model = model.valid().renormalize_prototypes();
    let device = model.prototypes().device();
    let mut all = Vec::new();
    for batch in data.batches_from(tokenizer, data.usable_rows(), t.shard_batch, Crop::Centre, crop, t.seed, 0, 2) {
        let batch = batch?;
        let inputs = model.forward(model_batch(&batch, crop, &device), Mode::Eval);
        all.push(read_losses(&objective.forward(inputs)));
    }
    Ok(Losses::mean(&all))
}

/// Train `model` as `config` says on `data`, writing the run into `options.out`.
pub fn pretrain<B>(
    config: &MgcaConfig,
    model: Mgca<B>,
    data: &PretrainData,
    options: &RunOptions<B::Device>,
) -> Result<RunSummary, TrainError>
where
    B: AutodiffBackend + GradientLink,
    B::InnerBackend: GradientLink,
{
    // Everything is checked before anything in the run folder changes.
    config.validate().map_err(|e| TrainError::Config(e.to_string()))?;
    let t = &config.train;
    let devices = &options.devices;
    if devices.is_empty() {
        return Err(TrainError::Config("no device given".into()));
    }
    if devices.len() > 1 && devices.len() != t.shards {
        return Err(TrainError::Config(format!(
            "{} devices for {} shards: give one device (virtual shards) or one per shard",
            devices.len(),
            t.shards
        )));
    }
    let crop = config.image_size();
    if data.train.side() < crop {
        return Err(TrainError::Config(format!(
            "the cache holds {} px images but the encoder takes {crop} px crops",
            data.train.side()
        )));
    }
    let rows = data.train.usable_rows();
    let global = t.shard_batch * t.shards;
    let steps_per_epoch = rows.len() / global;
    if steps_per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "{} usable training pairs cannot fill one step of {} × {}",
            rows.len(),
            t.shards,
            t.shard_batch
        )));
    }
    let objective = Objective::new(config.objective.clone()).with_engine(options.engine);
    let out = &options.out;
    let ckpt_dir = out.join("checkpoints");
    let last_dir = ckpt_dir.join(checkpoint::LAST);
    let skipped = data.train.skipped() + data.valid.as_ref().map_or(0, |v| v.skipped());
    let config_toml = toml::to_string_pretty(config).map_err(|e| TrainError::Config(e.to_string()))?;
    if let Some(dir) = checkpoint::resolve(&last_dir).filter(|_| options.resume) {
        check_saved_config(out, &config_toml, options.force_config_change)?;
        let saved = checkpoint::load_state(&dir)?;
        if saved.finished {
            // Nothing to run or write; only what an interrupted final save left goes.
            checkpoint::recover(&ckpt_dir)?;
            let (last, pairs_per_s) = logged_losses(&out.join("metrics.csv"));
            return Ok(RunSummary {
                steps: saved.step,
                epochs_completed: saved.epoch,
                finished: true,
                stop_reason: saved.stop_reason,
                best_val: saved.best_val,
                last,
                skipped,
                pairs_per_s,
                already_finished: true,
            });
        }
    }

    // The run folder changes from here on.
    if !options.resume && ckpt_dir.exists() {
        // A new run in an old run's folder: the old checkpoints go (its logs are truncated).
        eprintln!("train: starting a new run in {}: removing its old checkpoints", out.display());
        std::fs::remove_dir_all(&ckpt_dir).map_err(|e| io(&ckpt_dir, e))?;
    }
    std::fs::create_dir_all(&ckpt_dir).map_err(|e| io(&ckpt_dir, e))?;
    save_config(out, &config_toml)?;

    let device = devices[0].clone();
    let mut model = model.fork(&device);
    let mut optim = optimizer::<B>(config);
    let mut state = TrainState::default();
    let mut protocol = checkpoint::Protocol::new(&ckpt_dir, options.crash_at_write);
    match checkpoint::recover(&ckpt_dir)?.filter(|_| options.resume) {
        Some(recovered) => {
            state = recovered;
            model = checkpoint::load_model(&last_dir, model, &device)?;
            optim = optim.load_record(checkpoint::load_optimizer(&last_dir, &device)?);
        }
        None if options.resume => eprintln!("train: no checkpoint in {}: starting a new run", last_dir.display()),
        None => {}
    }
    let mut last_checkpoint = checkpoint::resolve(&last_dir);
    let mut metrics =
        CsvLog::open(&out.join("metrics.csv"), losses::STEP_HEADER, state.step).map_err(|e| io(out, e))?;
    let mut valid_log =
        CsvLog::open(&out.join("valid.csv"), losses::VALID_HEADER, state.epoch).map_err(|e| io(out, e))?;

    let schedule = CosineWarmup::reference(
        t.learning_rate,
        t.min_learning_rate,
        rows.len() / t.shard_batch,
        t.shards,
        t.epochs,
        t.warmup_fraction,
    );
    let planned = t.max_steps.unwrap_or(usize::MAX).min(steps_per_epoch * t.epochs);
    let bar = progress::bar(planned, state.step, options.progress);

    let mut replicas = Replicas::new(&model, &optim, config, devices)?;
    let started = Instant::now();
    let mut pairs_done = 0usize;
    let mut last_losses = None;
    // Whether the state has changed since the last save.
    let mut dirty = true;

    'epochs: while !state.finished && state.epoch < t.epochs {
        let epoch = state.epoch;
        let order = epoch_order(&rows, t.seed, epoch);
        let first = state.step_in_epoch * t.shards;
        let mut loader = data.train.batches_from(
            &data.tokenizer,
            order,
            t.shard_batch,
            Crop::Random,
            crop,
            crop_seed(t.seed, epoch),
            first,
            2 * t.shards,
        );
        while state.step_in_epoch < steps_per_epoch {
            if t.max_steps.is_some_and(|m| state.step >= m) {
                state.finished = true;
                state.stop_reason = Some(format!("max_steps = {} reached", state.step));
                dirty = true;
                break 'epochs;
            }
            if options.stop_after.is_some_and(|s| state.step >= s) {
                break 'epochs;
            }
            let tick = Instant::now();
            let shards: Vec<PairBatch> =
                (0..t.shards).map(|_| loader.next().expect("a full step of batches")).collect::<Result<_, _>>()?;
            let lr = schedule.lr(state.step);
            let freeze = epoch < t.freeze_prototype_epochs;
            let poison = options.inject_nan_at == Some(state.step);
            let (step_index, p) = (state.step, config.text_dropout);
            let dropout_at =
                move |shard: usize| (p > 0.0).then(|| (p, DropoutKey::new(t.seed as u64, step_index, shard)));
            let step_losses;
            (model, optim, step_losses) =
                replicas.step(model, optim, &objective, &shards, crop, lr, freeze, dropout_at, poison, |losses| {
                    if losses.is_finite() {
                        Ok(())
                    } else {
                        Err(TrainError::NonFinite {
                            step: state.step,
                            epoch,
                            losses: losses.describe(),
                            last_checkpoint: last_checkpoint.clone(),
                        })
                    }
                })?;
            let pairs_per_s = global as f64 / tick.elapsed().as_secs_f64();
            pairs_done += global;
            metrics
                .push(&losses::step_row(state.step, epoch, lr, &step_losses, pairs_per_s))
                .map_err(|e| io(out, e))?;
            bar.set_message(format!(
                "loss {:.3} (ita {:.3} local {:.3} proto {:.3}) acc1 {:.1} acc5 {:.1} {pairs_per_s:.1} pairs/s",
                step_losses.loss,
                step_losses.loss_ita,
                step_losses.loss_local,
                step_losses.loss_proto,
                step_losses.acc1,
                step_losses.acc5
            ));
            bar.inc(1);
            last_losses = Some(step_losses);
            state.step += 1;
            state.step_in_epoch += 1;
            dirty = true;
            if state.step % t.checkpoint_every == 0 && state.step_in_epoch < steps_per_epoch {
                save(&mut protocol, &model, &optim, &state, None, &[])?;
                (last_checkpoint, dirty) = (Some(last_dir.clone()), false);
            }
        }
        // The epoch is complete: validate, keep the best, decide whether to stop.
        let (mut new_best, mut superseded) = (None, Vec::new());
        if let Some(valid) = &data.valid {
            let losses = validate(&model, config, &objective, valid, &data.tokenizer)?;
            valid_log.push(&losses::valid_row(epoch, state.step, &losses)).map_err(|e| io(out, e))?;
            let line = format!(
                "epoch {epoch}: val_loss {:.4} (ita {:.4} local {:.4} proto {:.4}) val_acc1 {:.1}",
                losses.loss, losses.loss_ita, losses.loss_local, losses.loss_proto, losses.acc1
            );
            progress::epoch_line(&bar, options.log_epochs, &line);
            (new_best, superseded) = keep_best(&mut state, Monitor::VAL_LOSS, epoch, losses.loss, t.keep_best);
            if early_stop(&mut state, Monitor::VAL_LOSS, losses.loss, t.patience) {
                state.finished = true;
                state.stop_reason =
                    Some(format!("early stopping: no lower val_loss for {} epochs (epoch {epoch})", t.patience));
            }
        }
        state.epoch += 1;
        state.step_in_epoch = 0;
        if state.epoch >= t.epochs && !state.finished {
            state.finished = true;
            state.stop_reason = Some(format!("{} epochs done", t.epochs));
        }
        save(&mut protocol, &model, &optim, &state, new_best.as_deref(), &superseded)?;
        (last_checkpoint, dirty) = (Some(last_dir.clone()), false);
    }
    // Interrupted or finished: the last checkpoint holds exactly where the run is.
    if dirty {
        save(&mut protocol, &model, &optim, &state, None, &[])?;
    }
    replicas.finish()?;
    bar.finish_and_clear();
    losses::plot(out).map_err(TrainError::Io)?;
    Ok(RunSummary {
        steps: state.step,
        epochs_completed: state.epoch,
        finished: state.finished,
        stop_reason: state.stop_reason.clone(),
        best_val: state.best_val,
        last: last_losses,
        skipped,
        pairs_per_s: pairs_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
        already_finished: false,
    })
}

/// The last logged step's losses and the mean throughput in a run's `metrics.csv`, if readable.
fn logged_losses(path: &Path) -> (Option<Losses>, f64) {
    let column = |name: &str| losses::read_column(path, name).ok().filter(|v| !v.is_empty());
    let last = |name: &str| column(name).and_then(|v| v.last().copied());
    let names = ["loss", "loss_ita", "loss_local", "loss_proto", "acc1", "acc5"];
    let values: Option<Vec<f64>> = names.iter().map(|name| last(name)).collect();
    let losses = values.map(|v| Losses {
        loss: v[0],
        loss_ita: v[1],
        loss_local: v[2],
        loss_proto: v[3],
        acc1: v[4],
        acc5: v[5],
    });
    let pairs_per_s = column("pairs_per_s").map_or(0.0, |v| v.iter().sum::<f64>() / v.len() as f64);
    (losses, pairs_per_s)
}

/// Save `last` (and a new best folder, removing the superseded ones) by the checkpoint
/// protocol.
fn save<B: AutodiffBackend>(
    protocol: &mut checkpoint::Protocol,
    model: &Mgca<B>,
    optim: &Adam<B>,
    state: &TrainState,
    new_best: Option<&str>,
    superseded: &[String],
) -> Result<(), TrainError> {
    let last = checkpoint::last_files(model, optim.to_record(), state)?;
    let best = match new_best {
        Some(name) => Some((name, checkpoint::best_files(model, state)?)),
        None => None,
    };
    protocol.save(&last, best.as_ref().map(|(name, files)| (*name, files)), superseded)?;
    Ok(())
}

// ANCHOR: virtual_step
/// One optimiser step over `shards` on one device ("virtual shards"): each shard forwarded and
/// back-propagated on its own (the first in train mode, the others without updating BatchNorm's
/// running statistics), the gradients averaged, the prototype gradient dropped while `freeze`,
/// then AdamW at `lr`. `check` sees the mean losses before anything changes.
#[allow(clippy::too_many_arguments)]
pub fn virtual_step<B: AutodiffBackend + GradientLink>(
    model: Mgca<B>,
    mut optim: Adam<B>,
    objective: &Objective,
    shards: &[PairBatch],
    crop: usize,
    lr: f64,
    freeze: bool,
    dropout: impl Fn(usize) -> Option<(f64, DropoutKey)>,
    poison: bool,
    check: impl FnOnce(&Losses) -> Result<(), TrainError>,
) -> Result<(Mgca<B>, Adam<B>, Losses), TrainError> {
    let model = model.renormalize_prototypes();
    let mut parts = Vec::with_capacity(shards.len());
    let mut losses = Vec::with_capacity(shards.len());
    for (k, shard) in shards.iter().enumerate() {
        let mode = if k == 0 { Mode::Train } else { Mode::TrainShard };
        let (g, l) = shard_gradients(&model, objective, shard, crop, mode, dropout(k), poison && k == 0);
        parts.push(g);
        losses.push(l);
    }
    let mean = Losses::mean(&losses);
    check(&mean)?;
    let mut grads = mean_gradients(&model, parts);
    if freeze {
        grads.remove::<B::InnerBackend, 2>(model.prototype_id());
    }
    let model = optim.step(lr, model, grads);
    Ok((model, optim, mean))
}
// ANCHOR_END: virtual_step

/// A device's copy of the model and optimiser, and the device.
type Replica<B> = (Mgca<B>, Adam<B>, burn::tensor::Device<B>);

/// The per-shard work of one step, on one device (virtual shards) or one device per shard.
struct Replicas<B: AutodiffBackend> {
    /// For shards 1.. on their own devices: the model replica and its optimiser.
    others: Vec<Option<Replica<B>>>,
    collective: bool,
}

impl<B> Replicas<B>
where
    B: AutodiffBackend + GradientLink,
{
    /// Replicas of `model` and `optim` (a resumed optimiser's moments included) on
    /// `devices[1..]`, registered with the collective.
    fn new(model: &Mgca<B>, optim: &Adam<B>, config: &MgcaConfig, devices: &[B::Device]) -> Result<Self, TrainError> {
        if devices.len() == 1 {
            return Ok(Self { others: Vec::new(), collective: false });
        }
        let others: Vec<_> = devices[1..]
            .iter()
            .map(|d| Some((model.clone().fork(d), optimizer::<B>(config).load_record(optim.to_record()), d.clone())))
            .collect();
        // Every peer registers at once (registration waits for all of them).
        let n = devices.len();
        let register = |peer: usize, device: B::Device| {
            let config = CollectiveConfig::default().with_num_devices(n);
            collective::register::<B::InnerBackend>(PeerId::from(peer), device, config)
                .map_err(|e| TrainError::Device(format!("collective registration of device {peer}: {e:?}")))
        };
        std::thread::scope(|scope| {
            let handles: Vec<_> = devices[1..]
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let d = d.clone();
                    scope.spawn(move || register(i + 1, d))
                })
                .collect();
            register(0, devices[0].clone())?;
            handles.into_iter().try_for_each(|h| h.join().expect("a registering thread"))
        })?;
        Ok(Self { others, collective: true })
    }

    /// One optimiser step over `shards`; `check` sees the mean losses before anything changes.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        model: Mgca<B>,
        optim: Adam<B>,
        objective: &Objective,
        shards: &[PairBatch],
        crop: usize,
        lr: f64,
        freeze: bool,
        dropout: impl Fn(usize) -> Option<(f64, DropoutKey)> + Sync,
        poison: bool,
        check: impl FnOnce(&Losses) -> Result<(), TrainError>,
    ) -> Result<(Mgca<B>, Adam<B>, Losses), TrainError> {
        if !self.collective {
            return virtual_step(model, optim, objective, shards, crop, lr, freeze, dropout, poison, check);
        }
        // One shard per device: each device forwards, back-propagates, all-reduces and steps
        // its own replica; every replica ends the step with the same weights.
        // ANCHOR: device_step
        let run = |peer: usize, model: Mgca<B>, mut optim: Adam<B>, shard: &PairBatch| {
            let model = model.renormalize_prototypes();
            let mode = if peer == 0 { Mode::Train } else { Mode::TrainShard };
            let (g, l) = shard_gradients(&model, objective, shard, crop, mode, dropout(peer), poison && peer == 0);
            let mut grads = g
                .all_reduce::<B::InnerBackend>(PeerId::from(peer), ReduceOperation::Mean)
                .map_err(|e| TrainError::Device(format!("all-reduce on device {peer}: {e:?}")))?;
            if freeze {
                grads.remove::<B::InnerBackend, 2>(model.prototype_id());
            }
            let model = if l.is_finite() { optim.step(lr, model, grads) } else { model };
            Ok::<_, TrainError>((model, optim, l))
        };
        // ANCHOR_END: device_step
        let others = &mut self.others;
        let (first, rest) = std::thread::scope(|scope| {
            let handles: Vec<_> = others
                .iter_mut()
                .zip(&shards[1..])
                .enumerate()
                .map(|(i, (slot, shard))| {
                    let (m, o, d) = slot.take().expect("a replica");
                    let run = &run;
                    scope.spawn(move || (run(i + 1, m, o, shard), d))
                })
                .collect();
            let first = run(0, model, optim, &shards[0]);
            let rest: Vec<_> = handles.into_iter().map(|h| h.join().expect("a device thread")).collect();
            (first, rest)
        });
        let mut losses = Vec::new();
        let (model, optim, l0) = first?;
        losses.push(l0);
        for ((result, device), slot) in rest.into_iter().zip(self.others.iter_mut()) {
            let (m, o, l) = result?;
            losses.push(l);
            *slot = Some((m, o, device));
        }
        let mean = Losses::mean(&losses);
        check(&mean)?;
        Ok((model, optim, mean))
    }

    fn finish(&mut self) -> Result<(), TrainError> {
        if !self.collective {
            return Ok(());
        }
        let n = self.others.len() + 1;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..n)
                .map(|p| scope.spawn(move || collective::finish_collective::<B::InnerBackend>(PeerId::from(p))))
                .collect();
            let first = collective::finish_collective::<B::InnerBackend>(PeerId::from(0));
            let rest: Vec<_> = handles.into_iter().map(|h| h.join().expect("a finishing thread")).collect();
            std::iter::once(first)
                .chain(rest)
                .try_for_each(|r| r.map_err(|e| TrainError::Device(format!("collective finish: {e:?}"))))
        })?;
        self.collective = false;
        Ok(())
    }
}

impl<B: AutodiffBackend> Drop for Replicas<B> {
    /// A run that ends with an error still unregisters its devices, so that the next run in
    /// this process can register again.
    fn drop(&mut self) {
        if self.collective {
            let n = self.others.len() + 1;
            std::thread::scope(|scope| {
                for p in 1..n {
                    scope.spawn(move || collective::finish_collective::<B::InnerBackend>(PeerId::from(p)).ok());
                }
                collective::finish_collective::<B::InnerBackend>(PeerId::from(0)).ok();
            });
        }
    }
}

#[cfg(test)]
mod tests;
