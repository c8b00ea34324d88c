//! SIIM-ACR Pneumothorax (stage 1): `train-rle.csv`, the DICOM tree, the reference's row-level
//! split and its training-set balancing and subsets.
//!
//! One CSV row per pneumothorax region (`ImageId, EncodedPixels`, the second header with a
//! leading space); `-1` marks an image without one. The split is `train_test_split` over
//! **rows** (30 % held out, halved, the first half test), so an image with several regions can
//! land in two splits. Training balances positives and negatives (as many negative images as
//! there are positive ones, drawn with NumPy's global generator) and then subsets by image.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/siim.py`,
//! `preprocess_pneumothorax_data`, and `mgca/datasets/segmentation_dataset.py`, `SIIMImageDataset`,
//! at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the reference compares `EncodedPixels` with `"-1"` without the leading space
//! the real file has, which makes every row positive and crashes; we compare the stripped value,
//! as the reference intends. `--fix-leaks` splits over images instead of rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::sampling::{LegacyRng, SplitSize, train_test_split};
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};
use super::{DataError, Splits, rle};

/// One row of `train-rle.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The DICOM's SOP instance UID (its file name without `.dcm`).
    pub image_id: String,
    /// The run-length string, as in the file (leading space kept).
    pub encoded: String,
}

impl Row {
    /// 1 for a pneumothorax region, 0 for `-1`.
    pub fn label(&self) -> u8 {
        u8::from(!rle::is_negative(&self.encoded))
    }
}

/// Read `train-rle.csv`; the run lengths of every row are checked to be well formed.
pub fn read_rle(path: &Path) -> Result<Vec<Row>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    read_rle_from(file, path)
}

/// [`read_rle`] from any reader; `path` is the name errors give. Never panics (the fuzz
/// harness's entry point).
pub fn read_rle_from(input: impl std::io::Read, path: &Path) -> Result<Vec<Row>, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| DataError::file(path, format!("no column `{name}`")))
    };
    let (id, encoded) = (column("ImageId")?, column("EncodedPixels")?);
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|e| DataError::row(path, line, e.to_string()))?;
        let image_id = record.get(id).unwrap_or("").trim().to_string();
        let value = record.get(encoded).unwrap_or("").to_string();
        if image_id.is_empty() {
            return Err(DataError::row(path, line, "empty ImageId"));
        }
        // Validated here, where the row is known: pairs of numbers whose runs end within the
        // largest image a DICOM can hold (the image's own size is checked when it is decoded).
        rle::runs(&value, crate::data::image::MAX_PIXELS)
            .map_err(|e| DataError::row(path, line, format!("EncodedPixels is not run-length pairs or -1: {e}")))?;
        rows.push(Row { image_id, encoded: value });
    }
    if rows.is_empty() {
        return Err(DataError::file(path, "no rows"));
    }
    Ok(rows)
}

/// The DICOM paths under `dicom-images-train/`, by ImageId, relative to the dataset root.
pub fn image_paths(root: &Path) -> Result<HashMap<String, String>, DataError> {
    let base = root.join("dicom-images-train");
    let mut paths = HashMap::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::file(&dir, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::file(&dir, e.to_string()))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".dcm")) {
                let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                paths.insert(stem.to_string(), relative);
            }
        }
    }
    Ok(paths)
}

/// The split positions into the rows: over rows (the reference), or over images with
/// `fix_leaks` (all rows of an image go where the image goes).
pub fn split(rows: &[Row], fix_leaks: bool) -> Splits {
    let halves = |n: usize| {
        let (train, held) = train_test_split(n, SplitSize::TestFraction(0.3), 0);
        let (test, valid) = train_test_split(held.len(), SplitSize::TestFraction(0.5), 0);
        let pick = |v: Vec<usize>| v.into_iter().map(|i| held[i]).collect::<Vec<_>>();
        (train, pick(valid), pick(test))
    };
    if !fix_leaks {
        let (train, valid, test) = halves(rows.len());
        return Splits { train, valid, test };
    }
    let images = unique_ids(rows.iter().map(|r| r.image_id.as_str()));
    let (train, valid, test) = halves(images.len());
    let rows_of = |picked: Vec<usize>| -> Vec<usize> {
        let wanted: HashSet<&str> = picked.iter().map(|&i| images[i]).collect();
        (0..rows.len()).filter(|&i| wanted.contains(rows[i].image_id.as_str())).collect()
    };
    Splits { train: rows_of(train), valid: rows_of(valid), test: rows_of(test) }
}

/// Distinct ids in order of first appearance (pandas `unique`).
fn unique_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}

/// The training rows the reference's segmentation dataset uses for a fraction `frac` of the
/// training split `train` (positions into it): balance — every positive image, and as many
/// negative images drawn from the unique negatives — then, for `frac < 1`, a subset of the
/// balanced images; positive rows first, then negative rows, each in file order. Both draws
/// come from the global generator seeded with `seed`, and the dataset is built twice, so the
/// second pair of draws is the one used.
pub fn training_rows(train: &[Row], frac: f64, seed: u32) -> Vec<usize> {
    // What the draws choose from is the same in both constructions.
    let positives: Vec<usize> = (0..train.len()).filter(|&i| train[i].label() == 1).collect();
    let pos_ids = unique_ids(positives.iter().map(|&i| train[i].image_id.as_str()));
    let neg_ids = unique_ids((0..train.len()).filter(|&i| train[i].label() == 0).map(|i| train[i].image_id.as_str()));
    let mut rng = LegacyRng::new(seed);
    let mut chosen = Vec::new();
    for _ in 0..2 {
        let picked: HashSet<&str> = rng.choice(neg_ids.len(), pos_ids.len()).into_iter().map(|i| neg_ids[i]).collect();
        let negatives =
            (0..train.len()).filter(|&i| train[i].label() == 0 && picked.contains(train[i].image_id.as_str()));
        let mut balanced: Vec<usize> = positives.iter().copied().chain(negatives).collect();
        if frac < 1.0 {
            let ids = unique_ids(balanced.iter().map(|&i| train[i].image_id.as_str()));
            let k = (ids.len() as f64 * frac) as usize;
            let keep: HashSet<&str> = rng.choice(ids.len(), k).into_iter().map(|i| ids[i]).collect();
            balanced.retain(|&i| keep.contains(train[i].image_id.as_str()));
        }
        chosen = balanced;
    }
    chosen
}

/// `SIIM`'s prepared tables for `mgca data prepare`: the 70/15/15 split, the balanced training set and its 1 % and 10 % subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    if options.task != Task::Segmentation {
        return Err(DataError::file(&options.root, "SIIM has a segmentation task only"));
    }
    let labels = sources.read("train-rle.csv")?;
    let rows = read_rle(&labels)?;
    let paths = if options.root.join("dicom-images-train").is_dir() || options.check_images {
        image_paths(&options.root)?
    } else {
        Default::default()
    };
    let s = split(&rows, options.fix_leaks);
    let header = ["path", "ImageId", " EncodedPixels", "Label"].map(String::from).to_vec();
    let table = |positions: &[usize]| Table {
        header: header.clone(),
        rows: positions
            .iter()
            .map(|&i| {
                let r = &rows[i];
                let path =
                    paths.get(&r.image_id).cloned().unwrap_or_else(|| format!("dicom-images-train/{}.dcm", r.image_id));
                vec![path, r.image_id.clone(), r.encoded.clone(), format!("{:.1}", r.label() as f64)]
            })
            .collect(),
        class_column: Some(3),
    };
    let train_rows: Vec<Row> = s.train.iter().map(|&i| rows[i].clone()).collect();
    let trained = |frac: f64, seed: u32| -> Vec<usize> {
        training_rows(&train_rows, frac, seed).into_iter().map(|i| s.train[i]).collect()
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
        "reproduced: the split is over CSV rows, so an image with several regions can be in two splits".to_string()
    };
    Ok(DatasetTables { tables, sampling, leaks, origins: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    #[test]
    fn the_real_rle_file_parses_and_splits_over_rows() {
        let path = assets::label_file("siim").unwrap_or_else(|e| panic!("{e}"));
        let rows = read_rle(&path).unwrap();
        assert_eq!(rows.len(), 12_954);
        assert_eq!(unique_ids(rows.iter().map(|r| r.image_id.as_str())).len(), 12_047);
        let s = split(&rows, false);
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (9_067, 1_944, 1_943));
        s.check_partition(rows.len());
        // Over rows, some images fall into two splits; over images, none does.
        let images_of = |part: &[usize]| part.iter().map(|&i| rows[i].image_id.clone()).collect::<HashSet<_>>();
        let leaked = images_of(&s.train).intersection(&images_of(&s.test)).count();
        assert!(leaked > 0, "the reference's row split leaks images");
        let fixed = split(&rows, true);
        fixed.check_partition(rows.len());
        assert_eq!(images_of(&fixed.train).intersection(&images_of(&fixed.test)).count(), 0);
        assert_eq!(images_of(&fixed.train).intersection(&images_of(&fixed.valid)).count(), 0);
    }

    #[test]
    fn balancing_keeps_as_many_negative_images_as_positive_ones() {
        let rows: Vec<Row> = (0..40)
            .map(|i| Row {
                image_id: format!("img{}", if i < 10 { i / 2 } else { i }), // images 0–4 have two regions
                encoded: if i < 10 { " 5 3".into() } else { " -1".into() },
            })
            .collect();
        let chosen = training_rows(&rows, 1.0, 42);
        let (pos, neg): (Vec<usize>, Vec<usize>) = chosen.iter().partition(|&&i| rows[i].label() == 1);
        assert_eq!((pos.len(), neg.len()), (10, 5), "5 positive images (10 rows), 5 negative images");
        assert!(chosen[..10].iter().all(|&i| rows[i].label() == 1), "positives first");
        let half = training_rows(&rows, 0.5, 42);
        assert_eq!(unique_ids(half.iter().map(|&i| rows[i].image_id.as_str())).len(), 5);
    }

    #[test]
    fn a_malformed_run_length_names_the_line() {
        let dir = std::env::temp_dir().join(format!("mgca-siim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train-rle.csv");
        std::fs::write(&path, "ImageId, EncodedPixels\na, -1\nb, 1 2 3\n").unwrap();
        let err = read_rle(&path).unwrap_err().to_string();
        assert!(err.contains("train-rle.csv line 3"), "{err}");
        // Runs past any image, or whose sums overflow: the file and row are named.
        let huge = u64::MAX;
        std::fs::write(&path, format!("ImageId, EncodedPixels\na, 1 2\nb, {huge} 1 {huge} 1\nc, 1 999999999999\n"))
            .unwrap();
        let err = read_rle(&path).unwrap_err().to_string();
        assert!(err.contains("train-rle.csv line 3") && err.contains("past the image"), "{err}");
        std::fs::write(&path, "ImageId, EncodedPixels\nc, 1 999999999999\n").unwrap();
        assert!(read_rle(&path).unwrap_err().to_string().contains("line 2"));
        std::fs::remove_dir_all(dir).ok();
    }
}
