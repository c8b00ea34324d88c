//! CheXpert v1.0 (linear classification): the label files, the reference's "5×200" hold-out,
//! its validation draw with the index-label bug, and the dataset's frontal filter, uncertainty
//! mapping and subsets.
//!
//! The reference removes a 1,000-row "5×200" set (200 rows per competition task with that task
//! positive and twelve other findings negative, pandas-sampled with `random_state=0`) from
//! `train.csv`, draws 5,000 validation *positions* with NumPy's global generator seeded 0, and
//! then drops the training rows by *index label* — which, after the removal left gaps in the
//! index, are mostly other rows. Validation therefore overlaps training.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/chexpert.py`,
//! `preprocess_chexpert_data` and `preprocess_chexpert_5x200_data`, and
//! `mgca/datasets/classification_dataset.py`, `CheXpertImageDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none by default; `--fix-leaks` drops the validation rows by position. On a
//! table smaller than the real one (the synthetic datasets) the 200 per task and the 5,000
//! validation rows are scaled in proportion ([`scaled_count`]).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::DataError;
use super::sampling::{LegacyRng, scaled_count};
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};

/// The five competition tasks, in the reference's target order.
pub const TASKS: [&str; 5] = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"];

/// Findings that must be exactly 0 (besides the other four tasks) for a 5×200 row.
const OTHERS: [&str; 8] = [
    "Enlarged Cardiomediastinum",
    "Lung Lesion",
    "Lung Opacity",
    "Pneumonia",
    "Pneumothorax",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// U-Ones (1) or U-Zeros (0) for an uncertain (−1) label of each task.
const UNCERTAIN_AS: [f32; 5] = [1.0, 0.0, 0.0, 1.0, 1.0];

/// One row of a CheXpert label file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `Path` as in the file (`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`).
    pub path: String,
    /// `Frontal/Lateral == "Frontal"`.
    pub frontal: bool,
    /// The label columns in the order `TASKS` then `OTHERS`: `None` when empty.
    labels: Vec<Option<f32>>,
}

/// A parsed label file.
#[derive(Debug, Clone)]
pub struct Labels {
    pub rows: Vec<Row>,
}

impl Row {
    /// Label `k` of `TASKS` then `OTHERS`, a missing value as 0.
    fn filled(&self, k: usize) -> f32 {
        self.labels[k].unwrap_or(0.0)
    }
}

impl Labels {
    /// The five targets after filling missing values with 0 and mapping −1 per task.
    pub fn targets(&self, row: &Row) -> [f32; 5] {
        std::array::from_fn(|k| if row.filled(k) == -1.0 { UNCERTAIN_AS[k] } else { row.filled(k) })
    }
}

/// The image path relative to the dataset root: `Path` without its first component.
pub fn relative_path(path: &str) -> &str {
    path.split_once('/').map_or(path, |(_, rest)| rest)
}

/// Read `train.csv` or `valid.csv`.
pub fn read_labels(path: &Path) -> Result<Labels, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    read_labels_from(file, path)
}

/// [`read_labels`] from any reader; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn read_labels_from(input: impl std::io::Read, path: &Path) -> Result<Labels, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| DataError::file(path, format!("no column `{name}`")))
    };
    let (p, view) = (column("Path")?, column("Frontal/Lateral")?);
    let label_names: Vec<&str> = TASKS.iter().chain(OTHERS.iter()).copied().collect();
    let label_columns = label_names.iter().map(|n| column(n)).collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|e| DataError::row(path, line, e.to_string()))?;
        let path_value = record.get(p).unwrap_or("").to_string();
        if path_value.is_empty() {
            return Err(DataError::row(path, line, "empty Path"));
        }
        let frontal = match record.get(view).unwrap_or("") {
            "Frontal" => true,
            "Lateral" => false,
            other => return Err(DataError::row(path, line, format!("Frontal/Lateral {other:?}"))),
        };
        let mut labels = Vec::with_capacity(label_columns.len());
        for (&c, name) in label_columns.iter().zip(&label_names) {
            let v = record.get(c).unwrap_or("").trim();
            labels.push(match v {
                "" => None,
                v => match v.parse::<f32>() {
                    Ok(x) if [1.0, 0.0, -1.0].contains(&x) => Some(x),
                    _ => return Err(DataError::row(path, line, format!("`{name}` = {v:?} is not 1, 0, -1 or empty"))),
                },
            });
        }
        rows.push(Row { path: path_value, frontal, labels });
    }
    if rows.is_empty() {
        return Err(DataError::file(path, "no label rows"));
    }
    Ok(Labels { rows })
}

/// The reference's split of `train.csv`: `(train, valid)` positions into its rows, each in
/// the reference's order (both still with lateral views; the dataset filters them).
pub fn split(labels: &Labels, fix_leaks: bool) -> (Vec<usize>, Vec<usize>) {
    // 5×200: frontal rows, missing labels as 0, one task exactly 1 and the rest exactly 0.
    let mut held_out = HashSet::new();
    let findings = TASKS.len() + OTHERS.len();
    for task in 0..TASKS.len() {
        let candidates: Vec<usize> = (0..labels.rows.len())
            .filter(|&i| {
                let row = &labels.rows[i];
                row.frontal
                    && row.filled(task) == 1.0
                    && (0..findings).filter(|&k| k != task).all(|k| row.filled(k) == 0.0)
            })
            .collect();
        let k = scaled_count(200, labels.rows.len(), 223_414).min(candidates.len());
        for j in LegacyRng::new(0).choice(candidates.len(), k) {
            held_out.insert(labels.rows[candidates[j]].path.clone());
        }
    }
    // The rest keeps its original index labels (the row numbers of train.csv).
    let rest: Vec<usize> = (0..labels.rows.len()).filter(|&i| !held_out.contains(&labels.rows[i].path)).collect();
    let valid_positions = LegacyRng::new(0).choice(rest.len(), scaled_count(5_000, labels.rows.len(), 223_414));
    let valid: Vec<usize> = valid_positions.iter().map(|&p| rest[p]).collect();
    let dropped: HashSet<usize> = if fix_leaks {
        valid.iter().copied().collect()
    } else {
        // The bug: positions used as index labels (labels absent from the index are ignored).
        valid_positions.iter().copied().collect()
    };
    let train = rest.into_iter().filter(|i| !dropped.contains(i)).collect();
    (train, valid)
}

/// `CheXpert`'s prepared tables for `mgca data prepare`: the reference's training and validation split of `train.csv`, the official `valid.csv` as
/// test, frontal views only, and the 1 % and 10 % training subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    if options.task != Task::Classification {
        return Err(DataError::file(&options.root, "CheXpert has a classification task only"));
    }
    let train_labels = read_labels(&sources.read("train.csv")?)?;
    let test_labels = read_labels(&sources.read("valid.csv")?)?;
    let (train, valid) = split(&train_labels, options.fix_leaks);
    let header: Vec<String> = std::iter::once("path".to_string()).chain(TASKS.iter().map(|t| t.to_string())).collect();
    let table = |labels: &Labels, positions: &[usize]| Table {
        header: header.clone(),
        rows: positions
            .iter()
            .map(|&i| &labels.rows[i])
            .filter(|r| r.frontal)
            .map(|r| {
                std::iter::once(relative_path(&r.path).to_string())
                    .chain(labels.targets(r).iter().map(|v| format!("{v:.1}")))
                    .collect()
            })
            .collect(),
        class_column: None,
    };
    let train_table = table(&train_labels, &train);
    sampling.insert(
        "split".into(),
        "5×200 rows removed (pandas sample(n=200, random_state=0) per task); 5,000 validation positions from NumPy's generator seeded 0; frontal views kept; test = the official valid.csv".into(),
    );
    sampling.insert("subsets".into(), "pandas sample(frac=p, random_state=42) of the frontal training rows".into());
    let tables = vec![
        ("train.csv", train_table.clone()),
        ("valid.csv", table(&train_labels, &valid)),
        ("test.csv", table(&test_labels, &(0..test_labels.rows.len()).collect::<Vec<_>>())),
        ("train_1pct.csv", train_table.pandas_sample(0.01)),
        ("train_10pct.csv", train_table.pandas_sample(0.1)),
    ];
    let leaks = if options.fix_leaks {
        "fixed: the validation rows are dropped from training by position".to_string()
    } else {
        "reproduced: training rows dropped by index label, so most validation rows stay in training".to_string()
    };
    Ok(DatasetTables { tables, sampling, leaks, origins: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    #[test]
    fn the_real_train_csv_parses_and_the_validation_set_overlaps_training() {
        let path = assets::label_file("chexpert").unwrap_or_else(|e| panic!("{e}"));
        let labels = read_labels(&path).unwrap();
        assert_eq!(labels.rows.len(), 223_414);
        let (train, valid) = split(&labels, false);
        assert_eq!(valid.len(), 5_000);
        let train_set: HashSet<usize> = train.iter().copied().collect();
        let overlap = valid.iter().filter(|i| train_set.contains(i)).count();
        assert!(overlap > 4_000, "the reference's bug keeps most validation rows in training: {overlap}");
        let (fixed_train, fixed_valid) = split(&labels, true);
        assert_eq!(fixed_valid, valid);
        assert_eq!(fixed_train.len(), 223_414 - 1_000 - 5_000);
        assert!(fixed_valid.iter().all(|i| !fixed_train.contains(i)));
    }

    #[test]
    fn targets_fill_and_map_uncertainty() {
        let labels = Labels {
            rows: vec![Row {
                path: "CheXpert-v1.0-small/train/p/s/v.jpg".into(),
                frontal: true,
                labels: [Some(-1.0), Some(-1.0), None, Some(-1.0), Some(1.0)].into_iter().chain([None; 8]).collect(),
            }],
        };
        assert_eq!(labels.targets(&labels.rows[0]), [1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(relative_path(&labels.rows[0].path), "train/p/s/v.jpg");
    }
}
