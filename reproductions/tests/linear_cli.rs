//! The `linear` binary as a user runs it: a bad cell file or argument exits 2 naming the cause,
//! a smoke cell without its pretraining run says how to get one, and a cell with a random
//! encoder runs end to end and is skipped on `--resume` once finished.

mod common;

use std::process::{Command, Output};

use common::tmp;

const CELL: &str = r#"
name = "linear-cli"
reproduces = "a CLI test"
dataset = "rsna"
fraction = "10%"
image_encoder = "vit_base"
features = "cached"

[encoder]
from = "random"
seed = 1
"#;

fn linear(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linear")).args(args).arg("--no-progress").output().unwrap()
}

#[test]
fn linear_cells_and_their_exit_statuses() {
    let dir = tmp("linear");
    let (cell, out) = (dir.join("cell.toml"), dir.join("runs"));
    let (cell_s, out_s) = (cell.to_str().unwrap(), out.to_str().unwrap());
    // Bad input: status 2, the file and the field named; nothing run.
    std::fs::write(&cell, CELL.replace("rsna", "siim")).unwrap();
    let bad = linear(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cell.toml") && stderr.contains("no linear-classification task"), "{stderr}");
    std::fs::write(&cell, CELL).unwrap();
    let bad = linear(&["--config", cell_s, "--out", out_s, "--encoder-from", "moco"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use pretrained:RUN"));
    // The smoke tier's encoder is the smoke pretraining run, which this folder lacks.
    let missing = linear(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pretrain-smoke: no pretraining run here"), "{stderr}");
    // A smoke cell end to end with a random encoder.
    let ok = linear(&["--config", cell_s, "--out", out_s, "--encoder-from", "random:1"]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("linear-cli seed 42: test auc"), "{stderr}");
    let run = out.join("linear-cli/seed-42");
    for file in ["config.toml", "metrics.csv", "test.json", "checkpoints/last/state.json"] {
        assert!(run.join(file).exists(), "{file}");
    }
    let test = std::fs::read(run.join("test.json")).unwrap();
    let again = linear(&["--config", cell_s, "--out", out_s, "--resume", "--encoder-from", "random:1"]);
    assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("finished, skipped"));
    assert_eq!(std::fs::read(run.join("test.json")).unwrap(), test);
    std::fs::remove_dir_all(dir).ok();
}
