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
//! Spec: `data.md` §1.5 (subsets), §4 (RSNA), §8–§9 (split summary).
//!
//! **Deviation:** none in the splits. Referenced images are checked for existence (not
//! decoded); a missing one fails the run, or with `--on-bad skip` is dropped *after* the
//! reference's splits and subsets are drawn (so the rest stay the reference's) and counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sampling::{global_choice_second_draw, pandas_sample};
use super::{DataError, chexpert, covidx, mimic, objectcxr, rsna, siim};

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
    fn pandas_sample(&self, frac: f64) -> Table {
        let rows = pandas_sample(self.rows.len(), frac, 42).into_iter().map(|i| self.rows[i].clone()).collect();
        Table { rows, ..self.clone() }
    }

    fn csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).expect("in-memory CSV");
        for row in &self.rows {
            w.write_record(row).expect("in-memory CSV");
        }
        w.into_inner().expect("in-memory CSV")
    }
}

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

/// A file's SHA-256 and its size (bytes for sources, rows for outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub size: usize,
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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
    let mut sampling = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let mut source = |relative: &str| -> Result<PathBuf, DataError> {
        let path = options.root.join(relative);
        let bytes = std::fs::read(&path).map_err(|e| DataError::file(&path, e.to_string()))?;
        sources.insert(relative.to_string(), FileDigest { sha256: sha256(&bytes), size: bytes.len() });
        Ok(path)
    };
    // Where a table's image path came from, where it is known more precisely than "the label
    // file": (file, line), for messages about that image.
    let mut origins: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let splits = match options.dataset {
        Dataset::Rsna => {
            let labels = source("stage_2_train_labels.csv")?;
            let patients = rsna::read_labels(&labels)?;
            let partition = match options.task {
                Task::Classification => rsna::Partition::Classification,
                Task::Detection | Task::Segmentation => rsna::Partition::Detection,
                Task::Pretraining => {
                    return Err(DataError::file(&options.root, "RSNA has no pretraining task (MIMIC-CXR has)"));
                }
            };
            let s = rsna::split(patients.len(), partition);
            let header = ["path", "patientId", "Target", "bbox"].map(String::from).to_vec();
            let table = |positions: &[usize]| Table {
                header: header.clone(),
                rows: positions
                    .iter()
                    .map(|&i| {
                        let p = &patients[i];
                        vec![p.path(), p.id.clone(), p.target().to_string(), p.bbox_field()]
                    })
                    .collect(),
                class_column: Some(2),
            };
            let held_out = match partition {
                rsna::Partition::Classification => "test_size=0.3",
                rsna::Partition::Detection => "test_size=10674",
            };
            sampling.insert(
                "split".into(),
                format!("patients sorted by id; train_test_split({held_out}, random_state=0), then the held-out part train_test_split(test_size=0.5, random_state=0): first part test, second valid"),
            );
            let n = s.train.len();
            let subset = |p: f64| -> Vec<usize> {
                let picked = if partition == rsna::Partition::Classification {
                    pandas_sample(n, p, 42)
                } else {
                    global_choice_second_draw(n, p, 42)
                };
                picked.into_iter().map(|i| s.train[i]).collect()
            };
            sampling.insert(
                "subsets".into(),
                if partition == rsna::Partition::Classification {
                    "pandas sample(frac=p, random_state=42) of train.csv".into()
                } else {
                    "global NumPy choice(n, int(p·n), replace=False) after seed 42, second draw (the training set is built twice)".into()
                },
            );
            let tables = vec![
                ("train.csv", table(&s.train)),
                ("valid.csv", table(&s.valid)),
                ("test.csv", table(&s.test)),
                ("train_1pct.csv", table(&subset(0.01))),
                ("train_10pct.csv", table(&subset(0.1))),
            ];
            (tables, "none known for RSNA".to_string())
        }
        Dataset::Chexpert => {
            if options.task != Task::Classification {
                return Err(DataError::file(&options.root, "CheXpert has a classification task only"));
            }
            let train_labels = chexpert::read_labels(&source("train.csv")?)?;
            let test_labels = chexpert::read_labels(&source("valid.csv")?)?;
            let (train, valid) = chexpert::split(&train_labels, options.fix_leaks);
            let header: Vec<String> =
                std::iter::once("path".to_string()).chain(chexpert::TASKS.iter().map(|t| t.to_string())).collect();
            let table = |labels: &chexpert::Labels, positions: &[usize]| Table {
                header: header.clone(),
                rows: positions
                    .iter()
                    .map(|&i| &labels.rows[i])
                    .filter(|r| r.frontal)
                    .map(|r| {
                        std::iter::once(chexpert::relative_path(&r.path).to_string())
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
            sampling
                .insert("subsets".into(), "pandas sample(frac=p, random_state=42) of the frontal training rows".into());
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
            (tables, leaks)
        }
        Dataset::Mimic => {
            if options.task != Task::Pretraining {
                return Err(DataError::file(&options.root, "MIMIC-CXR is used for pretraining only"));
            }
            source(&mimic::csv_name(&options.root, "mimic-cxr-2.0.0-metadata.csv"))?;
            source(&mimic::csv_name(&options.root, "mimic-cxr-2.0.0-split.csv"))?;
            let images = mimic::read_images(&options.root)?;
            origins.extend(images.iter().map(|im| (im.path.clone(), im.source.clone())));
            let header = ["path", "dicom_id", "subject_id", "study_id", "ViewPosition", "caption", "tokens"]
                .map(String::from)
                .to_vec();
            let row = |im: &mimic::Image| -> Option<Vec<String>> {
                let (sentences, tokens) = im.caption.as_ref()?;
                Some(vec![
                    im.path.clone(),
                    im.dicom_id.clone(),
                    im.subject_id.clone(),
                    im.study_id.clone(),
                    im.view.clone(),
                    sentences.join(" "),
                    tokens.to_string(),
                ])
            };
            let of = |split: &str| images.iter().filter(|im| im.split == split).collect::<Vec<_>>();
            let (train, valid) = (of("train"), of("valid"));
            let table = |rows: &[&mimic::Image]| Table {
                header: header.clone(),
                rows: rows.iter().filter_map(|im| row(im)).collect(),
                class_column: None,
            };
            // The reference samples the split's rows, then keeps those with a caption.
            let subset = |frac: f64| {
                let picked: Vec<&mimic::Image> =
                    pandas_sample(train.len(), frac, 42).into_iter().map(|i| train[i]).collect();
                table(&picked)
            };
            sampling.insert(
                "split".into(),
                "the official split, validate and test merged into valid; frontal (PA/AP) images whose report has an impression or findings and whose caption has at least 3 tokens".into(),
            );
            sampling.insert(
                "subsets".into(),
                "pandas sample(frac=p, random_state=42) of the training images, then the caption filter".into(),
            );
            let tables = vec![
                ("train.csv", table(&train)),
                ("valid.csv", table(&valid)),
                ("test.csv", table(&[])),
                ("train_1pct.csv", subset(0.01)),
                ("train_10pct.csv", subset(0.1)),
            ];
            (
                tables,
                "none: there is no MIMIC test set (the official test split is part of valid, as in the reference)"
                    .to_string(),
            )
        }
        Dataset::ObjectCxr => {
            if options.task != Task::Detection {
                return Err(DataError::file(&options.root, "Object-CXR has a detection task only"));
            }
            let polygons = match &options.polygon_boxes {
                // Hashed as a source (an absolute path stays absolute under the root).
                Some(p) => Some(objectcxr::read_polygon_boxes(&source(&p.to_string_lossy())?)?),
                None => None,
            };
            let train_list = objectcxr::read_list(&source("train.csv")?, polygons.as_ref())?;
            let dev_list = objectcxr::read_list(&source("dev.csv")?, polygons.as_ref())?;
            let (train, valid) = objectcxr::split(train_list.len());
            let header = ["path", "image_name", "Target", "boxes_xywh"].map(String::from).to_vec();
            let table = |entries: &[objectcxr::Entry], folder: &str, positions: &[usize]| Table {
                header: header.clone(),
                rows: positions
                    .iter()
                    .map(|&i| {
                        let e = &entries[i];
                        let boxes: Vec<String> = e
                            .boxes
                            .iter()
                            .map(|b| format!("[{}]", b.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(", ")))
                            .collect();
                        vec![
                            format!("{folder}/{}", e.image_name),
                            e.image_name.clone(),
                            u8::from(!e.boxes.is_empty()).to_string(),
                            format!("[{}]", boxes.join(", ")),
                        ]
                    })
                    .collect(),
                class_column: Some(2),
            };
            let subset = |frac: f64| -> Vec<usize> {
                global_choice_second_draw(train.len(), frac, 42).into_iter().map(|i| train[i]).collect()
            };
            sampling.insert(
                "split".into(),
                "train_test_split(test_size=0.1, random_state=0) of train.csv: first part train, second valid (images from train/); test = dev.csv (images from dev/)".into(),
            );
            sampling.insert(
                "subsets".into(),
                "global NumPy choice(n, int(p·n), replace=False) after seed 42, second draw (the training set is built twice)".into(),
            );
            if options.polygon_boxes.is_some() {
                sampling.insert("polygon_boxes".into(), "from the Shapely table given with --polygon-boxes".into());
            }
            let tables = vec![
                ("train.csv", table(&train_list, "train", &train)),
                ("valid.csv", table(&train_list, "train", &valid)),
                ("test.csv", table(&dev_list, "dev", &(0..dev_list.len()).collect::<Vec<_>>())),
                ("train_1pct.csv", table(&train_list, "train", &subset(0.01))),
                ("train_10pct.csv", table(&train_list, "train", &subset(0.1))),
            ];
            (tables, "none known for Object-CXR".to_string())
        }
        Dataset::Covidx => {
            if options.task != Task::Classification {
                return Err(DataError::file(&options.root, "COVIDx has a classification task only"));
            }
            let train_list = covidx::read_list(&source("train_COVIDx9A.txt")?)?;
            let test_list = covidx::read_list(&source("test_COVIDx9A.txt")?)?;
            let (train, valid) = covidx::split(train_list.len());
            let header = ["path", "filename", "class", "labels"].map(String::from).to_vec();
            let table = |entries: &[covidx::Entry], folder: &str, positions: &[usize]| Table {
                header: header.clone(),
                rows: positions
                    .iter()
                    .map(|&i| {
                        let e = &entries[i];
                        vec![
                            format!("{folder}/{}", e.filename),
                            e.filename.clone(),
                            e.class.clone(),
                            e.label().to_string(),
                        ]
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
            (tables, "none known for COVIDx (the split is over images, not patients, as in the reference)".to_string())
        }
        Dataset::Siim => {
            if options.task != Task::Segmentation {
                return Err(DataError::file(&options.root, "SIIM has a segmentation task only"));
            }
            let labels = source("train-rle.csv")?;
            let rows = siim::read_rle(&labels)?;
            let paths = if options.root.join("dicom-images-train").is_dir() || options.check_images {
                siim::image_paths(&options.root)?
            } else {
                Default::default()
            };
            let s = siim::split(&rows, options.fix_leaks);
            let header = ["path", "ImageId", " EncodedPixels", "Label"].map(String::from).to_vec();
            let table = |positions: &[usize]| Table {
                header: header.clone(),
                rows: positions
                    .iter()
                    .map(|&i| {
                        let r = &rows[i];
                        let path = paths
                            .get(&r.image_id)
                            .cloned()
                            .unwrap_or_else(|| format!("dicom-images-train/{}.dcm", r.image_id));
                        vec![path, r.image_id.clone(), r.encoded.clone(), format!("{:.1}", r.label() as f64)]
                    })
                    .collect(),
                class_column: Some(3),
            };
            let train_rows: Vec<siim::Row> = s.train.iter().map(|&i| rows[i].clone()).collect();
            let trained = |frac: f64, seed: u32| -> Vec<usize> {
                siim::training_rows(&train_rows, frac, seed).into_iter().map(|i| s.train[i]).collect()
            };
            sampling.insert(
                "split".into(),
                format!(
                    "train_test_split over {} (test_size=0.3, random_state=0), then the held-out part train_test_split(test_size=0.5, random_state=0): first part test, second valid",
                    if options.fix_leaks { "images" } else { "rows" }
                ),
            );
            sampling.insert(
                "subsets".into(),
                "training set balanced (every positive image, as many negative images by global NumPy choice), then choice of int(p·images) images; seed 42 (0 for 10 %), second draws (the training set is built twice); train_balanced.csv is the 100 % training set".into(),
            );
            let tables = vec![
                ("train.csv", table(&s.train)),
                ("valid.csv", table(&s.valid)),
                ("test.csv", table(&s.test)),
                ("train_1pct.csv", table(&trained(0.01, 42))),
                ("train_10pct.csv", table(&trained(0.1, 0))),
                ("train_balanced.csv", table(&trained(1.0, 42))),
            ];
            let leaks = if options.fix_leaks {
                "fixed: split over images, so no image is in two splits".to_string()
            } else {
                "reproduced: the split is over CSV rows, so an image with several regions can be in two splits"
                    .to_string()
            };
            (tables, leaks)
        }
    };
    let (mut tables, leaks) = splits;
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
