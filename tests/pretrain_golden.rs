//! Run-level regression tests against `golden/runs/smoke/`: the smoke pretraining run's
//! per-step losses (`pretrain.csv`, written by `cargo xtask golden bless`).
//!
//! - The replay: the first steps of the smoke experiment, run again, agree with the golden
//!   losses within 1e-4 relative. The insta snapshot holds the replay's rows with each value
//!   that is within tolerance printed as the golden value, so the snapshot changes — and the
//!   test fails, showing the value — exactly when a loss leaves the tolerance or the loop's
//!   structure (steps, epochs, learning rates) changes.
//! - The statistics: over the golden run, the loss falls (slope < 0 at p < 0.01) and the
//!   last 20 steps' retrieval acc@1 is above chance (12.5 % for shards of 8) at p < 0.01.
//!
//! An integration-test crate of its own (see `common::alone`).

mod common;

use common::{alone, repo};
use mgca::backend::{CpuAutodiff, cpu_device};
use mgca::experiment::Experiment;
use mgca::loss::CtaEngine;
use mgca::pretrain::{RunOptions, data, pretrain};

/// Steps replayed (well under a minute on one core).
const REPLAY: usize = 20;
/// Relative tolerance of the replayed losses.
const TOLERANCE: f64 = 1e-4;
const LOSSES: [&str; 4] = ["loss", "loss_ita", "loss_local", "loss_proto"];

fn table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header = lines.next().expect("a header").split(',').map(String::from).collect();
    (header, lines.map(|l| l.split(',').map(String::from).collect()).collect())
}

#[test]
fn smoke_replay_matches_golden() {
    alone(replay);
}

fn replay() {
    let golden_path = repo("golden/runs/smoke/pretrain.csv");
    let golden = std::fs::read_to_string(&golden_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask golden bless`)", golden_path.display()));
    let (golden_header, golden_rows) = table(&golden);
    let experiment = Experiment::read(&repo("reproductions/configs/pretrain/smoke.toml")).unwrap();
    let mut config = experiment.resolve().unwrap();
    config.train.max_steps = Some(REPLAY);
    let spec = experiment.data.synthetic.expect("the smoke experiment is synthetic");
    let dir = std::env::temp_dir().join(format!("mgca-golden-{}", std::process::id()));
    let data = data::synthetic_pairs(&dir, spec.scale, spec.seed, &config).unwrap();
    let model = config.init_model_seeded::<CpuAutodiff>(config.train.seed as u64, &cpu_device());
    let options = RunOptions { engine: CtaEngine::FusedCpu, ..RunOptions::new(dir.join("run"), vec![cpu_device()]) };
    pretrain(&config, model, &data, &options).unwrap();
    let (header, rows) = table(&std::fs::read_to_string(dir.join("run/metrics.csv")).unwrap());
    assert_eq!(rows.len(), REPLAY);
    assert_eq!(&header[..header.len() - 1], &golden_header[..], "columns (pairs_per_s aside)");
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut snapshot = vec![["step", "epoch", "lr"].iter().chain(LOSSES.iter()).copied().collect::<Vec<_>>().join(",")];
    let mut worst = 0f64;
    for (row, want) in rows.iter().zip(&golden_rows) {
        let mut cells = vec![row[column("step")].clone(), row[column("epoch")].clone(), row[column("lr")].clone()];
        for name in LOSSES {
            let (got, expected) = (&row[column(name)], &want[column(name)]);
            let (g, e): (f64, f64) = (got.parse().unwrap(), expected.parse().unwrap());
            let relative = (g - e).abs() / e.abs().max(1e-12);
            worst = worst.max(relative);
            cells.push(if relative <= TOLERANCE { expected.clone() } else { format!("{got} (golden {expected})") });
        }
        snapshot.push(cells.join(","));
    }
    eprintln!("replay: worst relative deviation from golden {worst:.2e} over {REPLAY} steps");
    insta::with_settings!({ snapshot_path => "../golden/runs/smoke/snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("pretrain_replay", snapshot.join("\n"));
    });
    assert!(worst <= TOLERANCE, "a replayed loss is {worst:.2e} from golden (tolerance {TOLERANCE:e})");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_golden_run_learns() {
    let (slope, acc) = mgca::report::pretrain_checks(&repo("golden/runs/smoke/pretrain.csv"), 20, 12.5).unwrap();
    assert!(slope.passes(0.01) && slope.estimate < 0.0, "the loss does not fall: {slope:?}");
    assert!(acc.passes(0.01), "acc@1 is not above chance: {acc:?}");
}
