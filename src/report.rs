//! Reports: the statistics that say whether a run did what it should, and the Markdown
//! `report.md` that `cargo xtask reproduce` writes from the run folders.
//!
//! Tests (one-sided, Student's t from statrs):
//! - **the loss falls**: the least-squares slope `b` of loss against step, with
//!   `t = b / SE(b)`, `SE(b) = √(Σr² / (n − 2) / Σ(x − x̄)²)`; passes when `b < 0` at `p < 0.01`;
//! - **above chance**: the mean `m` of a sample (the last epochs' retrieval acc@1) against
//!   chance `c`, `t = (m − c) / (s / √n)`; passes at `p < 0.01`.
//!
//! - **Table 1**: for each cell, a two-sided one-sample t-test of our seeds' scores `x₁…x_n`
//!   against the paper's value `μ₀`: `t = (x̄ − μ₀) / (s / √n)` with `n − 1` degrees of freedom.
//!
//! Book: "Pretraining" (the smoke report) and "Linear probing" (the Table 1 report).
//! **Deviation:** none (reporting has no reference counterpart).

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

/// The paper's published tables (`golden/paper/mgca_tables.csv`: one cell a row, with its
/// provenance).
pub const PAPER_TABLES: &str = include_str!("../golden/paper/mgca_tables.csv");

/// One cell of a paper table.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperCell {
    pub dataset: String,
    pub metric: String,
    pub fraction: String,
    pub method: String,
    pub backbone: String,
    pub value: f64,
    /// `verified: …` or `UNVERIFIED: …`.
    pub status: String,
}

/// The rows of `table` (e.g. `T1_linear_cls`) for `method`.
pub fn paper_cells(table: &str, method: &str) -> Result<Vec<PaperCell>, String> {
    let mut reader = csv::Reader::from_reader(PAPER_TABLES.as_bytes());
    let mut cells = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let r = record.map_err(|e| format!("mgca_tables.csv line {}: {e}", i + 2))?;
        if &r[0] != table || &r[5] != method {
            continue;
        }
        let value = r[7].parse().map_err(|_| format!("mgca_tables.csv line {}: value `{}`", i + 2, &r[7]))?;
        cells.push(PaperCell {
            dataset: r[2].into(),
            metric: r[3].into(),
            fraction: r[4].into(),
            method: r[5].into(),
            backbone: r[6].into(),
            value,
            status: r[8].into(),
        });
    }
    Ok(cells)
}

/// A two-sided one-sample t-test of `sample` against `mu` (needs two or more values).
pub fn one_sample_t(sample: &[f64], mu: f64) -> Option<TTest> {
    let n = sample.len();
    if n < 2 {
        return None;
    }
    let mean = sample.iter().sum::<f64>() / n as f64;
    let sd = (sample.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = (mean - mu) / (sd / (n as f64).sqrt());
    let p = if t.is_finite() { 2.0 * (1.0 - t_cdf(t.abs(), (n - 1) as f64)) } else { 0.0 };
    Some(TTest { estimate: mean - mu, t, p, n })
}

/// The report's band around the paper's value: ±2.0 at 1 % of the labels, ±1.0 otherwise.
pub fn table1_band(fraction: &str) -> f64 {
    if fraction == "1%" { 2.0 } else { 1.0 }
}

fn backbone_key(backbone: &str) -> &'static str {
    if backbone.starts_with("ViT") { "vit" } else { "resnet" }
}

/// The run name of a Table 1 cell (`linear-chexpert-1pct-vit`).
pub fn table1_run_name(cell: &PaperCell) -> String {
    format!(
        "linear-{}-{}pct-{}",
        cell.dataset.to_lowercase(),
        cell.fraction.trim_end_matches('%'),
        backbone_key(&cell.backbone)
    )
}

// ANCHOR: table1
/// The report's Table 1 section: for every MGCA cell of the paper's Table 1, the paper's value,
/// ours (mean ± std over seeds, with the first seed's bootstrap 95 % interval), the difference,
/// the band, a one-sample t-test of our seeds against the paper's value, and a verdict.
pub fn table1_section(out: &Path) -> Result<String, String> {
    use crate::downstream::linear::experiment::read_results;
    let mut text = String::from(
        "## Table 1: linear classification

",
    );
    text.push_str(
        "AUROC (CheXpert, RSNA) or accuracy (COVIDx) in percent, on the test split with the best-`val_loss` checkpoint. \
         Ours: mean ± std over seeds [bootstrap 95 % CI of the first seed]. Band: ±2.0 at 1 %, ±1.0 otherwise. \
         t-test: two-sided, one-sample, our seeds against the paper's value (two or more seeds).\n\n",
    );
    text.push_str("| dataset | labels | backbone | paper | ours | diff | band | t-test | encoder | verdict |\n");
    text.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for cell in paper_cells("T1_linear_cls", "MGCA")? {
        let name = table1_run_name(&cell);
        let results = read_results(out, &name)?;
        let paper = if cell.status.starts_with("UNVERIFIED") {
            format!("{:.1} (unverified)", cell.value)
        } else {
            format!("{:.1}", cell.value)
        };
        let band = table1_band(&cell.fraction);
        let row_head = format!("| {} | {} | {} | {paper} |", cell.dataset, cell.fraction, cell.backbone);
        let Some(first) = results.first() else {
            text.push_str(&format!("{row_head} – | – | ±{band:.1} | – | – | not run |\n"));
            continue;
        };
        let values: Vec<f64> = results.iter().map(|r| r.test).collect();
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        let ours = format!("{mean:.1} ± {std:.1} (n={n}) [{:.1}, {:.1}]", first.ci_low, first.ci_high);
        let smoke = results.iter().any(|r| r.tier == crate::experiment::Tier::Smoke);
        let (diff, test, verdict) = if smoke {
            ("–".to_string(), "–".to_string(), "smoke: no paper comparison".to_string())
        } else {
            let diff = mean - cell.value;
            let test =
                one_sample_t(&values, cell.value).map_or("n=1: none".into(), |t| format!("t={:.2}, p={:.3}", t.t, t.p));
            let verdict = if diff.abs() <= band { "reproduced" } else { "outside band" };
            (format!("{diff:+.1}"), test, verdict.to_string())
        };
        text.push_str(&format!("{row_head} {ours} | {diff} | ±{band:.1} | {test} | {} | {verdict} |\n", first.encoder));
    }
    text.push('\n');
    Ok(text)
}
// ANCHOR_END: table1

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
