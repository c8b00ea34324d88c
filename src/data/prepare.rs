//! `mgca data prepare` and `mgca data verify`: a dataset's published files in, the reference's
//! splits and training subsets out as CSV files with a `path` column, plus a manifest that lets
//! anyone check them.
//!
//! Outputs: `train.csv`, `valid.csv`, `test.csv`, `train_1pct.csv`, `train_10pct.csv` and
//! `manifest.json` (SHA-256 of every source label file and output, the seeds and sampling
//! recipes, the fix-leaks mode, counts per split and class, every skipped row). Every file is
//! written to a temporary name and renamed, so an interrupted run leaves no half-written split.
//! `verify` re-runs the preparation from the manifest's recorded inputs and compares.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/*.py` (one script per
//! dataset) and the datasets' `data_pct` subsets in `mgca/datasets/*_dataset.py`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none in the splits. Referenced images are checked for existence (not
//! decoded); a missing one fails the run, or with `--on-bad skip` is dropped *after* the
//! reference's splits and subsets are drawn (so the rest stay the reference's) and counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use super::tables::{Dataset, DatasetTables, FileDigest, OnBad, PrepareOptions, Sources, Table, Task, sha256};
use super::{DataError, chexpert, covidx, mimic, objectcxr, rsna, siim};

/// The manifest of a prepared folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest layout version.
    pub format: u32,
    /// The inputs, so that `verify` can redo the preparation.
    pub options: PrepareOptions,
    /// How splits and subsets were drawn (seeds and recipes), in words and numbers.
    pub sampling: BTreeMap<String, String>,
    /// The reference's known split bugs for this dataset, and whether they were reproduced.
    pub leaks: String,
    /// Source label files (relative to the root): SHA-256 and size.
    pub sources: BTreeMap<String, FileDigest>,
    /// Output files: SHA-256 and rows.
    pub files: BTreeMap<String, FileDigest>,
    /// Rows per class, per output file.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Rows dropped with `--on-bad skip`: `file: path (reason)`.
    pub skipped: Vec<String>,
}

/// What a preparation produced, before it is written.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `train.csv`, `valid.csv`, `test.csv`, `train_1pct.csv`, `train_10pct.csv` (and, for
    /// SIIM, `train_balanced.csv`).
    pub tables: Vec<(&'static str, Table)>,
    pub manifest: Manifest,
}

/// Prepare a dataset's splits in memory.
pub fn prepare(options: &PrepareOptions) -> Result<Prepared, DataError> {
    let mut sources = Sources::new(&options.root);
    let prepared = match options.dataset {
        Dataset::Rsna => rsna::tables(options, &mut sources)?,
        Dataset::Chexpert => chexpert::tables(options, &mut sources)?,
        Dataset::Mimic => mimic::tables(options, &mut sources)?,
        Dataset::ObjectCxr => objectcxr::tables(options, &mut sources)?,
        Dataset::Covidx => covidx::tables(options, &mut sources)?,
        Dataset::Siim => siim::tables(options, &mut sources)?,
    };
    let DatasetTables { mut tables, sampling, leaks, origins } = prepared;
    let sources = sources.digests;
    let mut skipped = Vec::new();
    // The subsets repeat training rows: look each image up once.
    let mut exists: HashMap<String, bool> = HashMap::new();
    for (name, table) in tables.iter_mut().filter(|_| options.check_images) {
        let mut kept = Vec::with_capacity(table.rows.len());
        for (index, row) in table.rows.drain(..).enumerate() {
            let image = options.root.join(&row[0]);
            if *exists.entry(row[0].clone()).or_insert_with(|| image.is_file()) {
                kept.push(row);
            } else if options.on_bad == OnBad::Skip {
                skipped.push(format!("{name}: {} (image missing)", row[0]));
            } else {
                let hint = "use --on-bad skip to drop such rows";
                return Err(match origins.get(&row[0]) {
                    Some((file, line)) => DataError::row(
                        file,
                        *line,
                        format!(
                            "image {} does not exist (this row would be line {} of the prepared {name}; {hint})",
                            image.display(),
                            index + 2
                        ),
                    ),
                    None => DataError::file(
                        &options.root,
                        format!(
                            "image {} does not exist (it would be line {} of the prepared {name}, from {}; {hint})",
                            image.display(),
                            index + 2,
                            sources.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                });
            }
        }
        table.rows = kept;
    }
    let mut files = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (name, table) in &tables {
        files.insert(name.to_string(), FileDigest { sha256: sha256(&table.csv()), size: table.rows.len() });
        let mut classes = BTreeMap::new();
        if let Some(c) = table.class_column {
            for row in &table.rows {
                *classes.entry(format!("{}={}", table.header[c], row[c])).or_insert(0) += 1;
            }
        }
        classes.insert("rows".into(), table.rows.len());
        counts.insert(name.to_string(), classes);
    }
    let manifest = Manifest { format: 1, options: options.clone(), sampling, leaks, sources, files, counts, skipped };
    Ok(Prepared { tables, manifest })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).map_err(|e| DataError::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::file(path, e.to_string()))
}

impl Prepared {
    /// Write the tables and `manifest.json` into `out` (created if needed).
    pub fn write(&self, out: &Path) -> Result<(), DataError> {
        std::fs::create_dir_all(out).map_err(|e| DataError::file(out, e.to_string()))?;
        for (name, table) in &self.tables {
            write_atomic(&out.join(name), &table.csv())?;
        }
        let json = serde_json::to_vec_pretty(&self.manifest).expect("manifest serialises");
        write_atomic(&out.join("manifest.json"), &json)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Every difference, one line each; empty when the folder is what the manifest says.
    pub differences: Vec<String>,
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.differences.is_empty() {
            return f.write_str("OK: sources, splits and subsets are what the manifest records");
        }
        for d in &self.differences {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Re-run the preparation recorded in `out/manifest.json` and compare: the source files'
/// hashes, the recomputed outputs' hashes, and the files on disk.
pub fn verify(out: &Path) -> Result<Verification, DataError> {
    let path = out.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::file(&path, e.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| DataError::file(&path, e.to_string()))?;
    let mut differences = Vec::new();
    for (name, digest) in &manifest.sources {
        let path = manifest.options.root.join(name);
        match std::fs::read(&path) {
            Ok(bytes) if sha256(&bytes) == digest.sha256 => {}
            Ok(bytes) => differences.push(format!(
                "source {name}: SHA-256 {} now, {} recorded (the label file changed)",
                sha256(&bytes),
                digest.sha256
            )),
            Err(e) => differences.push(format!("source {name}: {}: {e}", path.display())),
        }
    }
    if !differences.is_empty() {
        return Ok(Verification { differences });
    }
    let again = prepare(&manifest.options)?;
    for (name, digest) in &manifest.files {
        match again.manifest.files.get(name) {
            Some(now) if now == digest => {}
            Some(now) => differences
                .push(format!("{name}: recomputed SHA-256 {} differs from the recorded {}", now.sha256, digest.sha256)),
            None => differences.push(format!("{name}: not produced any more")),
        }
        match std::fs::read(out.join(name)) {
            Ok(bytes) if sha256(&bytes) == digest.sha256 => {}
            Ok(_) => differences.push(format!("{name}: the file on disk differs from the recorded SHA-256")),
            Err(e) => differences.push(format!("{name}: {e}")),
        }
    }
    Ok(Verification { differences })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    /// The poor message: a missing MIMIC JPEG cited `<root>/valid.csv line 2`, a file
    /// that does not exist. Now it cites the metadata CSV line the image comes from, and the
    /// JPEG's path.
    #[test]
    fn a_missing_mimic_jpeg_cites_the_metadata_line() {
        let root = std::env::temp_dir().join(format!("mgca-prepare-mimic-{}", std::process::id()));
        crate::data::synth::mimic(&root, crate::data::synth::Scale::Tiny, 5).unwrap();
        let options = PrepareOptions::new(Dataset::Mimic, Task::Pretraining, root.clone());
        let prepared = prepare(&options).unwrap();
        let valid = &prepared.tables.iter().find(|(n, _)| *n == "valid.csv").unwrap().1;
        let missing = valid.rows[0][0].clone();
        std::fs::remove_file(root.join(&missing)).unwrap();
        let err = prepare(&options).unwrap_err();
        let text = err.to_string();
        let name = err.path.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("mimic-cxr-2.0.0-metadata.csv") && err.line.is_some(), "{text}");
        assert!(err.path.is_file(), "the cited file exists: {text}");
        assert!(text.contains(&missing) && text.contains("does not exist"), "{text}");
        // The cited line is the image's metadata row.
        let dicom_id = Path::new(&missing).file_stem().unwrap().to_string_lossy().to_string();
        let meta = std::fs::read(&err.path).unwrap();
        let meta = if name.ends_with(".gz") {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&meta[..]), &mut out).unwrap();
            out
        } else {
            String::from_utf8(meta).unwrap()
        };
        let line = meta.lines().nth(err.line.unwrap() - 1).unwrap();
        assert!(line.starts_with(&dicom_id), "{line}");
        std::fs::remove_dir_all(root).ok();
    }

    /// On the real RSNA label file, every split and subset equals, patient for patient and in
    /// order, what pandas and scikit-learn compute with the reference's code
    /// (`golden/python/splits/make_splits.py` records their SHA-256).
    #[test]
    fn rsna_splits_equal_the_references_patient_for_patient() {
        let labels = assets::label_file("rsna").unwrap_or_else(|e| panic!("{e}"));
        let root = labels.parent().unwrap().to_path_buf();
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/python/splits/rsna.json");
        let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
        for (task, key) in [(Task::Classification, "classification"), (Task::Detection, "detection")] {
            let options = PrepareOptions {
                dataset: Dataset::Rsna,
                task,
                root: root.clone(),
                fix_leaks: false,
                on_bad: OnBad::Fail,
                check_images: false,
                polygon_boxes: None,
            };
            let prepared = prepare(&options).unwrap();
            for (name, table) in &prepared.tables {
                let split = name.trim_end_matches(".csv");
                let ids: Vec<&str> = table.rows.iter().map(|r| r[1].as_str()).collect();
                let expected = &want[key][split];
                assert_eq!(ids.len() as u64, expected["rows"].as_u64().unwrap(), "{key} {split}");
                assert_eq!(sha256(ids.join("\n").as_bytes()), expected["sha256"].as_str().unwrap(), "{key} {split}");
            }
            let m = &prepared.manifest;
            assert_eq!(m.sources["stage_2_train_labels.csv"].size, 1_490_034);
        }
    }

    /// SIIM on the real RLE file: the row split, the balanced training set and both subsets
    /// equal, row for row, what pandas and NumPy give with the reference's recipe.
    #[test]
    fn siim_splits_equal_the_references_row_for_row() {
        let labels = assets::label_file("siim").unwrap_or_else(|e| panic!("{e}"));
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/python/splits/siim.json");
        let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
        let options = PrepareOptions {
            dataset: Dataset::Siim,
            task: Task::Segmentation,
            root: labels.parent().unwrap().to_path_buf(),
            fix_leaks: false,
            on_bad: OnBad::Fail,
            check_images: false,
            polygon_boxes: None,
        };
        let prepared = prepare(&options).unwrap();
        assert_eq!(prepared.tables.len(), 6);
        for (name, table) in &prepared.tables {
            let split = name.trim_end_matches(".csv");
            let ids: Vec<&str> = table.rows.iter().map(|r| r[1].as_str()).collect();
            let expected = &want["splits"][split];
            assert_eq!(ids.len() as u64, expected["rows"].as_u64().unwrap(), "{split}");
            assert_eq!(sha256(ids.join("\n").as_bytes()), expected["sha256"].as_str().unwrap(), "{split}");
        }
        assert!(prepared.manifest.leaks.starts_with("reproduced"));
    }

    /// CheXpert on the real train.csv: the training and validation splits (with the
    /// reference's overlap, and fixed) and both subsets equal pandas' image for image.
    #[test]
    fn chexpert_splits_equal_the_references_image_for_image() {
        let labels = assets::label_file("chexpert").unwrap_or_else(|e| panic!("{e}"));
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/python/splits/chexpert.json");
        let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
        // The real train.csv, and a one-row official validation file as the test set.
        let root = std::env::temp_dir().join(format!("mgca-chexpert-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy(&labels, root.join("train.csv")).unwrap();
        let header = std::fs::read_to_string(&labels).unwrap().lines().next().unwrap().to_string();
        let row = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,,,,,,,,,,,,,,";
        std::fs::write(root.join("valid.csv"), format!("{header}\n{row}\n")).unwrap();
        for (fix, train_key) in [(false, "train"), (true, "fixed_train")] {
            let options = PrepareOptions {
                dataset: Dataset::Chexpert,
                task: Task::Classification,
                root: root.clone(),
                fix_leaks: fix,
                on_bad: OnBad::Fail,
                check_images: false,
                polygon_boxes: None,
            };
            let prepared = prepare(&options).unwrap();
            for (name, table) in &prepared.tables {
                let split = name.trim_end_matches(".csv");
                let key = match split {
                    "train" => train_key,
                    "test" => continue,
                    s if fix && s.starts_with("train_") => continue,
                    s => s,
                };
                let paths: Vec<String> = table.rows.iter().map(|r| format!("CheXpert-v1.0-small/{}", r[0])).collect();
                let expected = &want[key];
                assert_eq!(paths.len() as u64, expected["rows"].as_u64().unwrap(), "{key}");
                assert_eq!(sha256(paths.join("\n").as_bytes()), expected["sha256"].as_str().unwrap(), "{key}");
            }
        }
        std::fs::remove_dir_all(root).ok();
    }

    /// Missing images: an error naming the row by default, dropped and counted with `skip`;
    /// the written folder verifies, and a changed file is caught.
    #[test]
    fn image_checks_manifest_and_verify() {
        let dir = std::env::temp_dir().join(format!("mgca-prepare-{}", std::process::id()));
        let root = dir.join("rsna");
        std::fs::create_dir_all(root.join("stage_2_train_images")).unwrap();
        let mut csv = String::from("patientId,x,y,width,height,Target\n");
        for i in 0..40 {
            csv.push_str(&if i % 4 == 0 { format!("p{i:02},10,20,30,40,1\n") } else { format!("p{i:02},,,,,0\n") });
            if i != 7 {
                std::fs::write(root.join(format!("stage_2_train_images/p{i:02}.dcm")), b"").unwrap();
            }
        }
        std::fs::write(root.join("stage_2_train_labels.csv"), csv).unwrap();
        let mut options = PrepareOptions::new(Dataset::Rsna, Task::Classification, root.clone());
        let err = prepare(&options).unwrap_err().to_string();
        assert!(err.contains("p07.dcm does not exist") && err.contains("line"), "{err}");
        options.on_bad = OnBad::Skip;
        let prepared = prepare(&options).unwrap();
        let m = &prepared.manifest;
        let total: usize = ["train.csv", "valid.csv", "test.csv"].iter().map(|f| m.counts[*f]["rows"]).sum();
        assert_eq!(total, 39);
        assert!(m.skipped.iter().any(|s| s.contains("p07.dcm")), "{:?}", m.skipped);
        let out = dir.join("out");
        prepared.write(&out).unwrap();
        assert!(verify(&out).unwrap().differences.is_empty());
        let text = std::fs::read_to_string(out.join("valid.csv")).unwrap();
        assert!(text.starts_with("path,patientId,Target,bbox\n"), "{text}");
        std::fs::write(out.join("valid.csv"), text.replace("p", "q")).unwrap();
        let v = verify(&out).unwrap();
        assert_eq!(v.differences, vec!["valid.csv: the file on disk differs from the recorded SHA-256".to_string()]);
        std::fs::remove_dir_all(dir).ok();
    }
}
