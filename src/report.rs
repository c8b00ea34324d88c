//! Reports: the statistics that say whether a run did what it should, and the Markdown
//! `report.md` that `cargo xtask reproduce` writes from the run folders.
//!
//! Tests (one-sided, Student's t from statrs):
//! - **the loss falls**: the least-squares slope `b` of loss against step, with
//!   `t = b / SE(b)`, `SE(b) = √(Σr² / (n − 2) / Σ(x − x̄)²)`; passes when `b < 0` at `p < 0.01`;
//! - **above chance**: the mean `m` of a sample (the last epochs' retrieval acc@1) against
//!   chance `c`, `t = (m − c) / (s / √n)`; passes at `p < 0.01`.
//!
//! Spec: none (reporting). **Deviation:** none.

use std::path::Path;

use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::train::log::read_column;

/// A one-sided t-test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// The estimate (slope, or mean minus chance).
    pub estimate: f64,
    pub t: f64,
    /// One-sided p-value in the tested direction.
    pub p: f64,
    pub n: usize,
}

impl TTest {
    /// Passes at level `alpha` in the tested direction.
    pub fn passes(&self, alpha: f64) -> bool {
        self.p < alpha
    }
}

fn t_cdf(t: f64, freedom: f64) -> f64 {
    StudentsT::new(0.0, 1.0, freedom).expect("valid degrees of freedom").cdf(t)
}

/// Test that `ys` decrease with `xs` (slope < 0).
pub fn falling_slope(xs: &[f64], ys: &[f64]) -> TTest {
    let n = xs.len().min(ys.len());
    assert!(n >= 3, "a slope test needs 3 points");
    let (mx, my) = (xs[..n].iter().sum::<f64>() / n as f64, ys[..n].iter().sum::<f64>() / n as f64);
    let sxx: f64 = xs[..n].iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs[..n].iter().zip(&ys[..n]).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let rss: f64 = xs[..n].iter().zip(&ys[..n]).map(|(x, y)| (y - a - b * x).powi(2)).sum();
    let se = (rss / (n as f64 - 2.0) / sxx).sqrt();
    let t = b / se;
    TTest { estimate: b, t, p: t_cdf(t, n as f64 - 2.0), n }
}

/// Test that the mean of `sample` is above `chance`.
pub fn above_chance(sample: &[f64], chance: f64) -> TTest {
    let n = sample.len();
    assert!(n >= 2, "a t-test needs 2 values");
    let m = sample.iter().sum::<f64>() / n as f64;
    let var = sample.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let t = (m - chance) / (var / n as f64).sqrt();
    TTest { estimate: m - chance, t, p: 1.0 - t_cdf(t, n as f64 - 1.0), n }
}

/// The two checks of a pretraining run's `metrics.csv`: the loss falls over the run, and the
/// last `tail` steps' acc@1 is above `chance` (percent).
pub fn pretrain_checks(metrics: &Path, tail: usize, chance: f64) -> Result<(TTest, TTest), String> {
    let steps = read_column(metrics, "step")?;
    let loss = read_column(metrics, "loss")?;
    let acc1 = read_column(metrics, "acc1")?;
    if steps.len() < tail.max(3) {
        return Err(format!("{}: {} steps, too few to test", metrics.display(), steps.len()));
    }
    Ok((falling_slope(&steps, &loss), above_chance(&acc1[acc1.len() - tail..], chance)))
}

fn verdict(t: &TTest) -> &'static str {
    if t.passes(0.01) { "**pass**" } else { "**FAIL**" }
}

/// The report's section for one pretraining run folder (`summary.json`, `metrics.csv`,
/// `valid.csv`, `config.toml`).
pub fn pretrain_section(run: &Path) -> Result<String, String> {
    let summary: serde_json::Value = {
        let path = run.join("summary.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let config: crate::config::MgcaConfig = {
        let path = run.join("config.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let t = &config.train;
    let steps_per_epoch = (summary["steps"].as_u64().unwrap_or(0) as usize)
        .checked_div(summary["epochs_completed"].as_u64().unwrap_or(0) as usize)
        .unwrap_or(0)
        .max(1);
    let chance = 100.0 / t.shard_batch as f64;
    let mut out = format!(
        "## {}\n\n{}\n\n- data: {}\n- tier: {}; {} × {} pairs per step; {} steps, {} epochs ({})\n- throughput: {:.1} pairs/s; pairs skipped: {}\n",
        summary["experiment"].as_str().unwrap_or("?"),
        summary["reproduces"].as_str().unwrap_or(""),
        summary["data"].as_str().unwrap_or("?"),
        summary["tier"].as_str().unwrap_or("?"),
        t.shards,
        t.shard_batch,
        summary["steps"],
        summary["epochs_completed"],
        summary["stop_reason"].as_str().unwrap_or("interrupted"),
        summary["pairs_per_s"].as_f64().unwrap_or(0.0),
        summary["skipped_pairs"],
    );
    let valid = run.join("valid.csv");
    if valid.exists() {
        let val = read_column(&valid, "val_loss")?;
        let acc = read_column(&valid, "val_acc1")?;
        if let (Some(first), Some(last)) = (val.first(), val.last()) {
            let best = val.iter().copied().fold(f64::INFINITY, f64::min);
            out.push_str(&format!(
                "- validation loss: {first:.4} after epoch 0, {last:.4} at the end, best {best:.4}; val acc@1 {:.1} % → {:.1} % (chance {chance:.1} %)\n",
                acc.first().unwrap_or(&0.0),
                acc.last().unwrap_or(&0.0)
            ));
        }
    }
    let metrics = run.join("metrics.csv");
    match pretrain_checks(&metrics, (2 * steps_per_epoch).min(50), chance) {
        Ok((slope, acc)) => out.push_str(&format!(
            "\n| check | estimate | t | one-sided p | n | result |\n|---|---|---|---|---|---|\n\
             | training loss falls (slope per step < 0) | {:.3e} | {:.2} | {:.2e} | {} | {} |\n\
             | last steps' acc@1 above chance ({chance:.1} %) | +{:.1} points | {:.2} | {:.2e} | {} | {} |\n",
            slope.estimate,
            slope.t,
            slope.p,
            slope.n,
            verdict(&slope),
            acc.estimate,
            acc.t,
            acc.p,
            acc.n,
            verdict(&acc)
        )),
        Err(e) => out.push_str(&format!("\nNo statistical check: {e}\n")),
    }
    out.push_str(
        "\nThe paper reports no pretraining number of its own; the downstream experiments compare this \
         encoder with the paper's tables.\n\nFiles: `metrics.csv`, `valid.csv`, `config.toml`, `plot.svg`, `checkpoints/`.\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_tests_detect_what_they_should() {
        let xs: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let noise = |i: usize| ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let falling: Vec<f64> = xs.iter().enumerate().map(|(i, x)| 10.0 - 0.05 * x + noise(i)).collect();
        let flat: Vec<f64> = xs.iter().enumerate().map(|(i, _)| 10.0 + noise(i)).collect();
        let f = falling_slope(&xs, &falling);
        assert!(f.passes(0.01) && (f.estimate + 0.05).abs() < 0.01, "{f:?}");
        assert!(!falling_slope(&xs, &flat).passes(0.01));
        let acc: Vec<f64> = (0..20).map(|i| 30.0 + noise(i) * 10.0).collect();
        assert!(above_chance(&acc, 12.5).passes(0.01));
        assert!(!above_chance(&acc, 30.0).passes(0.01));
        // Student's t: P(T ≤ 2.0) with 10 degrees of freedom is 0.963306 (tables).
        assert!((t_cdf(2.0, 10.0) - 0.963306).abs() < 1e-5);
    }
}
