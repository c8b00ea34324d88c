//! Evaluation metrics, computed as the reference's evaluation computes them, with the
//! statistics a reproduction report needs on top.
//!
//! - [`auroc`]: the area under the ROC curve per class (ties as scikit-learn's
//!   `roc_auc_score`: the Mann–Whitney statistic with averaged ranks) and its macro mean, as
//!   the reference's linear probe reports for CheXpert (5 tasks) and RSNA (1 output);
//! - [`accuracy`]: top-1 accuracy, as it reports for COVIDx;
//! - [`bootstrap`]: a seeded percentile bootstrap confidence interval over test images;
//! - [`delong`]: DeLong's test for two AUROCs measured on the same images;
//! - [`ttest`]: the t-tests of the reproduction report (slope, above chance, against the paper).
//!
//! Book: "Linear probing" (metrics). Reference: `mgca/models/ssl_finetuner.py`, class
//! `SSLFineTuner` (torchmetrics `AUROC` / `Accuracy`) at the pinned reference commit.
//!
//! **Deviation:** degenerate input — a class whose labels are all one value, a non-finite
//! score, a label that is neither 0 nor 1 — is an error naming the class and the cause, where
//! torchmetrics warns and returns 0 or NaN.

pub mod accuracy;
pub mod auroc;
pub mod bootstrap;
pub mod delong;
pub mod dice;
pub mod map;
pub mod ttest;

use std::fmt;

/// Why a metric cannot be computed on its input.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricError {
    /// Scores and labels disagree in length or class count.
    Shape(String),
    /// A class whose labels are all positive or all negative has no AUROC.
    OneClass { class: usize, positives: usize, count: usize },
    /// A score that is NaN or infinite.
    NonFinite { what: &'static str, index: usize, class: usize },
    /// A label outside its allowed values.
    BadLabel { index: usize, class: usize, value: f64 },
    /// No samples at all.
    Empty,
}

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricError::Shape(s) => write!(f, "shape mismatch: {s}"),
            MetricError::OneClass { class, positives, count } => write!(
                f,
                "class {class} has only one label value ({positives} positives among {count} samples): its AUROC is undefined"
            ),
            MetricError::NonFinite { what, index, class } => {
                write!(f, "{what} of sample {index}, class {class} is not a finite number")
            }
            MetricError::BadLabel { index, class, value } => {
                write!(f, "label of sample {index}, class {class} is {value}, not 0 or 1")
            }
            MetricError::Empty => write!(f, "no samples"),
        }
    }
}

impl std::error::Error for MetricError {}

/// A row-major `[N, C]` matrix of scores or labels, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Matrix<'a> {
    /// `data` as `[rows, cols]`; the length must match.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, MetricError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(MetricError::Shape(format!("{} values for [{rows}, {cols}]", data.len())));
        }
        Ok(Self { data, rows, cols })
    }

    /// Column `c`, copied.
    pub fn column(&self, c: usize) -> Vec<f32> {
        (0..self.rows).map(|r| self.data[r * self.cols + c]).collect()
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Agreement with scikit-learn on AUROC and accuracy (absolute, in the metric's [0, 1] units).
pub const SKLEARN_TOLERANCE: f64 = 1e-6;
/// Agreement of DeLong's z and p and the bootstrap's quantiles with the Python generator.
pub const STATS_TOLERANCE: f64 = 1e-9;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use safetensors::{Dtype, SafeTensors};

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/python/metrics")
    }

    /// A case's tensors as f64 vectors with their shapes (f32 and i64 only).
    fn read_case(name: &str) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        file.tensors()
            .into_iter()
            .map(|(k, v)| {
                let values = match v.dtype() {
                    Dtype::F32 => {
                        v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                    }
                    Dtype::I64 => {
                        v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                    }
                    other => panic!("{k}: {other:?}"),
                };
                (k, (v.shape().to_vec(), values))
            })
            .collect()
    }

    /// Every case scikit-learn computed (ties, 5 % positives, C = 1, 3 and 5): per-class and
    /// macro AUROC, and accuracy, within [`SKLEARN_TOLERANCE`].
    #[test]
    fn equals_scikit_learn() {
        for case in ["case_chexpert_like", "case_rsna_imbalanced", "case_covidx_ties"] {
            let t = read_case(&format!("{case}.safetensors"));
            let f32s = |k: &str| t[k].1.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (shape, _) = &t["auroc.scores"];
            let (scores, labels) = (f32s("auroc.scores"), f32s("auroc.labels"));
            let s = Matrix::new(&scores, shape[0], shape[1]).unwrap();
            let y = Matrix::new(&labels, shape[0], shape[1]).unwrap();
            let per_class = auroc::auroc_per_class(s, y).unwrap();
            for (c, (ours, theirs)) in per_class.iter().zip(&t["auroc.per_class"].1).enumerate() {
                assert!((ours - theirs).abs() < SKLEARN_TOLERANCE, "{case} class {c}: {ours} vs {theirs}");
            }
            let macro_ = auroc::auroc_macro(s, y).unwrap();
            assert!((macro_ - t["auroc.macro"].1[0]).abs() < SKLEARN_TOLERANCE, "{case} macro");

            let (shape, _) = &t["accuracy.scores"];
            let scores = f32s("accuracy.scores");
            let labels: Vec<i64> = t["accuracy.labels"].1.iter().map(|&v| v as i64).collect();
            let acc = accuracy::accuracy(Matrix::new(&scores, shape[0], shape[1]).unwrap(), &labels).unwrap();
            assert!((acc - t["accuracy"].1[0]).abs() < SKLEARN_TOLERANCE, "{case} accuracy {acc}");
        }
    }

    /// DeLong against the pair-by-pair definition, and the bootstrap against NumPy's
    /// `RandomState.randint` draws and `percentile`, within [`STATS_TOLERANCE`].
    #[test]
    fn statistics_equal_the_python_generator() {
        let text = std::fs::read_to_string(dir().join("bootstrap_delong.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let floats = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
        let (y, a, b) = (floats("labels"), floats("scores_a"), floats("scores_b"));
        let t = delong::delong(&a, &b, &y).unwrap();
        let d = &v["delong"];
        for (name, ours) in
            [("auroc_a", t.auroc_a), ("auroc_b", t.auroc_b), ("variance", t.variance), ("z", t.z), ("p", t.p)]
        {
            let theirs = d[name].as_f64().unwrap();
            assert!((ours - theirs).abs() < STATS_TOLERANCE * theirs.abs().max(1.0), "{name}: {ours} vs {theirs}");
        }
        let bs = &v["bootstrap"];
        let config = bootstrap::BootstrapConfig {
            resamples: bs["resamples"].as_f64().unwrap() as usize,
            seed: bs["seed"].as_f64().unwrap() as u32,
            level: bs["level"].as_f64().unwrap(),
        };
        let ci = bootstrap::bootstrap(y.len(), config, |idx| {
            let s: Vec<f32> = idx.iter().map(|&i| a[i]).collect();
            let l: Vec<f32> = idx.iter().map(|&i| y[i]).collect();
            auroc::auroc_class(&s, &l, 0)
        })
        .unwrap();
        for (name, ours) in [("estimate", ci.estimate), ("low", ci.low), ("high", ci.high)] {
            let theirs = bs[name].as_f64().unwrap();
            assert!((ours - theirs).abs() < STATS_TOLERANCE, "bootstrap {name}: {ours} vs {theirs}");
        }
        assert_eq!(ci.used, bs["used"].as_f64().unwrap() as usize);
    }
}
