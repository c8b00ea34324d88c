//! RSNA Pneumonia Detection Challenge (stage 2): the label file, the per-patient table, and the
//! reference's classification and detection splits.
//!
//! One row of `stage_2_train_labels.csv` per box (`patientId, x, y, width, height, Target`;
//! negatives have one row with empty box fields). Rows are grouped per patient, **in sorted
//! patient-id order** (pandas `groupby` sorts its keys); a patient is positive with boxes
//! `[x, y, x + width, y + height]`, or negative. Then `train_test_split(random_state=0)`:
//! 30 % held out (classification) or 2 × 5,337 patients (detection and segmentation), the
//! held-out part halved with the *first* half becoming test.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/rsna.py` (`create_bbox`,
//! `preprocess_rsna_data`, `prepare_detection_pkl`, `prepare_detection_data`) and the RSNA datasets
//! in `mgca/datasets/`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none on the real file. On a smaller table (the synthetic datasets) the
//! detection hold-out is scaled in proportion ([`scaled_count`]). The reference's split sizes (18,678 / 4,003 / 4,003 and 16,010 / 5,337 /
//! 5,337) are tests on the real label file.

use std::collections::BTreeMap;
use std::path::Path;

use super::sampling::{SplitSize, global_choice_second_draw, pandas_sample, scaled_count, train_test_split};
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};
use super::{DataError, Splits};

/// One patient of the per-patient table.
#[derive(Debug, Clone, PartialEq)]
pub struct Patient {
    /// The `patientId` (the DICOM file is `stage_2_train_images/<patientId>.dcm`).
    pub id: String,
    /// Boxes `[x1, y1, x2, y2]` in pixels; empty for a negative.
    pub boxes: Vec<[f64; 4]>,
}

impl Patient {
    /// `Target`: 1 with boxes, 0 without.
    pub fn target(&self) -> u8 {
        u8::from(!self.boxes.is_empty())
    }

    /// The image path relative to the dataset root.
    pub fn path(&self) -> String {
        format!("stage_2_train_images/{}.dcm", self.id)
    }

    /// The boxes as the reference's CSV writes a Python list (`[[x1, y1, x2, y2], …]`), or
    /// an empty field for a negative.
    pub fn bbox_field(&self) -> String {
        if self.boxes.is_empty() {
            return String::new();
        }
        let boxes: Vec<String> = self
            .boxes
            .iter()
            .map(|b| format!("[{}]", b.iter().map(|v| python_float(*v)).collect::<Vec<_>>().join(", ")))
            .collect();
        format!("[{}]", boxes.join(", "))
    }
}

/// A float as Python's `repr` writes the values of this file (`264.0`, `152.5`).
fn python_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 { format!("{v:.1}") } else { format!("{v}") }
}

/// The largest side a DICOM image can have (Rows and Columns are 16-bit): boxes reaching
/// beyond it are refused when the labels are read; boxes outside their actual image when the
/// image is (see [`super::targets`]).
pub const MAX_SIDE: f64 = 65_535.0;

/// Read `stage_2_train_labels.csv` into the per-patient table, sorted by patient id. Every
/// malformed row is an error naming the file and the line.
pub fn read_labels(path: &Path) -> Result<Vec<Patient>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    read_labels_from(file, path)
}

/// [`read_labels`] from any reader; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn read_labels_from(input: impl std::io::Read, path: &Path) -> Result<Vec<Patient>, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| DataError::file(path, format!("no column `{name}`")))
    };
    let (id, x, y, w, h, target) =
        (column("patientId")?, column("x")?, column("y")?, column("width")?, column("height")?, column("Target")?);
    let mut patients: std::collections::BTreeMap<String, Vec<[f64; 4]>> = Default::default();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2; // 1-based, after the header
        let record = record.map_err(|e| DataError::row(path, line, e.to_string()))?;
        let field = |i: usize| record.get(i).unwrap_or("");
        let pid = field(id).trim();
        if pid.is_empty() {
            return Err(DataError::row(path, line, "empty patientId"));
        }
        let boxes = patients.entry(pid.to_string()).or_default();
        match field(target).trim() {
            "0" => {}
            "1" => {
                let number = |i: usize, name: &str| -> Result<f64, DataError> {
                    field(i).trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                        DataError::row(path, line, format!("`{name}` = {:?} is not a box coordinate", field(i)))
                    })
                };
                let raw = [(x, "x"), (y, "y"), (w, "width"), (h, "height")]
                    .map(|(i, name)| format!("{name} {}", field(i).trim()))
                    .join(", ");
                let (x, y, w, h) = (number(x, "x")?, number(y, "y")?, number(w, "width")?, number(h, "height")?);
                if w <= 0.0 || h <= 0.0 {
                    return Err(DataError::row(path, line, format!("an empty box: width {w}, height {h}")));
                }
                if x + w > MAX_SIDE || y + h > MAX_SIDE {
                    return Err(DataError::row(
                        path,
                        line,
                        format!("the box {raw} reaches beyond {MAX_SIDE} pixels, the largest image a DICOM can hold"),
                    ));
                }
                boxes.push([x, y, x + w, y + h]);
            }
            other => return Err(DataError::row(path, line, format!("Target {other:?} is neither 0 nor 1"))),
        }
    }
    if patients.is_empty() {
        return Err(DataError::file(path, "no label rows"));
    }
    Ok(patients.into_iter().map(|(id, boxes)| Patient { id, boxes }).collect())
}

/// Which of the reference's two RSNA partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// `train.csv` / `val.csv` / `test.csv`: 30 % held out.
    Classification,
    /// The detection (and segmentation) pickles: 2 × 5,337 patients held out.
    Detection,
}

/// The split positions into the per-patient table: train, then the held-out part halved,
/// the first half test and the second valid, each in the order `train_test_split` returns.
pub fn split(patients: usize, partition: Partition) -> Splits {
    let held_out = match partition {
        Partition::Classification => SplitSize::TestFraction(0.3),
        Partition::Detection => SplitSize::TestCount(scaled_count(5_337 * 2, patients, 26_684)),
    };
    let (train, held) = train_test_split(patients, held_out, 0);
    let (test, valid) = train_test_split(held.len(), SplitSize::TestFraction(0.5), 0);
    Splits {
        train,
        valid: valid.into_iter().map(|i| held[i]).collect(),
        test: test.into_iter().map(|i| held[i]).collect(),
    }
}

/// `RSNA`'s prepared tables for `mgca data prepare`: the classification split (`preprocess_rsna_data`) or the detection split shared by detection
/// and segmentation (`prepare_detection_data`), and their 1 % and 10 % training subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    let labels = sources.read("stage_2_train_labels.csv")?;
    let patients = read_labels(&labels)?;
    let partition = match options.task {
        Task::Classification => Partition::Classification,
        Task::Detection | Task::Segmentation => Partition::Detection,
        Task::Pretraining => {
            return Err(DataError::file(&options.root, "RSNA has no pretraining task (MIMIC-CXR has)"));
        }
    };
    let s = split(patients.len(), partition);
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
        Partition::Classification => "test_size=0.3",
        Partition::Detection => "test_size=10674",
    };
    sampling.insert(
        "split".into(),
        format!("patients sorted by id; train_test_split({held_out}, random_state=0), then the held-out part train_test_split(test_size=0.5, random_state=0): first part test, second valid"),
    );
    let n = s.train.len();
    let subset = |p: f64| -> Vec<usize> {
        let picked = if partition == Partition::Classification {
            pandas_sample(n, p, 42)
        } else {
            global_choice_second_draw(n, p, 42)
        };
        picked.into_iter().map(|i| s.train[i]).collect()
    };
    sampling.insert(
        "subsets".into(),
        if partition == Partition::Classification {
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
    let leaks = "none known for RSNA".to_string();
    Ok(DatasetTables { tables, sampling, leaks, origins: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mgca-rsna-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn rows_group_into_sorted_patients() {
        let path = write(
            "ok.csv",
            "patientId,x,y,width,height,Target\nb,,,,,0\na,264.0,152.0,213.0,379.0,1\na,562,152,256,453,1\n",
        );
        let patients = read_labels(&path).unwrap();
        assert_eq!(patients.len(), 2);
        assert_eq!(patients[0].id, "a");
        assert_eq!(patients[0].boxes, vec![[264.0, 152.0, 477.0, 531.0], [562.0, 152.0, 818.0, 605.0]]);
        assert_eq!(patients[0].bbox_field(), "[[264.0, 152.0, 477.0, 531.0], [562.0, 152.0, 818.0, 605.0]]");
        assert_eq!((patients[1].target(), patients[1].bbox_field()), (0, String::new()));
    }

    #[test]
    fn a_bad_row_names_the_file_and_line() {
        let path = write("bad.csv", "patientId,x,y,width,height,Target\na,,,,,0\nb,1,2,x,4,1\n");
        let err = read_labels(&path).unwrap_err().to_string();
        assert!(err.contains("bad.csv") && err.contains("line 3") && err.contains("`width`"), "{err}");
        let path = write("target.csv", "patientId,x,y,width,height,Target\na,,,,,2\n");
        assert!(read_labels(&path).unwrap_err().to_string().contains("line 2"));
    }

    /// The silent result: a box at x = 1e300 was accepted. Huge, negative, NaN and
    /// empty boxes are errors naming the file and line.
    #[test]
    fn boxes_outside_any_image_are_errors() {
        for (row, words) in [
            ("a,1e300,2,3,4,1", "beyond 65535"),
            ("a,1,2,70000,4,1", "beyond 65535"),
            ("a,-1,2,3,4,1", "`x`"),
            ("a,NaN,2,3,4,1", "`x`"),
            ("a,1,inf,3,4,1", "`y`"),
            ("a,1,2,0,4,1", "empty box"),
            ("a,1,2,3,0,1", "empty box"),
        ] {
            let path = write("boxes.csv", &format!("patientId,x,y,width,height,Target\nb,,,,,0\n{row}\n"));
            let err = read_labels(&path).unwrap_err().to_string();
            assert!(err.contains("boxes.csv line 3") && err.contains(words), "{row}: {err}");
        }
        // Short rows, an empty file, a header only.
        let path = write("short.csv", "patientId,x,y,width,height,Target\na,1\n");
        assert!(read_labels(&path).unwrap_err().to_string().contains("short.csv line 2"));
        let path = write("empty.csv", "");
        assert!(read_labels(&path).unwrap_err().to_string().contains("empty.csv"));
        let path = write("header.csv", "patientId,x,y,width,height,Target\n");
        assert!(read_labels(&path).unwrap_err().to_string().contains("no label rows"));
    }

    /// The real label file (from the torchxrayvision wheel, see `cargo xtask assets`): every
    /// row parses, and both partitions have the sizes data.md gives.
    #[test]
    fn the_real_label_file_gives_the_reference_split_sizes() {
        let path = assets::label_file("rsna").unwrap_or_else(|e| panic!("{e}"));
        let patients = read_labels(&path).unwrap();
        assert_eq!(patients.len(), 26_684);
        let positives = patients.iter().filter(|p| p.target() == 1).count();
        let boxes: usize = patients.iter().map(|p| p.boxes.len()).sum();
        assert_eq!((positives, boxes), (6_012, 9_555));
        let s = split(patients.len(), Partition::Classification);
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (18_678, 4_003, 4_003));
        let s = split(patients.len(), Partition::Detection);
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (16_010, 5_337, 5_337));
        s.check_partition(patients.len());
    }
}
