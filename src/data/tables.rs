//! The vocabulary of a prepared dataset, shared by `prepare` and the dataset files: what to
//! prepare ([`PrepareOptions`]), an output table ([`Table`]), the source label files read and
//! hashed along the way ([`Sources`]), and what one dataset's preparation returns
//! ([`DatasetTables`]).
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/*.py`, at HKU-MedAI/MGCA
//! `680fe4a6ee0c` (each script writes its splits as CSV or pickle files; ours write CSV).
//!
//! **Deviation:** none.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DataError;
use super::sampling::pandas_sample;

/// The datasets the reference uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    Mimic,
    Chexpert,
    Rsna,
    Covidx,
    Siim,
    ObjectCxr,
}

/// What the splits are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Classification,
    Detection,
    Segmentation,
    Pretraining,
}

/// What to do with a row whose image is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnBad {
    /// Stop with an error naming the file and row.
    Fail,
    /// Drop the row and count it in the manifest.
    Skip,
}

/// Everything `prepare` needs; recorded in the manifest so `verify` can redo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareOptions {
    pub dataset: Dataset,
    pub task: Task,
    /// The dataset's folder, in its published layout.
    pub root: PathBuf,
    /// Fix the reference's split leaks instead of reproducing them.
    pub fix_leaks: bool,
    pub on_bad: OnBad,
    /// Check that every referenced image exists (off: label files only, e.g. before the
    /// images are downloaded).
    #[serde(default = "yes")]
    pub check_images: bool,
    /// Object-CXR only: the Shapely table of polygon boxes (`polygon_boxes.py`).
    #[serde(default)]
    pub polygon_boxes: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl PrepareOptions {
    /// The defaults: the reference's leaks reproduced, failing on bad input, images checked.
    pub fn new(dataset: Dataset, task: Task, root: impl Into<PathBuf>) -> Self {
        Self {
            dataset,
            task,
            root: root.into(),
            fix_leaks: false,
            on_bad: OnBad::Fail,
            check_images: true,
            polygon_boxes: None,
        }
    }
}

/// One output table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column names; the first is `path`.
    pub header: Vec<String>,
    /// Rows, as written.
    pub rows: Vec<Vec<String>>,
    /// The column holding the class, for the manifest's counts.
    pub class_column: Option<usize>,
}

impl Table {
    /// pandas `sample(frac, random_state=42)` of the rows.
    pub fn pandas_sample(&self, frac: f64) -> Table {
        let rows = pandas_sample(self.rows.len(), frac, 42).into_iter().map(|i| self.rows[i].clone()).collect();
        Table { rows, ..self.clone() }
    }

    pub fn csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).expect("in-memory CSV");
        for row in &self.rows {
            w.write_record(row).expect("in-memory CSV");
        }
        w.into_inner().expect("in-memory CSV")
    }
}

/// A file's SHA-256 and its size (bytes for sources, rows for outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub size: usize,
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The source label files a preparation reads, each hashed for the manifest as it is read.
#[derive(Debug)]
pub struct Sources<'a> {
    root: &'a Path,
    /// Relative path (as given) → SHA-256 and size in bytes.
    pub digests: BTreeMap<String, FileDigest>,
}

impl<'a> Sources<'a> {
    /// No files read yet, under the dataset's `root`.
    pub fn new(root: &'a Path) -> Self {
        Self { root, digests: BTreeMap::new() }
    }

    /// Hash `relative` (joined to the root; an absolute path stays absolute) and return its path.
    pub fn read(&mut self, relative: &str) -> Result<PathBuf, DataError> {
        let path = self.root.join(relative);
        let bytes = std::fs::read(&path).map_err(|e| DataError::file(&path, e.to_string()))?;
        self.digests.insert(relative.to_string(), FileDigest { sha256: sha256(&bytes), size: bytes.len() });
        Ok(path)
    }
}

/// What one dataset's preparation returns, before images are checked and the manifest written.
#[derive(Debug, Clone, Default)]
pub struct DatasetTables {
    /// The output tables in the order they are written (`train.csv` first).
    pub tables: Vec<(&'static str, Table)>,
    /// How splits and subsets were drawn, in words: `split`, `subsets`, …
    pub sampling: BTreeMap<String, String>,
    /// The reference's known split bugs for this dataset, and whether they were reproduced.
    pub leaks: String,
    /// Where an image path came from, where that is known more precisely than "the label file":
    /// (file, line), for messages about that image.
    pub origins: HashMap<String, (PathBuf, usize)>,
}
