//! The `segmentation` binary as a user runs it: a bad cell file or argument exits 2 naming the
//! cause, a smoke cell without its pretraining run says how to get one, a U-Net cell with a
//! random encoder runs end to end (metrics, checkpoints, pictures, `test.json`) and is skipped on
//! `--resume` once finished, `--fix-leaks` runs under `<name>-fixed`, and a ViT cell runs the
//! SETR decoder at the ViT's input side.

mod common;

use std::process::{Command, Output};

use common::tmp;

const CELL: &str = r#"
name = "segmentation-cli"
reproduces = "a CLI test"
dataset = "siim"
fraction = "1%"

[encoder]
from = "random"
seed = 1
"#;

fn segmentation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segmentation")).args(args).arg("--no-progress").output().unwrap()
}

fn result(run: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("test.json")).unwrap()).unwrap()
}

#[test]
fn segmentation_cells_and_their_exit_statuses() {
    let dir = tmp("segmentation");
    let (cell, out) = (dir.join("cell.toml"), dir.join("runs"));
    let (cell_s, out_s) = (cell.to_str().unwrap(), out.to_str().unwrap());
    // Bad input: status 2, the file and the cause named; nothing run.
    std::fs::write(&cell, CELL.replace("siim", "covidx")).unwrap();
    let bad = segmentation(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cell.toml") && stderr.contains("no segmentation task"), "{stderr}");
    std::fs::write(&cell, CELL.replace("[encoder]", "[finetune]\nlearning_rat = 1e-3\n[encoder]")).unwrap();
    let bad = segmentation(&["--config", cell_s, "--out", out_s]);
    assert_eq!(bad.status.code(), Some(2));
    std::fs::write(&cell, CELL).unwrap();
    let bad = segmentation(&["--config", cell_s, "--out", out_s, "--backbone-norm", "some"]);
    assert_eq!(bad.status.code(), Some(2));
    // The smoke tier's encoder is the smoke ResNet pretraining run, which this folder lacks.
    let missing = segmentation(&["--config", cell_s, "--out", out_s]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pretrain-smoke-resnet: no pretraining run here"), "{stderr}");
    // A smoke cell end to end with a random encoder and frozen statistics.
    let ok =
        segmentation(&["--config", cell_s, "--out", out_s, "--encoder-from", "random:1", "--backbone-norm", "frozen"]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(stderr.contains("segmentation-cli seed 42: test Dice"), "{stderr}");
    let run = out.join("segmentation-cli/seed-42");
    for file in ["config.toml", "metrics.csv", "test.json", "checkpoints/last/state.json"] {
        assert!(run.join(file).exists(), "{file}");
    }
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("backbone_norm = \"frozen\""));
    let header = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(header.starts_with("epoch,lr,train_loss,val_loss,val_dice,"), "{header}");
    let r = result(&run);
    assert_eq!((r["side"].as_u64(), r["fix_leaks"].as_bool()), (Some(64), Some(false)));
    let pictures = r["pictures"].as_array().unwrap();
    assert!(!pictures.is_empty() && pictures.len() <= 4);
    for p in pictures {
        let bytes = std::fs::read(run.join(p.as_str().unwrap())).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
    let test = std::fs::read(run.join("test.json")).unwrap();
    let again = segmentation(&["--config", cell_s, "--out", out_s, "--resume", "--encoder-from", "random:1"]);
    assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("finished, skipped"));
    assert_eq!(std::fs::read(run.join("test.json")).unwrap(), test);
    // The leak fixed: its own name, its own prepared split.
    let fixed = segmentation(&["--config", cell_s, "--out", out_s, "--encoder-from", "random:1", "--fix-leaks"]);
    assert!(fixed.status.success(), "{}", String::from_utf8_lossy(&fixed.stderr));
    assert_eq!(result(&out.join("segmentation-cli-fixed/seed-42"))["fix_leaks"].as_bool(), Some(true));
    assert!(out.join("data/siim-segmentation-smoke-fixed-prepared/manifest.json").exists());
    // The ViT: the SETR decoder at the smoke ViT's 32 px.
    std::fs::write(
        &cell,
        CELL.replace("segmentation-cli", "segmentation-cli-vit")
            .replace("fraction", "image_encoder = \"vit_base\"\nfraction"),
    )
    .unwrap();
    let vit = segmentation(&["--config", cell_s, "--out", out_s, "--encoder-from", "random:1"]);
    assert!(vit.status.success(), "{}", String::from_utf8_lossy(&vit.stderr));
    let r = result(&out.join("segmentation-cli-vit/seed-42"));
    assert_eq!((r["side"].as_u64(), r["image_encoder"].as_str()), (Some(32), Some("vit_base")));
    std::fs::remove_dir_all(dir).ok();
}
