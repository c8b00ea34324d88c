//! The fuzz harness in CI: a short run of every target through the real driver (child
//! processes, so an abort or a hang is caught and isolated too), and the crash regressions.
//!
//! - `golden/fuzz/<target>/crashes/`: inputs that once crashed a reader and are fixed; each
//!   must now run clean.
//! - `golden/fuzz/<target>/pending/`: inputs that crash a reader whose fix has not merged yet.
//!   The short run may find them (or others equal to them byte for byte) without failing;
//!   any other crash fails. When a fix merges, its files move from `pending/` to `crashes/`.
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mgca_fuzz::targets::{Scratch, TARGETS};
use mgca_fuzz::{catch, corpus_root, crash_files, install_silent_hook};

#[global_allocator]
static ALLOC: mgca_fuzz::alloc::Capped = mgca_fuzz::alloc::Capped;

/// Iterations per target in the CI run (a few seconds in all in the test profile).
const CI_EXECS: u64 = 300;
/// The CI run's seed (fixed: the run is the same every time).
const CI_SEED: u64 = 7;
/// A generous per-input limit: the test profile is slower than release, CI machines are shared.
const CI_HANG_MS: u64 = 20_000;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

#[test]
fn short_run_of_every_target_finds_no_new_crash() {
    let crashes = std::env::temp_dir().join(format!("mgca-fuzz-ci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&crashes);
    let out = Command::new(env!("CARGO_BIN_EXE_mgca-fuzz"))
        .args(["run", "--target", "all", "--jobs", "2"])
        .args(["--execs", &CI_EXECS.to_string(), "--seed", &CI_SEED.to_string()])
        .args(["--hang-ms", &CI_HANG_MS.to_string()])
        .arg("--crashes")
        .arg(&crashes)
        .output()
        .expect("the mgca-fuzz binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    // Every target ran its executions.
    for t in TARGETS {
        let row = stdout.lines().find(|l| l.starts_with(&format!("| {} |", t.name)));
        let row = row.unwrap_or_else(|| panic!("no figures for target {}", t.name));
        let execs: u64 = row.split('|').nth(2).and_then(|c| c.trim().parse().ok()).expect("executions");
        assert_eq!(execs, CI_EXECS, "{row}");
    }
    let pending: BTreeSet<(String, Vec<u8>)> = TARGETS
        .iter()
        .flat_map(|t| {
            crash_files(&corpus_root().join(t.name), "pending")
                .into_iter()
                .map(move |p| (t.name.to_string(), std::fs::read(p).expect("readable")))
        })
        .collect();
    let new: Vec<String> = files_under(&crashes)
        .into_iter()
        .filter(|f| {
            let target = f.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            !pending.contains(&(target.unwrap_or_default(), std::fs::read(f).expect("readable")))
        })
        .map(|f| f.display().to_string())
        .collect();
    if new.is_empty() {
        let _ = std::fs::remove_dir_all(&crashes);
    }
    assert!(new.is_empty(), "new crashes (replay each with `mgca-fuzz replay --target NAME FILE`): {new:#?}");
    if pending.is_empty() {
        assert!(out.status.success(), "mgca-fuzz run failed: {}", out.status);
    }
}

#[test]
fn fixed_crashes_stay_fixed() {
    install_silent_hook();
    let scratch = Scratch::new().expect("scratch");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for t in TARGETS {
        for f in crash_files(&corpus_root().join(t.name), "crashes") {
            let input = std::fs::read(&f).expect("readable");
            if let Err(p) = catch(t, &input, &scratch) {
                failures.push(format!("{}: {}", f.display(), p.message));
            }
            replayed += 1;
        }
    }
    eprintln!("{replayed} fixed crash input(s) replayed");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every seed folder exists and holds seeds; no stray folder names a target that is gone.
#[test]
fn every_target_has_seeds() {
    for t in TARGETS {
        let corpus = mgca_fuzz::load_corpus(&corpus_root().join(t.name)).expect("seed folder");
        assert!(!corpus.is_empty(), "{}: no seeds", t.name);
    }
    for entry in std::fs::read_dir(corpus_root()).expect("golden/fuzz").flatten() {
        if entry.path().is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(mgca_fuzz::targets::find(&name).is_some(), "golden/fuzz/{name} is not a target");
        }
    }
}
