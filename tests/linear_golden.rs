//! Run-level regression tests of linear probing against `golden/runs/smoke/linear.csv` (written
//! by `cargo xtask golden bless`: the smoke tier's 18 cells, once with the smoke pretraining's
//! encoders and once with randomly initialised ones).
//!
//! - The replay: the smoke ViT pretraining run again, then the 9 ViT cells; their test scores
//!   agree with the golden ones within [`REPLAY_TOLERANCE`] points. The insta snapshot holds
//!   each replayed score that is within tolerance printed as the golden value, so it changes —
//!   and the test fails, showing the value — exactly when a score leaves the tolerance.
//! - The statistics: over the golden cells, the pretrained encoders' scores beat the random
//!   encoders' (paired one-sided t-test, p < 0.05).
//!
//! An integration-test crate of its own, its runs one after another (see `common::alone`).

use std::path::{Path, PathBuf};

mod common;

use common::{alone, repo};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::downstream::linear::experiment::{CellOptions, LinearExperiment, run_cell};
use mgca::experiment::{Experiment, Tier};
use mgca::loss::CtaEngine;
use mgca::pretrain::{RunOptions, data, pretrain};

/// Test scores (percent) replayed on the same code agree to this many points.
const REPLAY_TOLERANCE: f64 = 0.05;
/// The level of the pretrained-beats-random test.
const ALPHA: f64 = 0.05;

/// The golden rows: `(name, encoder) → (metric, test score)`.
fn golden() -> Vec<(String, String, f64)> {
    let path = repo("golden/runs/smoke/linear.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask golden bless`)", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name).expect("a golden column");
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[at("name")].to_string(), cells[at("encoder")].to_string(), cells[at("test")].parse().unwrap())
        })
        .collect()
}

fn cell_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("reproductions/configs/linear"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The smoke ViT pretraining (the experiment file as `reproduce` runs it) into `out`.
fn smoke_pretraining(out: &Path) {
    let experiment = Experiment::read(&repo("reproductions/configs/pretrain/smoke.toml")).unwrap();
    let config = experiment.resolve().unwrap();
    let spec = experiment.data.synthetic.expect("the smoke experiment is synthetic");
    let data = data::synthetic_pairs(
        &out.join("data").join(format!("synthetic-small-{}", spec.seed)),
        spec.scale,
        spec.seed,
        &config,
    )
    .unwrap();
    let model = config.init_model_seeded::<CpuAutodiff>(config.train.seed as u64, &cpu_device());
    // The fused CTA engine, as the `pretrain` binary runs on the CPU (the graph engine agrees
    // within float rounding, which 200 steps and a fine-tuning run amplify).
    let options =
        RunOptions { engine: CtaEngine::FusedCpu, ..RunOptions::new(out.join(&experiment.name), vec![cpu_device()]) };
    pretrain(&config, model, &data, &options).unwrap();
}

#[test]
fn smoke_replay_matches_golden() {
    alone(replay);
}

fn replay() {
    let golden = golden();
    let out = std::env::temp_dir().join(format!("mgca-linear-golden-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    smoke_pretraining(&out);
    let mut snapshot = vec!["name,metric,test".to_string()];
    let mut worst = 0f64;
    for file in cell_files() {
        let experiment = LinearExperiment::read(&file).unwrap();
        if experiment.image_encoder != mgca::config::ImageEncoderKind::VitBase {
            continue;
        }
        let cell = experiment.resolve(Tier::Smoke, None, 0).unwrap();
        let result = run_cell::<CpuAutodiff>(&cell, &out, &CellOptions::default(), &cpu_device()).unwrap().unwrap();
        let want = golden
            .iter()
            .find(|g| g.0 == cell.name && g.1 == "pretrained")
            .unwrap_or_else(|| panic!("{} is not in the golden file", cell.name))
            .2;
        let gap = (result.test - want).abs();
        worst = worst.max(gap);
        let shown = if gap <= REPLAY_TOLERANCE {
            format!("{want:.2}")
        } else {
            format!("{:.2} (golden {want:.2})", result.test)
        };
        snapshot.push(format!("{},{},{shown}", cell.name, result.metric));
    }
    assert_eq!(snapshot.len(), 10, "nine ViT cells");
    eprintln!("replay: worst deviation from golden {worst:.4} points over 9 cells");
    insta::with_settings!({ snapshot_path => "../golden/runs/smoke/snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("linear_replay", snapshot.join("\n"));
    });
    assert!(worst <= REPLAY_TOLERANCE, "a replayed score is {worst:.3} points from golden");
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn pretrained_features_beat_random_ones() {
    let golden = golden();
    let differences: Vec<f64> = golden
        .iter()
        .filter(|g| g.1 == "pretrained")
        .map(|p| {
            let random = golden.iter().find(|r| r.0 == p.0 && r.1 == "random").expect("a random-encoder row").2;
            p.2 - random
        })
        .collect();
    assert_eq!(differences.len(), 18);
    let test = mgca::metrics::ttest::one_sample_t(&differences, 0.0).unwrap();
    // One-sided: the two-sided p halved in the tested direction.
    let p = if test.t > 0.0 { test.p / 2.0 } else { 1.0 - test.p / 2.0 };
    assert!(
        p < ALPHA,
        "pretrained − random = {:+.2} points on average (t = {:.2}, one-sided p = {p:.3})",
        test.estimate,
        test.t
    );
}
