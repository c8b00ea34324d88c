//! # mgca-fuzz — seeded mutation fuzzing of mgca's readers, on stable Rust
//!
//! Every reader that takes bytes from outside (checkpoint containers and pickles, the
//! datasets' label files, MIMIC reports and CSVs, RLE masks, DICOM / JPEG / PNG images,
//! experiment files) is a [`targets::Target`]. An input is a pure function of
//! `(target, seed, iteration)` ([`mutate::Mutator::input`]), so every failure is replayed by
//! its number. This library runs inputs in-process with panics caught ([`run_range`]); the
//! `mgca-fuzz` binary runs batches in child processes so that aborts (a refused allocation,
//! a stack overflow) and hangs are caught too, and isolates the input that caused them.
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).
//!
//! **Deviation:** none (no reference counterpart). Not coverage-guided: cargo-fuzz needs a
//! nightly toolchain, and this harness must run in CI on stable.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use mutate::Mutator;
use targets::{Scratch, Target};

/// Sub-folders of a corpus folder that hold crash regressions, not seeds.
pub const CRASH_FOLDERS: [&str; 2] = ["crashes", "pending"];

/// The seed corpus of a target: the files directly in `golden/fuzz/<target>/`, sorted by name.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// The regression inputs of a target: every file in `golden/fuzz/<target>/<folder>/`.
pub fn crash_files(dir: &Path, folder: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The repository's `golden/fuzz` folder (from this crate's manifest folder).
pub fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../golden/fuzz")
}

/// The mutator for `target`.
pub fn mutator(target: &Target) -> Mutator<'static> {
    Mutator { text: target.text, dictionary: target.dictionary, max_len: target.max_len }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install a panic hook that prints nothing and records `file:line:col: message` for
/// [`catch`]. Call once per process before fuzzing.
pub fn install_silent_hook() {
    panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let location = info.location().map_or("?".to_string(), |l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{location}: {message}")));
    }));
}

/// A caught panic: where (`file:line:col`), and the whole `location: message` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    pub location: String,
    pub message: String,
}

/// Run one input with panics caught (needs [`install_silent_hook`] for the location).
pub fn catch(target: &Target, data: &[u8], scratch: &Scratch) -> Result<(), Panic> {
    LAST_PANIC.with(|p| p.borrow_mut().take());
    match panic::catch_unwind(AssertUnwindSafe(|| (target.run)(data, scratch))) {
        Ok(()) => Ok(()),
        Err(_) => {
            let line = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "?: (no hook message)".into());
            // `src/x.rs:12:5: message` → location `src/x.rs:12:5`.
            let location = line.splitn(4, ':').take(3).collect::<Vec<_>>().join(":");
            Err(Panic { location, message: one_line(&line) })
        }
    }
}

/// A message on one line, at most 400 characters.
pub fn one_line(s: &str) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    flat.chars().take(400).collect()
}

/// What an in-process range of iterations found.
#[derive(Debug, Default)]
pub struct RangeReport {
    pub executions: u64,
    /// `(iteration, panic)` for every panicking input.
    pub panics: Vec<(u64, Panic)>,
}

/// Run iterations `start..end` of `target` in this process, panics caught.
pub fn run_range(target: &Target, corpus: &[Vec<u8>], seed: u64, start: u64, end: u64) -> RangeReport {
    let scratch = Scratch::new().expect("a scratch folder");
    let m = mutator(target);
    let mut report = RangeReport::default();
    for i in start..end {
        let input = m.input(corpus, target.name, seed, i);
        if let Err(p) = catch(target, &input, &scratch) {
            report.panics.push((i, p));
        }
        report.executions += 1;
    }
    report
}
