//! The bad-input corpus through the real `pretrain` binary (issue 11): the cases of
//! `tests/bad_inputs/cases.toml` (at the workspace root) whose command is `pretrain`; the
//! runner and the table are shared with the root package's `tests/bad_inputs.rs`.

#[path = "../../tests/bad_inputs/runner.rs"]
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mgca::data::prepare::{Dataset, PrepareOptions, Task, prepare};
use mgca::data::synth::{self, Scale};

/// `pretrain` exits 1 for every error until the checkpoint branch gives bad input its exit
/// code 2 (COMMON exit-code policy); the lead sets this to `None` when merging it.
const INTERIM_BAD_INPUT_EXIT: Option<i32> = None;

/// The `gen NAME` steps of the `pretrain` cases.
fn generate(name: &str, tmp: &Path) -> Result<(), String> {
    match name {
        // What `pretrain` prepares for `tiny.toml` (synthetic, tiny, seed 3), less valid.csv.
        "prepared_without_valid" => {
            let dir = tmp.join("runs/data/synthetic-tiny-3");
            let root = dir.join("mimic");
            synth::mimic(&root, Scale::Tiny, 3).map_err(|e| e.to_string())?;
            let prepared = dir.join("mimic-prepared");
            let options = PrepareOptions::new(Dataset::Mimic, Task::Pretraining, root);
            prepare(&options).and_then(|p| p.write(&prepared)).map_err(|e| e.to_string())?;
            std::fs::remove_file(prepared.join("valid.csv")).map_err(|e| e.to_string())
        }
        other => Err(format!("no generator `{other}`")),
    }
}

#[test]
fn pretrain_cases_exit_and_name_their_cause() {
    let cases = runner::read_cases();
    let h = runner::Harness {
        binaries: BTreeMap::from([("pretrain", PathBuf::from(env!("CARGO_BIN_EXE_pretrain")))]),
        generate: &generate,
        placeholders: Vec::new(),
        interim_bad_input_exit: INTERIM_BAD_INPUT_EXIT,
    };
    let ran = h.run_all(&cases);
    assert!(ran.iter().filter(|n| n.starts_with("pretrain-")).count() >= 10, "ran {ran:?}");
}
