//! COVIDx (the COVIDx9A lists of COVIDx CXR-2): the space-separated lists, the reference's
//! 80 / 20 split of the training list, and the official test list.
//!
//! Each line is `patient_id filename class source`; `normal` → 0, `pneumonia` → 1, anything
//! else (`COVID-19`) → 2. `train_test_split(train_size=0.8, random_state=0)` over images (not
//! patients, not stratified): the first 80 % train, the rest valid.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/covidx.py`, `set_label` and
//! `preprocess_covidx`, and `mgca/datasets/classification_dataset.py`, `COVIDXImageDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::collections::BTreeMap;
use std::path::Path;

use super::DataError;
use super::sampling::{SplitSize, train_test_split};
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};

/// One line of a COVIDx list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub patient: String,
    pub filename: String,
    pub class: String,
}

impl Entry {
    /// The reference's label: normal 0, pneumonia 1, otherwise 2.
    pub fn label(&self) -> u8 {
        match self.class.as_str() {
            "normal" => 0,
            "pneumonia" => 1,
            _ => 2,
        }
    }
}

/// Read a COVIDx list; a line without four fields is an error naming it.
pub fn read_list(path: &Path) -> Result<Vec<Entry>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::file(path, e.to_string()))?;
    parse_list(&text, path)
}

/// [`read_list`] of a list's text; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn parse_list(text: &str, path: &Path) -> Result<Vec<Entry>, DataError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return Err(DataError::row(
                path,
                i + 1,
                format!("{} fields; expected `patient filename class source`", fields.len()),
            ));
        }
        entries.push(Entry { patient: fields[0].into(), filename: fields[1].into(), class: fields[2].into() });
    }
    if entries.is_empty() {
        return Err(DataError::file(path, "no entries"));
    }
    Ok(entries)
}

/// `(train, valid)` positions into the training list.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    train_test_split(n, SplitSize::TrainFraction(0.8), 0)
}

/// `COVIDx`'s prepared tables for `mgca data prepare`: an 80/20 split of `train_COVIDx9A.txt`, `test_COVIDx9A.txt` as test, and the 1 % and 10 %
/// training subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    if options.task != Task::Classification {
        return Err(DataError::file(&options.root, "COVIDx has a classification task only"));
    }
    let train_list = read_list(&sources.read("train_COVIDx9A.txt")?)?;
    let test_list = read_list(&sources.read("test_COVIDx9A.txt")?)?;
    let (train, valid) = split(train_list.len());
    let header = ["path", "filename", "class", "labels"].map(String::from).to_vec();
    let table = |entries: &[Entry], folder: &str, positions: &[usize]| Table {
        header: header.clone(),
        rows: positions
            .iter()
            .map(|&i| {
                let e = &entries[i];
                vec![format!("{folder}/{}", e.filename), e.filename.clone(), e.class.clone(), e.label().to_string()]
            })
            .collect(),
        class_column: Some(3),
    };
    let train_table = table(&train_list, "train", &train);
    sampling.insert(
        "split".into(),
        "train_test_split(train_size=0.8, random_state=0) of train_COVIDx9A.txt: first part train, second valid; test = test_COVIDx9A.txt".into(),
    );
    sampling.insert("subsets".into(), "pandas sample(frac=p, random_state=42) of train.csv".into());
    let tables = vec![
        ("train.csv", train_table.clone()),
        ("valid.csv", table(&train_list, "train", &valid)),
        ("test.csv", table(&test_list, "test", &(0..test_list.len()).collect::<Vec<_>>())),
        ("train_1pct.csv", train_table.pandas_sample(0.01)),
        ("train_10pct.csv", train_table.pandas_sample(0.1)),
    ];
    let leaks = "none known for COVIDx (the split is over images, not patients, as in the reference)".to_string();
    Ok(DatasetTables { tables, sampling, leaks, origins: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_labels_and_split_sizes() {
        let dir = std::env::temp_dir().join(format!("mgca-covidx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train_COVIDx9A.txt");
        std::fs::write(&path, "p1 a.png normal cohen\np2 b.jpg pneumonia rsna\np3 c.png COVID-19 sirm\n").unwrap();
        let e = read_list(&path).unwrap();
        assert_eq!(e.iter().map(Entry::label).collect::<Vec<_>>(), vec![0, 1, 2]);
        std::fs::write(&path, "p1 a.png normal cohen\np2 b.jpg\n").unwrap();
        assert!(read_list(&path).unwrap_err().to_string().contains("line 2"));
        // The reference's split of the real list: 29,986 images give 23,988 / 5,998.
        let (train, valid) = split(29_986);
        assert_eq!((train.len(), valid.len()), (23_988, 5_998));
        std::fs::remove_dir_all(dir).ok();
    }
}
