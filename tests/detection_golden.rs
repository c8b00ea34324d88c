//! Run-level regression tests of detection against `golden/runs/smoke/detection.csv` (written
//! by `cargo xtask golden bless`: the smoke tier's six cells with the smoke ResNet
//! pretraining's backbone, and the two 10 % cells with a randomly initialised one).
//!
//! - The replay: the two 10 % cells with the random backbone again; their test mAPs and test
//!   losses agree with the golden ones within [`REPLAY_MAP_TOLERANCE`] points and
//!   [`REPLAY_LOSS_TOLERANCE`]. The insta snapshot prints each replayed value that is within
//!   tolerance as the golden value, so it changes exactly when a value leaves the tolerance.
//! - The statistics: every golden pretrained cell trained on enough images
//!   ([`mgca::report::UNTRAINED_CHECK_MIN_IMAGES`]) beats its untrained head (paired
//!   bootstrap, one-sided p below [`mgca::report::UNTRAINED_ALPHA`]).
//! - A killed run: a cell stopped after two epochs and resumed gives the uninterrupted result.
//!
//! An integration-test crate of its own, its runs one after another (see `common::alone`).

mod common;

use common::{alone, golden_rows, number, repo, shown};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::downstream::detection::experiment::{CellOptions, CellResult, DetectionExperiment, ResolvedCell, run_cell};
use mgca::downstream::encoder::EncoderSource;
use mgca::experiment::Tier;
use mgca::report::{UNTRAINED_ALPHA, UNTRAINED_CHECK_MIN_IMAGES};

/// Test mAPs (percent) replayed on the same code agree to this many points.
const REPLAY_MAP_TOLERANCE: f64 = 0.05;
/// Test losses replayed on the same code agree to this (absolute).
const REPLAY_LOSS_TOLERANCE: f64 = 1e-4;
/// The replayed cells (random backbone).
const REPLAYED: [&str; 2] = ["rsna_10pct.toml", "objectcxr_10pct.toml"];

fn random_cell(file: &str, seed: u64) -> ResolvedCell {
    let experiment = DetectionExperiment::read(&repo("reproductions/configs/detection").join(file)).unwrap();
    experiment.resolve(Tier::Smoke, Some(&EncoderSource::Random { seed }), 0).unwrap()
}

#[test]
fn smoke_replay_matches_golden() {
    alone(replay);
}

fn replay() {
    let golden = golden_rows("detection.csv");
    let out = std::env::temp_dir().join(format!("mgca-detection-golden-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let mut snapshot = vec!["name,faithful,standard,test_loss".to_string()];
    let mut worst: f64 = 0.0;
    for file in REPLAYED {
        let cell = random_cell(file, 42);
        let r = run_cell::<CpuAutodiff>(&cell, &out, &CellOptions::default(), &cpu_device()).unwrap().unwrap();
        let g = golden
            .iter()
            .find(|g| g["name"] == cell.name && g["encoder"] == "random")
            .unwrap_or_else(|| panic!("{} (random) is not in the golden file", cell.name));
        let faithful = r.test_faithful.value.unwrap_or(f64::NAN);
        let standard = r.test_standard.value.unwrap_or(f64::NAN);
        for (got, want, tol) in [
            (faithful, number(g, "faithful"), REPLAY_MAP_TOLERANCE),
            (standard, number(g, "standard"), REPLAY_MAP_TOLERANCE),
            (r.test_loss, number(g, "test_loss"), REPLAY_LOSS_TOLERANCE),
        ] {
            if !(got.is_nan() && want.is_nan()) {
                worst = worst.max((got - want).abs() / tol);
            }
        }
        snapshot.push(format!(
            "{},{},{},{}",
            cell.name,
            shown(faithful, number(g, "faithful"), REPLAY_MAP_TOLERANCE, 2),
            shown(standard, number(g, "standard"), REPLAY_MAP_TOLERANCE, 2),
            shown(r.test_loss, number(g, "test_loss"), REPLAY_LOSS_TOLERANCE, 4),
        ));
    }
    insta::with_settings!({ snapshot_path => "../golden/runs/smoke/snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("detection_replay", snapshot.join("\n"));
    });
    assert!(worst <= 1.0, "a replayed value is {worst:.2} tolerances from golden");
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn trained_detectors_beat_untrained_heads() {
    let golden = golden_rows("detection.csv");
    let required: Vec<_> = golden
        .iter()
        .filter(|g| g["encoder"] == "pretrained" && number(g, "train_images") >= UNTRAINED_CHECK_MIN_IMAGES as f64)
        .collect();
    assert_eq!(required.len(), 2, "the two 100 % cells");
    for g in required {
        let p = number(g, "gain_p");
        assert!(p < UNTRAINED_ALPHA, "{}: gain {} points, p = {p}", g["name"], g["gain"]);
    }
}

/// A run stopped after two epochs (as a kill at an epoch's end leaves it) and resumed ends
/// exactly as the uninterrupted run; so does the test it writes.
#[test]
fn a_stopped_run_resumes_to_the_same_result() {
    alone(stopped_and_resumed);
}

fn stopped_and_resumed() {
    let out = std::env::temp_dir().join(format!("mgca-detection-resume-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let cell = random_cell("objectcxr_1pct.toml", 5);
    // The same cell under a second name: its own run folder, the same data.
    let again = ResolvedCell { name: format!("{}-stopped", cell.name), ..cell.clone() };
    let straight = run_cell::<CpuAutodiff>(&cell, &out, &CellOptions::default(), &cpu_device()).unwrap().unwrap();
    let stop = CellOptions { stop_after_epochs: Some(2), ..CellOptions::default() };
    assert!(run_cell::<CpuAutodiff>(&again, &out, &stop, &cpu_device()).unwrap().is_none());
    let resume = CellOptions { resume: true, ..CellOptions::default() };
    let resumed = run_cell::<CpuAutodiff>(&again, &out, &resume, &cpu_device()).unwrap().unwrap();
    let comparable = |r: &CellResult| CellResult {
        seconds: 0.0,
        encoder_provenance: String::new(),
        name: cell.name.clone(),
        ..r.clone()
    };
    assert_eq!(comparable(&resumed), comparable(&straight));
    let log = |name: &str| std::fs::read_to_string(out.join(name).join("seed-42/metrics.csv")).unwrap();
    let without_time =
        |t: String| t.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect::<Vec<_>>().join("\n");
    assert_eq!(without_time(log(&again.name)), without_time(log(&cell.name)));
    std::fs::remove_dir_all(out).ok();
}
