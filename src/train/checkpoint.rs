//! Checkpoints: the model, the optimiser's moments and step counts, and the trainer's state
//! (step, epoch, position in the epoch, early-stopping counters, the best checkpoints), written
//! to a temporary folder and renamed into place, so a crash never leaves a half-written one.
//!
//! The `last` checkpoint resumes a run exactly: with the epoch's shuffle and each batch's
//! crops derived from the seed, the epoch and the batch's index, the trainer's state is all
//! that the data side needs.
//!
//! Spec: `hyperparameters.md` §1 (best 5 by validation loss, plus the last).
//!
//! **Deviation:** none in what is kept; the format is burn's named MessagePack records at full
//! precision, not PyTorch Lightning's `.ckpt`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::model::mgca::Mgca;

/// The trainer's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: usize,
    /// The epoch the next step belongs to.
    pub epoch: usize,
    /// Steps of that epoch already done.
    pub step_in_epoch: usize,
    /// The lowest validation loss so far.
    pub best_val: Option<f64>,
    /// Epochs since the validation loss last fell (early stopping).
    pub wait: usize,
    /// The kept best checkpoints: `(val_loss, epoch, folder name)`, lowest first.
    pub best: Vec<(f64, usize, String)>,
    /// Whether the run has ended (all epochs, early stopping, or `max_steps`).
    pub finished: bool,
    /// Why it ended.
    pub stop_reason: Option<String>,
}

/// A checkpoint problem, naming the folder.
#[derive(Debug)]
pub struct CheckpointError(pub String);

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckpointError {}

fn err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError(format!("{}: {e}", path.display()))
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

// ANCHOR: save
/// Write a checkpoint into `dir` atomically: model, optimiser record (if any), state.
pub fn save<B: AutodiffBackend, R: burn::record::Record<B>>(
    dir: &Path,
    model: &Mgca<B>,
    optimizer: Option<R>,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    let tmp = dir.with_extension("part");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    model.clone().save_file(tmp.join("model"), &recorder()).map_err(|e| err(&tmp, e))?;
    if let Some(record) = optimizer {
        Recorder::<B>::record(&recorder(), record, tmp.join("optimizer")).map_err(|e| err(&tmp, e))?;
    }
    let json = serde_json::to_string_pretty(state).expect("serialisable state");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| err(&tmp, e))?;
    let old = dir.with_extension("old");
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| err(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| err(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| err(&old, e))?;
    }
    Ok(())
}
// ANCHOR_END: save

/// The folder to resume from: `dir`, or the previous copy if a crash hit between the renames.
pub fn resolve(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.with_extension("old")].into_iter().find(|d| d.join("state.json").exists())
}

/// Read a checkpoint's state.
pub fn load_state(dir: &Path) -> Result<TrainState, CheckpointError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| err(&path, e))
}

/// Load a checkpoint's weights into `model` (same architecture).
pub fn load_model<B: AutodiffBackend>(
    dir: &Path,
    model: Mgca<B>,
    device: &B::Device,
) -> Result<Mgca<B>, CheckpointError> {
    model.load_file(dir.join("model"), &recorder(), device).map_err(|e| err(dir, e))
}

/// Load a checkpoint's optimiser record.
pub fn load_optimizer<B: AutodiffBackend, R: burn::record::Record<B>>(
    dir: &Path,
    device: &B::Device,
) -> Result<R, CheckpointError> {
    Recorder::<B>::load(&recorder(), dir.join("optimizer"), device).map_err(|e| err(dir, e))
}
