//! Data: the datasets in their published layouts, the reference's splits and subsets bit for
//! bit, and its image geometry pixel for pixel.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/` and `mgca/datasets/`,
//! at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; each module states its own.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod augment;
pub mod cache;
pub mod chexpert;
pub mod collate;
pub mod covidx;
pub mod detection;
pub mod image;
pub mod labelled;
pub mod mimic;
pub mod objectcxr;
pub mod pairs;
pub mod prepare;
pub mod resize;
pub mod rle;
pub mod rsna;
pub mod samples;
pub mod sampling;
pub mod segmentation;
pub mod siim;
pub mod synth;
pub mod tables;
pub mod targets;

/// A problem with an input file: names the file and, where there is one, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line (the header is line 1), if the problem is one row.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl DataError {
    /// A problem with a whole file.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.into(), line: None, message: message.into() }
    }

    /// A problem with one line of a file.
    pub fn row(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self { path: path.into(), line: Some(line), message: message.into() }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for DataError {}

/// Positions into a dataset's table, per split, each in the reference's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Splits {
    /// Training rows.
    pub train: Vec<usize>,
    /// Validation rows.
    pub valid: Vec<usize>,
    /// Test rows.
    pub test: Vec<usize>,
}

impl Splits {
    /// Panics unless the three parts cover `0..n` exactly once (a split without leaks).
    pub fn check_partition(&self, n: usize) {
        let mut seen = vec![false; n];
        for &i in self.train.iter().chain(&self.valid).chain(&self.test) {
            assert!(!seen[i], "row {i} is in two splits");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s), "some rows are in no split");
    }
}
