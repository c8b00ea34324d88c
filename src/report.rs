//! Reports: the statistics that say whether a run did what it should, and the Markdown
//! `report.md` that `cargo xtask reproduce` writes from the run folders.
//!
//! Tests (Student's t from statrs, in [`crate::metrics::ttest`]):
//! - **the loss falls**: the least-squares slope `b` of loss against step, with
//!   `t = b / SE(b)`, `SE(b) = √(Σr² / (n − 2) / Σ(x − x̄)²)`; passes when `b < 0` at `p < 0.01`;
//! - **above chance**: the mean `m` of a sample (the last epochs' retrieval acc@1) against
//!   chance `c`, `t = (m − c) / (s / √n)`; passes at `p < 0.01`.
//!
//! - **Table 1**: for each cell, a two-sided one-sample t-test of our seeds' scores `x₁…x_n`
//!   against the paper's value `μ₀`: `t = (x̄ − μ₀) / (s / √n)` with `n − 1` degrees of freedom.
//!
//! Book: "Pretraining" (the smoke report) and "Linear probing" (the Table 1 report).
//!
//! **Deviation:** none (reporting has no reference counterpart).

use std::path::Path;

pub use crate::metrics::ttest::{TTest, above_chance, falling_slope, one_sample_t};
use crate::train::log::read_column;

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

/// One cell of a paper table; `value` is NaN where the paper prints `-` (not reported).
#[derive(Debug, Clone, PartialEq)]
pub struct PaperCell {
    /// `linear_classification`, `object_detection`, `semantic_segmentation`.
    pub task: String,
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
        let value = match &r[7] {
            "-" => f64::NAN,
            v => v.parse().map_err(|_| format!("mgca_tables.csv line {}: value `{v}`", i + 2))?,
        };
        cells.push(PaperCell {
            task: r[1].into(),
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

/// The report's band around the paper's detection mAP.
pub const DETECTION_BAND: f64 = 2.0;
/// The level of the "beats an untrained head" check.
pub const UNTRAINED_ALPHA: f64 = 0.05;
/// The check is a pass/fail condition of the report only for cells trained on at least this
/// many images; below it (the smoke tier's 1 % and 10 % cells: 1 to 27 images, a few steps an
/// epoch) it is shown for information.
pub const UNTRAINED_CHECK_MIN_IMAGES: usize = 100;

/// The run name of a Table 2 detection cell (`detection-objectcxr-10pct`).
pub fn detection_run_name(cell: &PaperCell) -> String {
    let dataset: String = cell.dataset.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("detection-{dataset}-{}pct", cell.fraction.trim_end_matches('%'))
}

fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

/// The mean of `values`, `None` when there are none.
fn mean_of(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// ` [low, high]` of a bootstrap interval, or nothing.
fn interval(s: &crate::downstream::detection::experiment::Score) -> String {
    match (s.ci_low, s.ci_high) {
        (Some(l), Some(h)) => format!(" [{l:.1}, {h:.1}]"),
        _ => String::new(),
    }
}

/// The "untrained → gain (p)" cell of a downstream row.
fn gain_cell(untrained: &str, gain: &crate::downstream::detection::experiment::Score, p: Option<f64>) -> String {
    format!(
        "{untrained} → {}{} (p={})",
        gain.value.map_or("–".into(), |g| format!("{g:+.1}")),
        interval(gain),
        p.map_or("–".into(), |p| format!("{p:.3}"))
    )
}

/// The beats-untrained check: pass/FAIL for cells trained on at least
/// [`UNTRAINED_CHECK_MIN_IMAGES`] images, informational below.
fn beats_untrained(gain_p: Option<f64>, train_images: usize) -> String {
    match (gain_p, train_images >= UNTRAINED_CHECK_MIN_IMAGES) {
        (Some(p), true) if p < UNTRAINED_ALPHA => "**pass**".to_string(),
        (Some(_), true) => "**FAIL**".to_string(),
        (Some(p), false) => format!(
            "{} (informational: {train_images} training images)",
            if p < UNTRAINED_ALPHA { "yes" } else { "no" }
        ),
        (None, _) => "undefined".to_string(),
    }
}

/// The diff, t-test and verdict of a downstream row: ours (`values`, one per seed) against the
/// paper's `paper` within `band`; none on the smoke tier or without a paper number, and
/// `undefined` when no seed has a value.
fn paper_comparison(smoke: bool, paper: f64, values: &[f64], band: f64, undefined: &str) -> (String, String, String) {
    match mean_of(values) {
        _ if smoke => ("–".to_string(), "–".to_string(), "smoke: no paper comparison".to_string()),
        _ if paper.is_nan() => ("–".into(), "–".into(), "not in the paper".into()),
        None => ("–".into(), "–".into(), undefined.into()),
        Some(mean) => {
            let diff = mean - paper;
            let test =
                one_sample_t(values, paper).map_or("n=1: none".into(), |t| format!("t={:.2}, p={:.3}", t.t, t.p));
            let verdict = if diff.abs() <= band { "reproduced" } else { "outside band" };
            (format!("{diff:+.1}"), test, verdict.to_string())
        }
    }
}

// ANCHOR: detection
/// The report's Table 2 detection section: for every MGCA detection cell, the paper's mAP,
/// ours with the reference's image-inclusion rule (the paper's protocol) and over every test
/// image (standard), each with the first seed's bootstrap 95 % interval; the difference from
/// the paper (faithful), the band, a one-sample t-test over seeds, the untrained detector's
/// mAP with the paired bootstrap p-value of the gain, and a verdict.
pub fn detection_section(out: &Path) -> Result<String, String> {
    use crate::downstream::detection::experiment::read_results;
    let mut text = String::from("## Table 2: object detection\n\n");
    text.push_str(&format!(
        "mAP (percent) over IoU 0.40:0.05:0.75 on the test split with the best-`val_mAP` checkpoint. \
         Faithful: only images with a detection and a ground-truth box count (the reference's rule; the paper's numbers); \
         standard: every test image. Ours: mean over seeds [bootstrap 95 % CI of the first seed]. Band: ±{DETECTION_BAND:.1} \
         around the paper (faithful). Untrained: the same backbone with a freshly initialised neck (standard mAP); \
         p: paired bootstrap, one-sided, trained ≤ untrained; the check passes at p < {UNTRAINED_ALPHA} and is required of \
         cells trained on at least {UNTRAINED_CHECK_MIN_IMAGES} images.\n\n"
    ));
    text.push_str(
        "| dataset | labels | paper | ours, faithful | ours, standard | diff | band | t-test | untrained → gain (p) | beats untrained | verdict |\n",
    );
    text.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let cells: Vec<PaperCell> =
        paper_cells("T2_seg_det", "MGCA")?.into_iter().filter(|c| c.task == "object_detection").collect();
    for cell in cells {
        let name = detection_run_name(&cell);
        let results = read_results(out, &name)?;
        let paper = if cell.value.is_nan() { "– (not reported)".to_string() } else { format!("{:.1}", cell.value) };
        let row_head = format!("| {} | {} | {paper} |", cell.dataset, cell.fraction);
        let Some(first) = results.first() else {
            text.push_str(&format!("{row_head} – | – | – | ±{DETECTION_BAND:.1} | – | – | – | not run |\n"));
            continue;
        };
        let faithful_values: Vec<f64> = results.iter().filter_map(|r| r.test_faithful.value).collect();
        let standard_values: Vec<f64> = results.iter().filter_map(|r| r.test_standard.value).collect();
        let ours_f =
            format!("{} (n={}){}", percent(mean_of(&faithful_values)), results.len(), interval(&first.test_faithful));
        let ours_s = format!("{}{}", percent(mean_of(&standard_values)), interval(&first.test_standard));
        let gain = gain_cell(&percent(first.untrained_standard), &first.gain, first.gain_p);
        let beats = beats_untrained(first.gain_p, first.train_images);
        let smoke = results.iter().any(|r| r.tier == crate::experiment::Tier::Smoke);
        let (diff, test, verdict) =
            paper_comparison(smoke, cell.value, &faithful_values, DETECTION_BAND, "undefined (no included image)");
        text.push_str(&format!(
            "{row_head} {ours_f} | {ours_s} | {diff} | ±{DETECTION_BAND:.1} | {test} | {gain} | {beats} | {verdict} |\n"
        ));
    }
    text.push_str(
        "\nPictures: `<run>/seed-<s>/pictures/*.png` (ground truth green, detections red). \
         The smoke tier's backbone is the smoke ResNet pretraining's (width 4), so its numbers only show that the pipeline learns.\n\n",
    );
    Ok(text)
}
// ANCHOR_END: detection

/// The report's band around the paper's segmentation Dice.
pub const SEGMENTATION_BAND: f64 = 3.0;

/// The run name of a Table 2 segmentation cell (`segmentation-siim-10pct`; the ViT's ends in
/// `-vit`, the leak-fixed one in `-fixed`).
pub fn segmentation_run_name(dataset: &str, fraction: &str, vit: bool) -> String {
    let dataset: String = dataset.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let vit = if vit { "-vit" } else { "" };
    format!("segmentation-{dataset}-{}pct{vit}", fraction.trim_end_matches('%'))
}

// ANCHOR: segmentation
/// The report's Table 2 segmentation section: for every MGCA segmentation cell (the paper's
/// ResNet-50 rows, then the ViT-B/16 rows the paper does not report), the paper's Dice, ours as
/// the reference averages it (mean over seeds, with the first seed's bootstrap interval of the
/// image mean), the difference, the band, a one-sample t-test over seeds, the untrained
/// decoder's Dice with the paired bootstrap p-value of the gain, the SIIM cell with its leak
/// fixed when that ran, and a verdict.
pub fn segmentation_section(out: &Path) -> Result<String, String> {
    use crate::downstream::segmentation::experiment::read_results;
    let mut text = String::from("## Table 2: semantic segmentation\n\n");
    text.push_str(&format!(
        "Dice (percent) on the test split with the best-`val_loss` checkpoint, averaged as the reference does \
         (the mean of per-batch means; the paper's numbers). Ours: mean over seeds [bootstrap 95 % CI of the first seed's \
         image mean]. Band: ±{SEGMENTATION_BAND:.1} around the paper. Untrained: the same encoder with a freshly \
         initialised decoder (image mean); p: paired bootstrap, one-sided, trained ≤ untrained; the check passes at \
         p < {UNTRAINED_ALPHA} and is required of cells trained on at least {UNTRAINED_CHECK_MIN_IMAGES} images. \
         Leak fixed: the same cell with SIIM split by image (`--fix-leaks`), when it ran; the reference splits by CSV \
         row, so an image with several regions can sit in two splits.\n\n"
    ));
    text.push_str(
        "| dataset | labels | backbone | paper | ours | diff | band | t-test | untrained → gain (p) | beats untrained | leak fixed | verdict |\n",
    );
    text.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let paper: Vec<PaperCell> =
        paper_cells("T2_seg_det", "MGCA")?.into_iter().filter(|c| c.task == "semantic_segmentation").collect();
    // The ResNet rows are the paper's; the ViT rows the same cells without a paper number.
    let rows = paper.iter().map(|c| (c, false)).chain(paper.iter().map(|c| (c, true)));
    for (cell, vit) in rows {
        let name = segmentation_run_name(&cell.dataset, &cell.fraction, vit);
        let results = read_results(out, &name)?;
        let fixed = read_results(out, &format!("{name}-fixed"))?;
        let value = if vit { f64::NAN } else { cell.value };
        let paper = if value.is_nan() { "– (not reported)".to_string() } else { format!("{value:.1}") };
        let backbone = if vit { "ViT-B/16" } else { "ResNet-50" };
        let row_head = format!("| {} | {} | {backbone} | {paper} |", cell.dataset, cell.fraction);
        let Some(first) = results.first() else {
            if !vit {
                text.push_str(&format!("{row_head} – | – | ±{SEGMENTATION_BAND:.1} | – | – | – | – | not run |\n"));
            }
            continue;
        };
        let dice_values: Vec<f64> = results.iter().map(|r| r.test_dice).collect();
        let dice = mean_of(&dice_values);
        let ours = format!("{} (n={}){}", percent(dice), results.len(), interval(&first.test_dice_images));
        let gain = gain_cell(&format!("{:.1}", first.untrained_dice), &first.gain, first.gain_p);
        let beats = beats_untrained(first.gain_p, first.train_images);
        let fixed_values: Vec<f64> = fixed.iter().map(|r| r.test_dice).collect();
        let leak = match mean_of(&fixed_values) {
            Some(f) => format!("{f:.1} (n={}; leak {:+.1})", fixed.len(), dice.unwrap_or(f64::NAN) - f),
            None => "–".to_string(),
        };
        let smoke = results.iter().any(|r| r.tier == crate::experiment::Tier::Smoke);
        let (diff, test, verdict) = paper_comparison(smoke, value, &dice_values, SEGMENTATION_BAND, "undefined");
        text.push_str(&format!(
            "{row_head} {ours} | {diff} | ±{SEGMENTATION_BAND:.1} | {test} | {gain} | {beats} | {leak} | {verdict} |\n"
        ));
    }
    text.push_str(
        "\nPictures: `<run>/seed-<s>/pictures/*.png` (true mask outlined green, prediction tinted red). \
         The smoke tier's encoders are the smoke pretraining runs' (a width-4 ResNet at 64 px, a 32 px ViT with \
         patches of 8), so its numbers only show that the pipeline learns.\n\n",
    );
    Ok(text)
}
// ANCHOR_END: segmentation

#[cfg(test)]
mod tests {
    use super::*;

    /// The 18 shipped cells: each resolves on both tiers, and together they are exactly the
    /// paper's Table 1 MGCA cells under the names this report looks for.
    #[test]
    fn the_shipped_cells_are_table_1() {
        use crate::downstream::finetune::FinetuneConfig;
        use crate::downstream::linear::experiment::LinearExperiment;
        use crate::experiment::Tier;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/linear");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let experiment = LinearExperiment::read(&path).unwrap_or_else(|e| panic!("{e}"));
            let smoke = experiment.resolve(Tier::Smoke, None, 0).unwrap();
            assert_eq!(smoke.finetune, FinetuneConfig::smoke());
            let paper = experiment.resolve(Tier::Paper, None, 0).unwrap();
            assert_eq!((paper.finetune.batch_size, paper.finetune.learning_rate), (48, 5e-4));
            assert_eq!(paper.encoder, experiment.encoder);
            names.push(experiment.name.clone());
        }
        names.sort();
        let mut want: Vec<String> = paper_cells("T1_linear_cls", "MGCA").unwrap().iter().map(table1_run_name).collect();
        want.sort();
        assert_eq!(names, want);
    }

    /// The six shipped detection cells: each resolves on both tiers with the run script's
    /// learning rate and batch, and together they are the paper's Table 2 detection cells.
    #[test]
    fn the_shipped_detection_cells_are_table_2() {
        use crate::downstream::detection::experiment::{DetectionExperiment, smoke_finetune};
        use crate::experiment::Tier;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/detection");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let experiment = DetectionExperiment::read(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(experiment.resolve(Tier::Smoke, None, 0).unwrap().finetune, smoke_finetune());
            let paper = experiment.resolve(Tier::Paper, None, 0).unwrap().finetune;
            let want = match (experiment.dataset, experiment.fraction.label()) {
                (crate::data::prepare::Dataset::Rsna, "1%") => (8, 2e-4),
                (_, "1%") => (8, 2.5e-4),
                _ => (16, 5e-4),
            };
            assert_eq!((paper.batch_size, paper.learning_rate), want, "{}", experiment.name);
            assert_eq!((paper.weight_decay, paper.patience, paper.max_epochs), (1e-6, 10, 50));
            names.push(experiment.name.clone());
        }
        names.sort();
        let mut want: Vec<String> = paper_cells("T2_seg_det", "MGCA")
            .unwrap()
            .iter()
            .filter(|c| c.task == "object_detection")
            .map(detection_run_name)
            .collect();
        want.sort();
        assert_eq!(names, want);
    }

    /// The twelve shipped segmentation cells: the ResNet ones are exactly the paper's Table 2
    /// segmentation cells under the names the report looks for, the ViT ones the same cells.
    #[test]
    fn the_shipped_segmentation_cells_are_table_2() {
        use crate::downstream::segmentation::experiment::SegmentationExperiment;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/segmentation");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| SegmentationExperiment::read(&e.unwrap().path()).unwrap_or_else(|e| panic!("{e}")).name)
            .collect();
        names.sort();
        let cells: Vec<PaperCell> = paper_cells("T2_seg_det", "MGCA")
            .unwrap()
            .into_iter()
            .filter(|c| c.task == "semantic_segmentation")
            .collect();
        assert_eq!(cells.len(), 6);
        let mut want: Vec<String> = [false, true]
            .iter()
            .flat_map(|&vit| cells.iter().map(move |c| segmentation_run_name(&c.dataset, &c.fraction, vit)))
            .collect();
        want.sort();
        assert_eq!(names, want);
    }

    /// The segmentation section on written results: two paper-tier seeds of SIIM 1 % (paper
    /// 49.7) at 48.0 and 50.0 → mean 49.0, diff −0.7, reproduced, with a t-test; the leak-fixed
    /// run beside it; a 100 % cell whose gain is not significant fails the untrained check; a
    /// missing ResNet cell says "not run" and a missing ViT cell is left out.
    #[test]
    fn segmentation_section_reads_results() {
        use crate::downstream::detection::experiment::Score;
        use crate::downstream::segmentation::experiment::CellResult;
        use crate::experiment::Tier;
        let out = std::env::temp_dir().join(format!("mgca-report-segmentation-{}", std::process::id()));
        std::fs::remove_dir_all(&out).ok();
        let score = |v: f64| Score { value: Some(v), ci_low: Some(v - 1.0), ci_high: Some(v + 1.0) };
        let result = |name: &str, seed: u64, dice: f64, p: f64, train: usize| CellResult {
            name: name.into(),
            tier: Tier::Paper,
            dataset: crate::data::prepare::Dataset::Siim,
            fraction: crate::downstream::linear::experiment::Fraction::One,
            image_encoder: crate::config::ImageEncoderKind::Resnet50,
            backbone_norm: Default::default(),
            fix_leaks: name.ends_with("-fixed"),
            side: 224,
            encoder: "pretrained".into(),
            encoder_provenance: String::new(),
            seed,
            test_dice: dice,
            test_dice_images: score(dice),
            untrained_dice: 5.0,
            gain: score(dice - 5.0),
            gain_p: Some(p),
            test_loss: 0.5,
            test_images: 100,
            train_images: train,
            best_epoch: 3,
            best_val_loss: 0.4,
            epochs: 10,
            stop_reason: String::new(),
            seconds: 1.0,
            pictures: Vec::new(),
        };
        let write = |r: &CellResult| {
            let dir = out.join(&r.name).join(format!("seed-{}", r.seed));
            std::fs::create_dir_all(&dir).unwrap();
            crate::downstream::finetune::write_test_result(&dir, r).unwrap();
        };
        write(&result("segmentation-siim-1pct", 1, 48.0, 0.001, 120));
        write(&result("segmentation-siim-1pct", 2, 50.0, 0.001, 120));
        write(&result("segmentation-siim-1pct-fixed", 1, 45.0, 0.001, 118));
        write(&result("segmentation-siim-100pct", 1, 70.0, 0.4, 9000));
        let text = segmentation_section(&out).unwrap();
        let row =
            |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}\n{text}"));
        let siim_1 = row("| SIIM | 1% | ResNet-50 |");
        assert!(siim_1.contains("| 49.7 | 49.0 (n=2) [47.0, 49.0] | -0.7 | ±3.0 | t="), "{siim_1}");
        assert!(siim_1.contains("45.0 (n=1; leak +4.0)") && siim_1.ends_with("reproduced |"), "{siim_1}");
        let siim_100 = row("| SIIM | 100% | ResNet-50 |");
        assert!(siim_100.contains("**FAIL**") && siim_100.contains("outside band"), "{siim_100}");
        assert!(row("| RSNA | 1% | ResNet-50 |").ends_with("not run |"));
        assert!(!text.contains("| ViT-B/16 |"), "no ViT cell ran");
        std::fs::remove_dir_all(out).ok();
    }
}
