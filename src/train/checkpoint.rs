//! Checkpoints: the model, the optimiser's moments and step counts, and the trainer's state
//! (step, epoch, position in the epoch, early-stopping counters, the best checkpoints).
//!
//! The `last` checkpoint resumes a run exactly: with the epoch's shuffle and each batch's
//! crops derived from the seed, the epoch and the batch's index, the trainer's state is all
//! that the data side needs.
//!
//! **The protocol** (book: appendix "What happens when things go wrong", checkpoints): every
//! folder is written complete under `NAME.part` (each file written and fsynced, then the
//! folder), renamed into place (an existing folder first moves aside to `NAME.old`), and only
//! once `last` — the one record of which best folders exist — is in place are the folders it
//! supersedes deleted. [`recover`] brings a `checkpoints/` folder left by a crash at any point
//! back to the state `last` records. Every file operation of a save is counted, so a test can
//! stop the process at any one of them ([`Protocol::new`]'s `crash_at`).
//!
//! **Reproducible bytes**: burn gives each parameter a random id and keeps the optimiser's
//! state in a hash map keyed by it. Before writing, each id is replaced by one derived from
//! the parameter's module path ([`canonical_ids`]), in the model file and as the optimiser
//! file's keys, whose entries are written sorted. A loaded model carries the derived ids, so
//! the optimiser's state still finds its parameters, and the same run writes the same bytes.
//!
//! Generic over the module: pretraining saves the whole MGCA model, the downstream tasks their
//! trainable parts. Book: appendix "What happens when things go wrong" (the protocol) and
//! "Pretraining" (what is kept). Reference: the Lightning `ModelCheckpoint` callbacks of
//! `mgca/models/mgca/mgca_module.py`, `cli_main` (best 5 by `val_loss`, plus the last), and
//! of `mgca/models/mgca/mgca_finetuner.py`, `cli()` (best 1 plus the last), at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none in what is kept; the format is burn's named MessagePack records at full
//! precision, not PyTorch Lightning's `.ckpt`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::record::{BurnRecord, FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The resumable checkpoint's folder name inside `checkpoints/`.
pub const LAST: &str = "last";
/// The suffix of a folder being written.
pub const PART: &str = ".part";
/// The suffix of a folder being replaced.
pub const OLD: &str = ".old";
/// The prefix of the best checkpoints' folder names (`epoch=003-val_loss=1.2345`).
pub const BEST_PREFIX: &str = "epoch=";
/// The exit status of a process stopped by an injected fault (a testing aid, never 0, 1 or 2).
pub const FAULT_EXIT: i32 = 86;

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

/// A checkpoint problem, naming the file or folder.
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

type Settings = FullPrecisionSettings;

fn bytes_recorder() -> NamedMpkBytesRecorder<Settings> {
    NamedMpkBytesRecorder::default()
}

/// `dir` with `suffix` appended to its last component (`last` → `last.part`).
fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

// ---------------------------------------------------------------------------------------------
// Reproducible ids and bytes.

/// Every parameter's (and running statistic's) module path and id, in visiting order.
#[derive(Default)]
struct Paths {
    stack: Vec<String>,
    found: Vec<(String, ParamId)>,
}

impl Paths {
    fn push(&mut self, id: ParamId) {
        self.found.push((self.stack.join("."), id));
    }
}

impl<B: Backend> ModuleVisitor<B> for Paths {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.push(param.id);
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.push(param.id);
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.push(param.id);
    }
}

/// The id a parameter at module path `path` gets in a checkpoint: the first 8 bytes of the
/// SHA-256 of the path.
pub fn path_id(path: &str) -> ParamId {
    let digest = Sha256::digest(path.as_bytes());
    ParamId::from(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// Each of the model's current parameter ids and the id derived from its module path.
pub fn canonical_ids<B: Backend, M: Module<B>>(model: &M) -> HashMap<ParamId, ParamId> {
    let mut paths = Paths::default();
    model.visit(&mut paths);
    paths.found.into_iter().map(|(path, id)| (id, path_id(&path))).collect()
}

/// The model's file: burn's named MessagePack record, every `id` replaced by its path's.
pub fn model_bytes<B: Backend, M: Module<B>>(model: &M, ids: &HashMap<ParamId, ParamId>) -> Result<Vec<u8>, String> {
    let record =
        BurnRecord::<_, B>::new::<NamedMpkFileRecorder<Settings>>(model.clone().into_record().into_item::<Settings>());
    let mut bytes = Recorder::<B>::save_item(&bytes_recorder(), record, ()).map_err(|e| format!("{e}"))?;
    let ids: HashMap<String, String> = ids.iter().map(|(a, b)| (a.serialize(), b.serialize())).collect();
    let end = msgpack::rewrite_ids(&mut bytes, 0, &ids)?;
    if end != bytes.len() {
        return Err(format!("{} bytes after the record", bytes.len() - end));
    }
    Ok(bytes)
}

/// The optimiser's file: its record keyed by the path-derived ids, in key order.
pub fn optimizer_bytes<B: Backend, T: Record<B>>(
    record: impl IntoIterator<Item = (ParamId, T)>,
    ids: &HashMap<ParamId, ParamId>,
) -> Result<Vec<u8>, String> {
    let item: BTreeMap<String, T::Item<Settings>> = record
        .into_iter()
        .map(|(id, r)| (ids.get(&id).copied().unwrap_or(id).serialize(), r.into_item::<Settings>()))
        .collect();
    let record = BurnRecord::<_, B>::new::<NamedMpkFileRecorder<Settings>>(item);
    Recorder::<B>::save_item(&bytes_recorder(), record, ()).map_err(|e| format!("{e}"))
}

/// Just enough MessagePack to walk a record and rewrite the ids in place.
mod msgpack {
    use std::collections::HashMap;

    fn take(buf: &[u8], pos: usize, n: usize) -> Result<usize, String> {
        pos.checked_add(n).filter(|&e| e <= buf.len()).ok_or_else(|| format!("truncated at byte {pos}"))
    }

    fn uint(buf: &[u8], pos: usize, n: usize) -> Result<usize, String> {
        let end = take(buf, pos, n)?;
        Ok(buf[pos..end].iter().fold(0usize, |a, &b| (a << 8) | b as usize))
    }

    /// The string at `pos`: (start of its bytes, its length, the position after it).
    fn str_at(buf: &[u8], pos: usize) -> Option<(usize, usize, usize)> {
        let tag = *buf.get(pos)?;
        let (start, len) = match tag {
            0xa0..=0xbf => (pos + 1, (tag & 0x1f) as usize),
            0xd9 => (pos + 2, uint(buf, pos + 1, 1).ok()?),
            0xda => (pos + 3, uint(buf, pos + 1, 2).ok()?),
            0xdb => (pos + 5, uint(buf, pos + 1, 4).ok()?),
            _ => return None,
        };
        let end = take(buf, start, len).ok()?;
        Some((start, len, end))
    }

    /// Walk the value at `pos`, replacing the string value of every `id` key found in `ids`
    /// (same length: ids are 13 base-32 characters); returns the position after it.
    pub fn rewrite_ids(buf: &mut [u8], pos: usize, ids: &HashMap<String, String>) -> Result<usize, String> {
        let tag = *buf.get(pos).ok_or_else(|| format!("truncated at byte {pos}"))?;
        let next = pos + 1;
        let (items, map) = match tag {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => return Ok(next),
            0x80..=0x8f => ((tag & 0x0f) as usize, true),
            0x90..=0x9f => ((tag & 0x0f) as usize, false),
            0xa0..=0xbf | 0xd9..=0xdb => {
                return str_at(buf, pos).map(|s| s.2).ok_or_else(|| format!("truncated string at byte {pos}"));
            }
            0xc4 => return take(buf, next + 1, uint(buf, next, 1)?),
            0xc5 => return take(buf, next + 2, uint(buf, next, 2)?),
            0xc6 => return take(buf, next + 4, uint(buf, next, 4)?),
            0xc7 => return take(buf, next + 2, uint(buf, next, 1)?),
            0xc8 => return take(buf, next + 3, uint(buf, next, 2)?),
            0xc9 => return take(buf, next + 5, uint(buf, next, 4)?),
            0xca | 0xce | 0xd2 => return take(buf, next, 4),
            0xcb | 0xcf | 0xd3 => return take(buf, next, 8),
            0xcc | 0xd0 => return take(buf, next, 1),
            0xcd | 0xd1 => return take(buf, next, 2),
            0xd4..=0xd8 => return take(buf, next + 1, 1 << (tag - 0xd4)),
            0xdc => (uint(buf, next, 2)?, false),
            0xdd => (uint(buf, next, 4)?, false),
            0xde => (uint(buf, next, 2)?, true),
            0xdf => (uint(buf, next, 4)?, true),
            0xc1 => return Err(format!("byte {pos}: 0xc1 is not MessagePack")),
        };
        let mut at = match tag {
            0xdc | 0xde => next + 2,
            0xdd | 0xdf => next + 4,
            _ => next,
        };
        for _ in 0..items {
            if !map {
                at = rewrite_ids(buf, at, ids)?;
                continue;
            }
            let is_id = str_at(buf, at).is_some_and(|(s, n, _)| &buf[s..s + n] == b"id");
            at = rewrite_ids(buf, at, ids)?;
            if let Some((start, len, end)) = str_at(buf, at).filter(|_| is_id) {
                let old = std::str::from_utf8(&buf[start..start + len]).unwrap_or_default();
                if let Some(new) = ids.get(old) {
                    if new.len() != len {
                        return Err(format!("byte {start}: an id of {len} characters"));
                    }
                    buf[start..end].copy_from_slice(new.as_bytes());
                }
            }
            at = rewrite_ids(buf, at, ids)?;
        }
        Ok(at)
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol.

/// What one checkpoint folder holds: file name and bytes (written in this order; `state.json`
/// last).
pub type Files = Vec<(&'static str, Vec<u8>)>;

/// The file operations of the checkpoint protocol, counted. With `crash_at = Some(k)` the
/// process stops at operation `k` (0-based, over the whole run) as a kill would: a file write
/// leaves half the file, a rename or removal does not happen. A testing aid.
#[derive(Debug)]
pub struct Protocol {
    /// The `checkpoints/` folder.
    dir: PathBuf,
    done: usize,
    crash_at: Option<usize>,
}

impl Protocol {
    pub fn new(dir: impl Into<PathBuf>, crash_at: Option<usize>) -> Self {
        Self { dir: dir.into(), done: 0, crash_at }
    }

    /// The `checkpoints/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Operations done so far.
    pub fn operations(&self) -> usize {
        self.done
    }

    /// Count one operation; whether the fault is injected here.
    fn fault_here(&mut self, what: &str, path: &Path) -> bool {
        let here = self.crash_at == Some(self.done);
        if here {
            eprintln!("checkpoint: fault injected at operation {}: {what} {}", self.done, path.display());
        }
        self.done += 1;
        here
    }

    fn stop() -> ! {
        std::process::exit(FAULT_EXIT)
    }

    fn create_dir(&mut self, path: &Path) -> Result<(), CheckpointError> {
        if self.fault_here("create", path) {
            Self::stop();
        }
        std::fs::create_dir(path).map_err(|e| err(path, e))
    }

    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
        let fault = self.fault_here("write", path);
        let mut file = std::fs::File::create(path).map_err(|e| err(path, e))?;
        if fault {
            file.write_all(&bytes[..bytes.len() / 2]).ok();
            Self::stop();
        }
        file.write_all(bytes).map_err(|e| err(path, e))?;
        file.sync_all().map_err(|e| err(path, e))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), CheckpointError> {
        if self.fault_here("rename", from) {
            Self::stop();
        }
        std::fs::rename(from, to).map_err(|e| CheckpointError(format!("{} -> {}: {e}", from.display(), to.display())))
    }

    fn remove_dir(&mut self, path: &Path) -> Result<(), CheckpointError> {
        if self.fault_here("remove", path) {
            Self::stop();
        }
        std::fs::remove_dir_all(path).map_err(|e| err(path, e))
    }

    // ANCHOR: protocol
    /// Write the folder `name` complete under `name.part`, then put it in place of any folder
    /// of that name (which moves aside to `name.old` and is removed once the new one is in place).
    fn write_folder(&mut self, name: &str, files: &Files) -> Result<(), CheckpointError> {
        let target = self.dir.join(name);
        let (part, old) = (with_suffix(&target, PART), with_suffix(&target, OLD));
        if part.exists() {
            self.remove_dir(&part)?; // a leftover of an interrupted save
        }
        self.create_dir(&part)?; // (1) NAME.part/ appears
        for (file, bytes) in files {
            self.write_file(&part.join(file), bytes)?; // (2) each file, written and fsynced
        }
        sync_dir(&part)?;
        if target.exists() {
            if old.exists() {
                self.remove_dir(&old)?;
            }
            self.rename(&target, &old)?; // (3) the previous NAME becomes NAME.old
        }
        self.rename(&part, &target)?; // (4) NAME.part becomes NAME
        sync_dir(&self.dir)?;
        if old.exists() {
            self.remove_dir(&old)?; // (5) NAME.old goes
        }
        Ok(())
    }

    /// Save a step of the run: a new best folder (if any), then `last` — whose state lists
    /// the best folders kept — and only then remove the best folders it no longer lists.
    pub fn save(
        &mut self,
        last: &Files,
        new_best: Option<(&str, &Files)>,
        superseded: &[String],
    ) -> Result<(), CheckpointError> {
        if let Some((name, files)) = new_best {
            self.write_folder(name, files)?; // not yet listed: a crash here leaves an extra folder
        }
        self.write_folder(LAST, last)?; // the commit point
        for name in superseded {
            let dir = self.dir.join(name);
            if dir.exists() {
                self.remove_dir(&dir)?; // (6) no longer listed by `last`
            }
        }
        sync_dir(&self.dir)
    }
    // ANCHOR_END: protocol
}

/// fsync a folder, so that the renames and removals in it are on disk.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(dir, e))
}

/// A `last` checkpoint's files: the model, the optimiser record, the state.
pub fn last_files<B: AutodiffBackend, M: Module<B>, T: Record<B>>(
    model: &M,
    optimizer: impl IntoIterator<Item = (ParamId, T)>,
    state: &TrainState,
) -> Result<Files, CheckpointError> {
    let ids = canonical_ids(model);
    let fail = |what: &str, e: String| CheckpointError(format!("cannot encode the {what} record: {e}"));
    Ok(vec![
        ("model.mpk", model_bytes(model, &ids).map_err(|e| fail("model", e))?),
        ("optimizer.mpk", optimizer_bytes(optimizer, &ids).map_err(|e| fail("optimiser", e))?),
        ("state.json", state_bytes(state)),
    ])
}

/// A best checkpoint's files: the model and the state.
pub fn best_files<B: AutodiffBackend, M: Module<B>>(model: &M, state: &TrainState) -> Result<Files, CheckpointError> {
    let bytes = model_bytes(model, &canonical_ids(model))
        .map_err(|e| CheckpointError(format!("cannot encode the model record: {e}")))?;
    Ok(vec![("model.mpk", bytes), ("state.json", state_bytes(state))])
}

fn state_bytes(state: &TrainState) -> Vec<u8> {
    (serde_json::to_string_pretty(state).expect("serialisable state") + "\n").into_bytes()
}

// ANCHOR: recover
/// Bring `checkpoints/` back to what `last` records after a crash at any point of a save:
/// `.part` folders go; a missing `last` is restored from `last.old` (the save that moved it
/// aside never completed); best folders `last` does not list go (written by a save that never
/// completed, or superseded ones whose removal did not happen); listed ones that are missing
/// are dropped from the list with a warning. Returns `last`'s state, if there is one.
pub fn recover(dir: &Path) -> Result<Option<TrainState>, CheckpointError> {
    if !dir.exists() {
        return Ok(None);
    }
    let last = dir.join(LAST);
    let old = with_suffix(&last, OLD);
    for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let path = entry.map_err(|e| err(dir, e))?.path();
        if path.is_dir() && path.to_string_lossy().ends_with(PART) {
            eprintln!("train: removing {} (an interrupted save)", path.display());
            std::fs::remove_dir_all(&path).map_err(|e| err(&path, e))?;
        }
    }
    if !last.join("state.json").exists() && old.join("state.json").exists() {
        if last.exists() {
            return Err(err(
                &last,
                format!("incomplete (no state.json) while {} exists: move one away", old.display()),
            ));
        }
        eprintln!("train: restoring {} from {} (an interrupted save)", last.display(), old.display());
        std::fs::rename(&old, &last).map_err(|e| err(&old, e))?;
    }
    let mut state = if last.join("state.json").exists() { Some(load_state(&last)?) } else { None };
    if let Some(state) = &mut state {
        state.best.retain(|(_, _, name)| {
            let folder = dir.join(name);
            let whole = folder.join("model.mpk").exists() && folder.join("state.json").exists();
            if !whole {
                eprintln!("train: warning: {} is listed as a best checkpoint but missing: dropped", folder.display());
            }
            whole
        });
    }
    let listed: Vec<&str> = state.iter().flat_map(|s| s.best.iter().map(|b| b.2.as_str())).collect();
    for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let path = entry.map_err(|e| err(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let garbage = name.ends_with(OLD) || (name.starts_with(BEST_PREFIX) && !listed.contains(&name.as_str()));
        if path.is_dir() && garbage {
            eprintln!("train: removing {} (not listed by {})", path.display(), last.display());
            std::fs::remove_dir_all(&path).map_err(|e| err(&path, e))?;
        }
    }
    sync_dir(dir)?;
    Ok(state)
}
// ANCHOR_END: recover

/// The folder to resume from, without changing anything: `dir`, or the previous copy if a
/// crash hit between the renames.
pub fn resolve(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), with_suffix(dir, OLD)].into_iter().find(|d| d.join("state.json").exists())
}

/// Read a checkpoint's state.
pub fn load_state(dir: &Path) -> Result<TrainState, CheckpointError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| err(&path, e))
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|e| err(path, e))
}

/// Load a checkpoint's weights into `model` (same architecture).
pub fn load_model<B: Backend, M: Module<B>>(dir: &Path, model: M, device: &B::Device) -> Result<M, CheckpointError> {
    let path = dir.join("model.mpk");
    let record = Recorder::<B>::load(&bytes_recorder(), read(&path)?, device)
        .map_err(|e| err(&path, format!("not a checkpoint of this model: {e}")))?;
    Ok(model.load_record(record))
}

/// Load a checkpoint's optimiser record.
pub fn load_optimizer<B: Backend, R: Record<B>>(dir: &Path, device: &B::Device) -> Result<R, CheckpointError> {
    let path = dir.join("optimizer.mpk");
    Recorder::<B>::load(&bytes_recorder(), read(&path)?, device)
        .map_err(|e| err(&path, format!("not an optimiser record of this model: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuAutodiff, cpu_device};
    use crate::config::MgcaConfig;

    /// Two models built apart (different random ids) write the same bytes; the ids in the file
    /// are the path-derived ones, and a loaded model carries them.
    #[test]
    fn model_bytes_do_not_depend_on_random_ids() {
        let config = MgcaConfig::smoke();
        let a = config.init_model_seeded::<CpuAutodiff>(1, &cpu_device());
        let b = config.init_model_seeded::<CpuAutodiff>(1, &cpu_device());
        assert_ne!(a.prototype_id(), b.prototype_id(), "burn's ids are random");
        let (ia, ib) = (canonical_ids(&a), canonical_ids(&b));
        let bytes = model_bytes(&a, &ia).unwrap();
        assert_eq!(bytes, model_bytes(&b, &ib).unwrap());
        assert!(!bytes.windows(13).any(|w| w == a.prototype_id().serialize().as_bytes()));
        let dir = std::env::temp_dir().join(format!("mgca-ckpt-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.mpk"), &bytes).unwrap();
        let loaded = load_model(&dir, b, &cpu_device()).unwrap();
        assert_eq!(loaded.prototype_id(), ia[&a.prototype_id()]);
        assert_eq!(model_bytes(&loaded, &canonical_ids(&loaded)).unwrap(), bytes);
        std::fs::remove_dir_all(dir).ok();
    }

    fn folder(dir: &Path, name: &str, state: &TrainState) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("model.mpk"), b"weights").unwrap();
        std::fs::write(dir.join(name).join("state.json"), state_bytes(state)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// What each crash point of a save leaves, brought back to what `last` records.
    #[test]
    fn recover_from_what_a_crash_leaves() {
        let dir = std::env::temp_dir().join(format!("mgca-ckpt-recover-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let (a, b, c) = ("epoch=000-val_loss=2.0000", "epoch=001-val_loss=1.0000", "epoch=002-val_loss=0.5000");
        let listed =
            TrainState { step: 4, best: vec![(1.0, 1, b.into()), (2.0, 0, a.into())], ..TrainState::default() };
        // A new best folder and `last.part` written, `last` not yet replaced; a superseded folder
        // listed by `last` but already gone (hand-deleted); a stray `.part` of a best folder.
        folder(&dir, LAST, &listed);
        folder(&dir, b, &listed);
        folder(&dir, c, &listed);
        folder(&dir, "last.part", &TrainState::default());
        std::fs::create_dir_all(dir.join(format!("{c}{PART}"))).unwrap();
        let state = recover(&dir).unwrap().unwrap();
        assert_eq!(state.best, vec![(1.0, 1, b.to_string())], "the missing one is dropped");
        assert_eq!(names(&dir), vec![b.to_string(), LAST.to_string()]);
        // Between the two renames: `last` moved aside, the new one not yet in place.
        std::fs::rename(dir.join(LAST), dir.join("last.old")).unwrap();
        folder(&dir, "last.part", &TrainState::default());
        assert_eq!(resolve(&dir.join(LAST)), Some(dir.join("last.old")));
        let state = recover(&dir).unwrap().unwrap();
        assert_eq!(state.step, 4);
        assert_eq!(names(&dir), vec![b.to_string(), LAST.to_string()]);
        // After the second rename: the new `last` and the old copy.
        folder(&dir, "last.old", &TrainState::default());
        assert_eq!(recover(&dir).unwrap().unwrap().step, 4);
        assert_eq!(names(&dir), vec![b.to_string(), LAST.to_string()]);
        // A crash before the first `last` existed: no state, the orphans go.
        std::fs::remove_dir_all(dir.join(LAST)).unwrap();
        folder(&dir, "last.part", &TrainState::default());
        assert_eq!(recover(&dir).unwrap(), None);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        std::fs::remove_dir_all(dir).ok();
    }

    /// A failed write names the file and the operating system's error, not the encoder's.
    #[test]
    fn a_failed_write_names_the_path_and_the_os_error() {
        let file = std::env::temp_dir().join(format!("mgca-ckpt-blocked-{}", std::process::id()));
        std::fs::write(&file, b"a file where a folder should be").unwrap();
        let mut protocol = Protocol::new(file.join("checkpoints"), None);
        let files: Files = vec![("state.json", state_bytes(&TrainState::default()))];
        let message = protocol.save(&files, None, &[]).unwrap_err().to_string();
        assert!(message.contains("checkpoints/last.part") && message.contains("os error"), "{message}");
        std::fs::remove_file(file).ok();
    }

    /// The walker refuses what is not MessagePack instead of panicking.
    #[test]
    fn msgpack_walker_reports_truncation() {
        let ids = HashMap::new();
        assert!(msgpack::rewrite_ids(&mut [0x92, 0x01], 0, &ids).is_err());
        assert!(msgpack::rewrite_ids(&mut [0xc1], 0, &ids).is_err());
        assert!(msgpack::rewrite_ids(&mut [0xdb, 0xff, 0xff, 0xff, 0xff], 0, &ids).is_err());
        assert_eq!(msgpack::rewrite_ids(&mut [0x81, 0xa1, b'a', 0xc3], 0, &ids), Ok(4));
    }
}
