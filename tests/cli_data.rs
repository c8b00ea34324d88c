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

/// The silent result: an RSNA box at x = 1e300 was accepted. Now `data prepare` exits 2
/// naming the file and line.
#[test]
fn an_absurd_box_exits_2_and_names_file_and_line() {
    let dir = scratch("box");
    let root = rsna_root(&dir, Some("id99,1e300,2,3,4,1\n"));
    let run =
        mgca(&["data", "prepare", "rsna", "--task", "detection"], &[("--root", &root), ("--out", &dir.join("o"))]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("stage_2_train_labels.csv line 32") && err.contains("1e300"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The crash: `data cache` on an image of extreme aspect (600 × 2) panicked in the
/// resize, naming no file and leaving a `.part`. Now: exit 2 naming the split row and the image,
/// no `.part`; with `--on-bad skip` the image is skipped and counted.
#[test]
fn an_image_that_cannot_be_resized_is_named_and_skipped() {
    let dir = scratch("cache");
    image::GrayImage::from_pixel(600, 2, image::Luma([90])).save(dir.join("wide.png")).unwrap();
    image::GrayImage::from_pixel(300, 200, image::Luma([90])).save(dir.join("fine.png")).unwrap();
    std::fs::write(dir.join("split.csv"), "path\nfine.png\nwide.png\n").unwrap();
    let out = dir.join("train.cache");
    let run = mgca(&["data", "cache"], &[("--manifest", &dir.join("split.csv")), ("--root", &dir), ("--out", &out)]);
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stdout));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("split.csv line 3") && err.contains("wide.png") && err.contains("600 x 2"), "{err}");
    assert!(!out.exists() && !out.with_extension("part").exists(), "no cache and no .part left behind");
    let run = mgca(
        &["data", "cache", "--on-bad", "skip"],
        &[("--manifest", &dir.join("split.csv")), ("--root", &dir), ("--out", &out)],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("(1 skipped)") && stdout.contains("wide.png"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}

/// The silent result: a JPEG cut in half was cached with its lower half flat grey.
#[test]
fn a_truncated_jpeg_is_an_error_naming_it() {
    let dir = scratch("jpeg");
    let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 3 + y * 5) as u8]));
    img.save(dir.join("whole.jpg")).unwrap();
    let bytes = std::fs::read(dir.join("whole.jpg")).unwrap();
    std::fs::write(dir.join("half.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.join("split.csv"), "path\nwhole.jpg\nhalf.jpg\n").unwrap();
    let out = dir.join("train.cache");
    let run = mgca(&["data", "cache"], &[("--manifest", &dir.join("split.csv")), ("--root", &dir), ("--out", &out)]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("half.jpg") && err.contains("truncated JPEG"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
