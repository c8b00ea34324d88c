//! The `detection` binary as a user runs it: a bad cell file or argument exits 2 naming the
//! cause, a smoke cell without its pretraining run says how to get one, and a cell with a
//! random backbone runs end to end (metrics, checkpoints, pictures, `test.json`) and is skipped
//! on `--resume` once finished.

mod common;

use std::process::{Command, Output};

use common::tmp;

const CELL: &str = r#"
name = "detection-cli"
reproduces = "a CLI test"
dataset = "rsna"
fraction = "10%"

[encoder]
from = "random"
seed = 1
"#;

fn detection(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detection")).args(args).arg("--no-progress").output().unwrap()
}

#[test]
fn detection_cells_and_their_exit_statuses() {
    let dir = tmp("detection");
    let (cell, out) = (dir.join("cell.toml"), dir.join("runs"));
    let (cell_s, out_s) = (cell.to_str().unwrap(), out.to_str().unwrap());
    // Bad input: status 2, the file and the cause named; nothing run.
    std::fs::write(&cell, CELL.replace("rsna", "chexpert")).unwrap();
    let bad = detection(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cell.toml") && stderr.contains("no detection task"), "{stderr}");
    std::fs::write(&cell, CELL.replace("[encoder]", "[finetune]\nbatch_sise = 4\n[encoder]")).unwrap();
    let bad = detection(&["--config", cell_s, "--out", out_s]);
    assert_eq!(bad.status.code(), Some(2));
    std::fs::write(&cell, CELL).unwrap();
    let bad = detection(&["--config", cell_s, "--out", out_s, "--inclusion", "some"]);
    assert_eq!(bad.status.code(), Some(2));
    // The smoke tier's backbone is the smoke ResNet pretraining run, which this folder lacks.
    let missing = detection(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pretrain-smoke-resnet: no pretraining run here"), "{stderr}");
    // A smoke cell end to end with a random backbone and frozen statistics.
    let ok =
        detection(&["--config", cell_s, "--out", out_s, "--encoder-from", "random:1", "--backbone-norm", "frozen"]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("detection-cli seed 42: test mAP"), "{stderr}");
    let run = out.join("detection-cli/seed-42");
    for file in ["config.toml", "metrics.csv", "test.json", "checkpoints/last/state.json"] {
        assert!(run.join(file).exists(), "{file}");
    }
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("backbone_norm = \"frozen\""));
    let header = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(header.starts_with("epoch,lr,train_loss,val_loss,val_mAP,"), "{header}");
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("test.json")).unwrap()).unwrap();
    let pictures = result["pictures"].as_array().unwrap();
    assert_eq!(pictures.len(), 4);
    for p in pictures {
        let bytes = std::fs::read(run.join(p.as_str().unwrap())).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
    let test = std::fs::read(run.join("test.json")).unwrap();
    let again = detection(&["--config", cell_s, "--out", out_s, "--resume", "--encoder-from", "random:1"]);
    assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("finished, skipped"));
    assert_eq!(std::fs::read(run.join("test.json")).unwrap(), test);
    std::fs::remove_dir_all(dir).ok();
}
