//! `mgca data prepare` and `mgca data verify` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-cli-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mgca(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mgca"));
    cmd.args(args);
    for (flag, p) in paths {
        if !flag.is_empty() {
            cmd.arg(flag);
        }
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

/// A small RSNA folder in the published layout: the label file and one DICOM per patient.
fn rsna_root(dir: &Path, bad_line: Option<&str>) -> PathBuf {
    let root = dir.join("rsna");
    std::fs::create_dir_all(root.join("stage_2_train_images")).unwrap();
    let mut csv = String::from("patientId,x,y,width,height,Target\n");
    for i in 0..30 {
        csv.push_str(&if i % 3 == 0 { format!("id{i:02},100,120,50,60,1\n") } else { format!("id{i:02},,,,,0\n") });
        std::fs::write(root.join(format!("stage_2_train_images/id{i:02}.dcm")), b"DICM").unwrap();
    }
    if let Some(line) = bad_line {
        csv.push_str(line);
    }
    std::fs::write(root.join("stage_2_train_labels.csv"), csv).unwrap();
    root
}

#[test]
fn prepare_then_verify() {
    let dir = scratch("ok");
    let root = rsna_root(&dir, None);
    let out = dir.join("out");
    let run = mgca(&["data", "prepare", "rsna", "--task", "detection"], &[("--root", &root), ("--out", &out)]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("train.csv"), "{stdout}");
    for f in ["train.csv", "valid.csv", "test.csv", "train_1pct.csv", "train_10pct.csv", "manifest.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let run = mgca(&["data", "verify"], &[("", &out)]);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stdout));
    // A changed label file is caught.
    std::fs::write(root.join("stage_2_train_labels.csv"), "patientId,x,y,width,height,Target\nz,,,,,0\n").unwrap();
    let run = mgca(&["data", "verify"], &[("", &out)]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stdout).contains("source stage_2_train_labels.csv"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_malformed_row_exits_2_and_names_file_and_line() {
    let dir = scratch("bad");
    let root = rsna_root(&dir, Some("id99,1,2,3,,1\n"));
    let run =
        mgca(&["data", "prepare", "rsna", "--task", "classification"], &[("--root", &root), ("--out", &dir.join("o"))]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("stage_2_train_labels.csv line 32") && err.contains("`height`"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
