//! Labelled images for linear classification (CheXpert, RSNA, COVIDx): a prepared split (its
//! target columns) and its image cache, served in batches with the split's transform — the
//! moco-v2 style transform for CheXpert training, a random 224 crop for RSNA and COVIDx
//! training, the centre crop for validation and test.
//!
//! Book: "Data: splits, images and masks" and "Linear probing". Reference:
//! `mgca/datasets/classification_dataset.py` (`CheXpertImageDataset`, `RSNAImageDataset`,
//! `COVIDXImageDataset`: targets), `transforms.py` (`DataTransforms`, `Moco2Transform`) and
//! `data_module.py`, `DataModule` (train and valid drop the last partial batch, test keeps it), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none in what a batch holds. As with [`super::pairs`], rows whose image could
//! not be read when the cache was built are skipped and counted.

use std::path::Path;
use std::sync::Arc;

use super::DataError;
use super::augment::MocoV2Config;
use super::cache::{Crop, ImageCache, Transform, transformed_batches};
use super::chexpert::TASKS;
use super::prepare::Dataset;

/// Which split a loader serves: decides the transform and whether the last batch is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// The reference drops the last partial batch of train and valid, never of test.
    pub fn drop_last(self) -> bool {
        self != Split::Test
    }
}

/// The target columns a prepared classification split carries.
pub fn target_columns(dataset: Dataset) -> Result<Vec<&'static str>, String> {
    match dataset {
        Dataset::Chexpert => Ok(TASKS.to_vec()),
        Dataset::Rsna => Ok(vec!["Target"]),
        Dataset::Covidx => Ok(vec!["labels"]),
        other => Err(format!("{other:?} has no linear-classification task")),
    }
}

/// The reference's transform for a dataset's split.
pub fn transform(dataset: Dataset, split: Split) -> Transform {
    match (dataset, split) {
        (Dataset::Chexpert, Split::Train) => Transform::MocoV2(MocoV2Config::default()),
        (_, Split::Train) => Transform::Crop { mode: Crop::Random, size: 224 },
        _ => Transform::Crop { mode: Crop::Centre, size: 224 },
    }
}

/// A split's targets and its cached images.
#[derive(Debug)]
pub struct LabelledDataset {
    cache: Arc<ImageCache>,
    /// `[rows, columns]` targets.
    targets: Vec<f32>,
    /// The target columns, in order.
    pub columns: Vec<String>,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct LabelledBatch {
    /// `[N, 3, 224, 224]` values.
    pub images: Vec<f32>,
    /// `[N, T]` targets.
    pub targets: Vec<f32>,
    /// The split rows.
    pub rows: Vec<usize>,
}

impl LabelledDataset {
    /// Open a prepared split with the given target columns and the cache built from it.
    pub fn open(split_csv: &Path, cache: &Path, columns: &[&str]) -> Result<Self, DataError> {
        let mut reader = csv::Reader::from_path(split_csv).map_err(|e| DataError::file(split_csv, e.to_string()))?;
        let headers = reader.headers().map_err(|e| DataError::file(split_csv, e.to_string()))?.clone();
        let positions: Vec<usize> = columns
            .iter()
            .map(|c| {
                headers
                    .iter()
                    .position(|h| h == *c)
                    .ok_or_else(|| DataError::file(split_csv, format!("no `{c}` column")))
            })
            .collect::<Result<_, _>>()?;
        let mut targets = Vec::new();
        let mut rows = 0;
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
            for (&p, c) in positions.iter().zip(columns) {
                let text = record.get(p).unwrap_or("");
                let value: f32 = text
                    .trim()
                    .parse()
                    .map_err(|_| DataError::row(split_csv, i + 2, format!("`{c}` is `{text}`, not a number")))?;
                if !value.is_finite() {
                    return Err(DataError::row(split_csv, i + 2, format!("`{c}` is not finite")));
                }
                targets.push(value);
            }
            rows += 1;
        }
        let cache = ImageCache::open(cache)?;
        if cache.len != rows {
            return Err(DataError::file(
                split_csv,
                format!("{rows} rows but the cache holds {} images: rebuild the cache from this file", cache.len),
            ));
        }
        Ok(Self { cache: Arc::new(cache), targets, columns: columns.iter().map(|c| c.to_string()).collect() })
    }

    /// Rows that can be served.
    pub fn usable_rows(&self) -> Vec<usize> {
        self.cache.usable_rows()
    }

    /// Rows skipped because their image could not be read.
    pub fn skipped(&self) -> usize {
        self.cache.skipped.len()
    }

    /// The targets of one row.
    pub fn target(&self, row: usize) -> &[f32] {
        let t = self.columns.len();
        &self.targets[row * t..(row + 1) * t]
    }

    /// Batches of `order`, `batch` at a time, transformed on worker threads and prepared
    /// `prefetch` ahead; the last partial batch is dropped when `drop_last`.
    pub fn batches(
        &self,
        order: Vec<usize>,
        batch: usize,
        transform: Transform,
        drop_last: bool,
        seed: u32,
        prefetch: usize,
    ) -> impl Iterator<Item = Result<LabelledBatch, DataError>> + '_ {
        let keep = if drop_last { order.len() / batch * batch } else { order.len() };
        let images =
            transformed_batches(self.cache.clone(), order[..keep].to_vec(), batch, transform, seed, 0, prefetch);
        images.into_iter().map(move |item| {
            let item = item?;
            let targets = item.rows.iter().flat_map(|&r| self.target(r).to_vec()).collect();
            Ok(LabelledBatch { images: item.pixels, targets, rows: item.rows })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::MocoV2Draw;
    use crate::data::prepare::{OnBad, PrepareOptions, Task, prepare};
    use crate::data::sampling::LegacyRng;
    use crate::data::{cache, synth};

    fn prepared(dataset: Dataset, dir: &Path) -> std::path::PathBuf {
        let root = dir.join(format!("{dataset:?}"));
        match dataset {
            Dataset::Chexpert => synth::chexpert(&root, synth::Scale::Tiny, 4).unwrap(),
            Dataset::Rsna => synth::rsna(&root, synth::Scale::Tiny, 4).unwrap(),
            _ => synth::covidx(&root, synth::Scale::Tiny, 4).unwrap(),
        };
        let options = PrepareOptions::new(dataset, Task::Classification, root.clone());
        prepare(&options).unwrap().write(&dir.join(format!("{dataset:?}-out"))).unwrap();
        root
    }

    /// The three classification datasets, generated, prepared, cached and served: targets next
    /// to their images, the right transform per split, the reference's drop-last rule.
    #[test]
    fn synthetic_classification_loaders() {
        let dir = std::env::temp_dir().join(format!("mgca-labelled-{}", std::process::id()));
        for dataset in [Dataset::Chexpert, Dataset::Rsna, Dataset::Covidx] {
            let root = prepared(dataset, &dir);
            let out = dir.join(format!("{dataset:?}-out"));
            let columns = target_columns(dataset).unwrap();
            for (file, split) in [("train.csv", Split::Train), ("test.csv", Split::Test)] {
                let cache_path = dir.join(format!("{dataset:?}-{file}.cache"));
                cache::build(&out.join(file), &root, &cache_path, 256, OnBad::Fail).unwrap();
                let data = LabelledDataset::open(&out.join(file), &cache_path, &columns).unwrap();
                let rows = data.usable_rows();
                let batch = 4;
                let got: Vec<LabelledBatch> = data
                    .batches(rows.clone(), batch, transform(dataset, split), split.drop_last(), 3, 2)
                    .map(Result::unwrap)
                    .collect();
                let served: usize = got.iter().map(|b| b.rows.len()).sum();
                let want = if split.drop_last() { rows.len() / batch * batch } else { rows.len() };
                assert_eq!(served, want, "{dataset:?} {file}");
                let b = &got[0];
                assert_eq!(b.images.len(), b.rows.len() * 3 * 224 * 224);
                assert_eq!(b.targets.len(), b.rows.len() * columns.len());
                assert_eq!(&b.targets[..columns.len()], data.target(b.rows[0]));
                // The transform actually applied is the split's.
                let img = cache::ImageCache::open(&cache_path).unwrap().get(b.rows[0]).unwrap();
                let first = &b.images[..3 * 224 * 224];
                match transform(dataset, split) {
                    Transform::MocoV2(config) => {
                        let draw: MocoV2Draw = config.draw(&mut LegacyRng::new(3), 256);
                        assert_eq!(first, &draw.apply(&img, 224)[..]);
                    }
                    Transform::Crop { mode: Crop::Centre, .. } => {
                        let want = crate::data::image::normalise(&crate::data::image::centre_crop(&img, 224));
                        assert_eq!(first, &want[..]);
                    }
                    Transform::Whole => unreachable!("no classification split is served whole"),
                    Transform::Crop { mode: Crop::Random, .. } => {
                        let mut rng = LegacyRng::new(3);
                        let (top, left) = (rng.interval(32) as usize, rng.interval(32) as usize);
                        let want = crate::data::image::normalise(&crate::data::image::crop(&img, top, left, 224));
                        assert_eq!(first, &want[..]);
                    }
                }
            }
        }
        // A target that is not a number names the file and row.
        let out = dir.join("Rsna-out");
        let text = std::fs::read_to_string(out.join("test.csv")).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let target = lines[0].split(',').position(|h| h == "Target").unwrap();
        let mut cells: Vec<String> = lines[2].split(',').map(String::from).collect();
        cells[target] = "maybe".into();
        lines[2] = cells.join(",");
        std::fs::write(out.join("broken.csv"), lines.join("\n") + "\n").unwrap();
        let err = LabelledDataset::open(&out.join("broken.csv"), &dir.join("Rsna-test.csv.cache"), &["Target"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.csv line 3") && err.contains("maybe"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
