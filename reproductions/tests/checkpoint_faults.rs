//! The checkpoint protocol under a kill at every one of its operations: `pretrain` is stopped
//! at operation k of the run's saves (`--crash-at-write k`, which exits as a kill would,
//! leaving a half-written file at a write), then resumed to the end; for every k the run
//! folder ends as an uninterrupted run's: the same checkpoint files byte for byte, the same
//! losses. The walk ends at the first k the run completes without reaching.
//!
//! Book: appendix "What happens when things go wrong" (the checkpoint protocol).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{pretrain, tmp, tree};

/// The exit status of a process stopped by an injected fault (`mgca::train::checkpoint::FAULT_EXIT`).
const FAULT_EXIT: i32 = 86;
/// A run of 2 epochs of 4 steps saving `last` every 2 steps and the best checkpoint each epoch
/// has more operations than this; fewer means the walk missed a part of the protocol.
const MIN_OPERATIONS: usize = 25;

/// 2 epochs of 4 steps (34 pairs, 2 × 4 per step), `last` every 2 steps, the single best
/// checkpoint replaced when epoch 1 improves on epoch 0.
const WALK: &str = r#"
name = "walk"
reproduces = "a fault-injection test"
tier = "smoke"
preset = "smoke"
image_encoder = "vit_base"

[data.synthetic]
scale = "tiny"
seed = 3

[config.train]
epochs = 2
shard_batch = 4
checkpoint_every = 2
keep_best = 1
"#;

/// `metrics.csv` without the throughput column (the last), and `valid.csv`.
fn logs(run: &Path) -> (Vec<String>, String) {
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows = metrics.lines().map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_string()).collect();
    (rows, std::fs::read_to_string(run.join("valid.csv")).unwrap())
}

#[test]
fn a_kill_at_every_checkpoint_operation_resumes_to_the_same_run() {
    let dir = tmp("faults");
    let config = dir.join("walk.toml");
    std::fs::write(&config, WALK).unwrap();
    let out = dir.join("out");
    let run = out.join("walk");

    let whole = pretrain(&config, &out, &[]);
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let want_files = tree(&run.join("checkpoints"));
    let want_logs = logs(&run);
    let state: serde_json::Value =
        serde_json::from_slice(&want_files["last/state.json"]).expect("last/state.json is JSON");
    assert_eq!(state["best"][0][1], 1, "epoch 1 must replace epoch 0 as the best, so the walk covers a removal");

    let mut kinds = BTreeMap::new();
    let mut k = 0;
    loop {
        std::fs::remove_dir_all(&run).unwrap();
        let crashed = pretrain(&config, &out, &["--crash-at-write", &k.to_string()]);
        let stderr = String::from_utf8_lossy(&crashed.stderr).into_owned();
        if crashed.status.success() {
            break; // the run has fewer than k + 1 operations: every one was a crash point
        }
        assert_eq!(crashed.status.code(), Some(FAULT_EXIT), "operation {k}: {stderr}");
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix(&format!("checkpoint: fault injected at operation {k}: ")))
            .unwrap_or_else(|| panic!("operation {k}: no fault message: {stderr}"))
            .to_string();
        let kind = line.split(' ').next().unwrap().to_string();
        *kinds.entry(kind.clone()).or_insert(0) += 1;
        if kind == "remove" && line.contains("epoch=") {
            *kinds.entry("remove a superseded best".to_string()).or_insert(0) += 1;
        }

        let resumed = pretrain(&config, &out, &["--resume"]);
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(resumed.status.success(), "resume after a fault at operation {k} ({line}): {stderr}");
        let got = tree(&run.join("checkpoints"));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want_files.keys().collect::<Vec<_>>(),
            "fault at operation {k} ({line}): the checkpoint files"
        );
        let differ: Vec<&String> =
            got.iter().filter(|(name, bytes)| want_files[*name] != **bytes).map(|(n, _)| n).collect();
        assert!(differ.is_empty(), "fault at operation {k} ({line}): {differ:?} differ from the uninterrupted run's");
        assert!(logs(&run) == want_logs, "fault at operation {k} ({line}): the losses differ");
        k += 1;
    }
    assert!(k >= MIN_OPERATIONS, "only {k} operations in the run's saves");
    for kind in ["create", "write", "rename", "remove", "remove a superseded best"] {
        assert!(kinds.contains_key(kind), "no fault injected at a `{kind}`: {kinds:?}");
    }
    eprintln!("{k} crash points walked: {kinds:?}");
    std::fs::remove_dir_all(dir).ok();
}
