//! The detection datasets served from a cache: a prepared RSNA or Object-CXR split, its images
//! stretched to 224 × 224 once ([`Geometry::Stretch`]), and its boxes as the reference's padded
//! target rows `[class = 0, cx, cy, w, h]` normalised by each image's decoded size.
//!
//! A batch is `[N, 3, 224, 224]` normalised values and `[N, T, 5]` targets (T = 10 for RSNA,
//! 20 for Object-CXR); every batch equals what [`super::samples`] builds image by image, which
//! is the reference's `__getitem__` (tested below).
//!
//! Book: "Detection" (the data). Reference: `mgca/datasets/detection_dataset.py`,
//! `RSNADetectionDataset` and `OBJCXRDetectionDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none (the reference's colour jitter is built but never applied, so there is
//! no augmentation to reproduce).

use std::path::Path;
use std::sync::Arc;

use super::DataError;
use super::cache::{Geometry, ImageCache, Transform, transformed_batches};
use super::prepare::Dataset;
use super::targets;

/// The side of the detection images.
pub const DETECTION_SIDE: usize = 224;

/// Target rows per image: RSNA 10, Object-CXR 20.
pub fn target_rows(dataset: Dataset) -> Result<usize, String> {
    match dataset {
        Dataset::Rsna => Ok(10),
        Dataset::ObjectCxr => Ok(20),
        other => Err(format!("{other:?} has no detection task (RSNA and Object-CXR have)")),
    }
}

/// A prepared detection split and its stretched image cache.
#[derive(Debug)]
pub struct DetectionDataset {
    cache: Arc<ImageCache>,
    /// `[rows, T, 5]` targets.
    targets: Vec<f32>,
    /// T.
    pub rows_per_image: usize,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct DetectionBatch {
    /// `[N, 3, 224, 224]` values.
    pub images: Vec<f32>,
    /// `[N, T, 5]` targets.
    pub targets: Vec<f32>,
    /// The split rows.
    pub rows: Vec<usize>,
}

/// The boxes of a prepared row: RSNA's `bbox` (`[[x1, y1, x2, y2], …]`, empty for negatives) or
/// Object-CXR's `boxes_xywh` (`[[x, y, w, h], …]`).
fn parse_boxes(text: &str) -> Result<Vec<[f64; 4]>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|e| format!("boxes `{text}` are not a list of 4-number lists: {e}"))
}

impl DetectionDataset {
    // ANCHOR: open
    /// Open a prepared detection split of `dataset` and the stretched cache built from it.
    pub fn open(split_csv: &Path, cache: &Path, dataset: Dataset) -> Result<Self, DataError> {
        let rows_per_image = target_rows(dataset).map_err(|m| DataError::file(split_csv, m))?;
        let column = match dataset {
            Dataset::Rsna => "bbox",
            _ => "boxes_xywh",
        };
        let cache = ImageCache::open(cache)?;
        if cache.geometry != Geometry::Stretch || cache.side != DETECTION_SIDE {
            return Err(DataError::file(
                cache.path(),
                format!(
                    "not a {DETECTION_SIDE} px stretched (detection) cache: rebuild it from {}",
                    split_csv.display()
                ),
            ));
        }
        let mut reader = csv::Reader::from_path(split_csv).map_err(|e| DataError::file(split_csv, e.to_string()))?;
        let headers = reader.headers().map_err(|e| DataError::file(split_csv, e.to_string()))?.clone();
        let position = headers
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| DataError::file(split_csv, format!("no `{column}` column")))?;
        let skipped: std::collections::HashSet<usize> = cache.skipped.iter().copied().collect();
        let mut targets = Vec::new();
        let mut rows = 0;
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
            let boxes =
                parse_boxes(record.get(position).unwrap_or("")).map_err(|m| DataError::row(split_csv, i + 2, m))?;
            let (height, width) = cache.sizes.get(i).copied().unwrap_or((0, 0));
            let padded = if skipped.contains(&i) {
                vec![[0.0; 5]; rows_per_image]
            } else {
                let (w, h) = (width as f64, height as f64);
                match dataset {
                    Dataset::Rsna => targets::rsna_detection(&boxes, w, h),
                    _ => targets::object_cxr_detection(&boxes, w, h),
                }
                .map_err(|m| DataError::row(split_csv, i + 2, m))?
            };
            targets.extend(padded.iter().flatten().map(|&v| v as f32));
            rows += 1;
        }
        if cache.len != rows {
            return Err(DataError::file(
                split_csv,
                format!("{rows} rows but the cache holds {} images: rebuild the cache from this file", cache.len),
            ));
        }
        Ok(Self { cache: Arc::new(cache), targets, rows_per_image })
    }
    // ANCHOR_END: open

    /// Rows that can be served.
    pub fn usable_rows(&self) -> Vec<usize> {
        self.cache.usable_rows()
    }

    /// The `[T, 5]` target rows of one image.
    pub fn target(&self, row: usize) -> &[f32] {
        let t = self.rows_per_image * 5;
        &self.targets[row * t..(row + 1) * t]
    }

    /// The cached 224 px image of a row (for pictures).
    pub fn image(&self, row: usize) -> Result<super::resize::Gray, DataError> {
        self.cache.get(row)
    }

    /// Batches of `order`, `batch` at a time, prepared `prefetch` ahead on worker threads; the
    /// last partial batch is dropped when `drop_last`.
    pub fn batches(
        &self,
        order: Vec<usize>,
        batch: usize,
        drop_last: bool,
        prefetch: usize,
    ) -> impl Iterator<Item = Result<DetectionBatch, DataError>> + '_ {
        let keep = if drop_last { order.len() / batch * batch } else { order.len() };
        let images =
            transformed_batches(self.cache.clone(), order[..keep].to_vec(), batch, Transform::Whole, 0, 0, prefetch);
        images.into_iter().map(move |item| {
            let item = item?;
            let targets = item.rows.iter().flat_map(|&r| self.target(r).to_vec()).collect();
            Ok(DetectionBatch { images: item.pixels, targets, rows: item.rows })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cache::build_with;
    use crate::data::prepare::{OnBad, PrepareOptions, Task, prepare};
    use crate::data::{samples, synth};

    /// Both detection datasets, generated, prepared, cached and served: every image and target
    /// equals the per-image path (the reference's `__getitem__`), and the drop-last rule holds.
    #[test]
    fn cached_batches_equal_the_reference_samples() {
        let dir = std::env::temp_dir().join(format!("mgca-detection-data-{}", std::process::id()));
        for dataset in [Dataset::Rsna, Dataset::ObjectCxr] {
            let root = dir.join(format!("{dataset:?}"));
            match dataset {
                Dataset::Rsna => synth::rsna(&root, synth::Scale::Tiny, 5).unwrap(),
                _ => synth::objectcxr(&root, synth::Scale::Tiny, 5).unwrap(),
            }
            let out = dir.join(format!("{dataset:?}-prepared"));
            prepare(&PrepareOptions::new(dataset, Task::Detection, root.clone())).unwrap().write(&out).unwrap();
            let split = out.join("valid.csv");
            let cache = dir.join(format!("{dataset:?}.cache"));
            build_with(&split, &root, &cache, DETECTION_SIDE, Geometry::Stretch, OnBad::Fail).unwrap();
            let data = DetectionDataset::open(&split, &cache, dataset).unwrap();
            let rows = data.usable_rows();
            let got: Vec<DetectionBatch> = data.batches(rows.clone(), 3, true, 2).map(Result::unwrap).collect();
            assert_eq!(got.iter().map(|b| b.rows.len()).sum::<usize>(), rows.len() / 3 * 3);
            let t = data.rows_per_image;
            let mut positives = 0;
            let mut reader = csv::Reader::from_path(&split).unwrap();
            let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
            for batch in &got {
                for (k, &row) in batch.rows.iter().enumerate() {
                    let path = root.join(&records[row][0]);
                    let boxes = parse_boxes(&records[row][3]).unwrap();
                    let sample = match dataset {
                        Dataset::Rsna => samples::rsna_detection(&path, &boxes).unwrap(),
                        _ => samples::object_cxr_detection(&path, &boxes).unwrap(),
                    };
                    let n = 3 * DETECTION_SIDE * DETECTION_SIDE;
                    assert_eq!(&batch.images[k * n..(k + 1) * n], &sample.image[..], "{dataset:?} row {row}");
                    let want: Vec<f32> = sample.target.iter().flatten().map(|&v| v as f32).collect();
                    assert_eq!(&batch.targets[k * t * 5..(k + 1) * t * 5], &want[..]);
                    positives += usize::from(!boxes.is_empty());
                }
            }
            assert!(positives > 0, "{dataset:?}: the synthetic split has objects");
            // A malformed box list names the file and row.
            let broken = out.join("broken.csv");
            let mut writer = csv::Writer::from_path(&broken).unwrap();
            writer.write_record(csv::Reader::from_path(&split).unwrap().headers().unwrap()).unwrap();
            for (i, record) in records.iter().enumerate() {
                let mut cells: Vec<&str> = record.iter().collect();
                if i == 1 {
                    cells[3] = "[[1, 2, 3]]";
                }
                writer.write_record(&cells).unwrap();
            }
            writer.flush().unwrap();
            let err = DetectionDataset::open(&broken, &cache, dataset).unwrap_err().to_string();
            assert!(err.contains("broken.csv line 3") && err.contains("boxes"), "{dataset:?}: {err}");
            // A classification (resize-and-pad) cache is refused.
            let padded = dir.join(format!("{dataset:?}-pad.cache"));
            crate::data::cache::build(&split, &root, &padded, 256, OnBad::Fail).unwrap();
            let err = DetectionDataset::open(&split, &padded, dataset).unwrap_err().to_string();
            assert!(err.contains("stretched"), "{err}");
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
