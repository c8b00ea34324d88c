//! The segmentation datasets: a prepared SIIM or RSNA split as the reference's
//! `SIIMImageDataset` and `RSNASegmentDataset` serve it — one item per image, the image read at
//! full resolution and resized to 224 × 224 (bilinear), the mask drawn at full resolution and
//! area-resized to 224 (fractional edges kept; the smoke tier's small encoders use a smaller
//! side), and for training, with probability 0.5, the
//! shift-scale-rotate of [`super::samples`].
//!
//! SIIM items are the split's distinct `ImageId`s in order of first appearance, each mask the
//! union of that image's run-length rows in the split (an image with several regions has several
//! rows, which is how the reference's row-level split leaks images across splits). RSNA items
//! are the split's patients, each mask its boxes.
//!
//! Images are decoded for every batch, as the reference's loader does (the training transform
//! warps the full-resolution image, so a cache of resized images cannot serve it exactly).
//!
//! Book: "Segmentation" (the data). Reference: `mgca/datasets/segmentation_dataset.py`,
//! `SIIMImageDataset` and `RSNASegmentDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** a row is negative when its stripped value is `-1` (the reference compares
//! without stripping the real file's leading space, so it cannot run on the real CSV; this is
//! its intended behaviour). Augmentation draws come from this crate's generators.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use rayon::prelude::*;

use super::DataError;
use super::cache::batch_rng;
use super::prepare::Dataset;
use super::samples::{SegmentationSample, rsna_segmentation_drawn, siim_segmentation_drawn};
use super::sampling::LegacyRng;

/// The side of images and masks (the reference's; [`SegmentationDataset::with_side`] changes it).
pub const SEGMENTATION_SIDE: usize = 224;

/// Where an item's mask comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskSource {
    /// RSNA: the patient's boxes `[x1, y1, x2, y2]` (none for a negative).
    Boxes(Vec<[f64; 4]>),
    /// SIIM: the image's run-length rows in this split (`-1` for a negative).
    Rle(Vec<String>),
}

/// One image of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationItem {
    /// Relative to the dataset's root.
    pub path: String,
    pub mask: MaskSource,
    /// The split file's line of the item's first row.
    pub line: usize,
}

/// A prepared segmentation split.
#[derive(Debug)]
pub struct SegmentationDataset {
    root: PathBuf,
    split: PathBuf,
    items: Arc<Vec<SegmentationItem>>,
    side: usize,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct SegmentationBatch {
    /// `[N, 3, S, S]` values (S = the dataset's side, 224 unless changed).
    pub images: Vec<f32>,
    /// `[N, S, S]` masks in [0, 1].
    pub masks: Vec<f32>,
    /// The items.
    pub rows: Vec<usize>,
}

impl SegmentationDataset {
    /// Read a prepared split of `dataset` (SIIM: `path, ImageId, EncodedPixels`; RSNA: `path,
    /// bbox`), images under `root`.
    pub fn open(split_csv: &Path, root: &Path, dataset: Dataset) -> Result<Self, DataError> {
        let mut reader = csv::Reader::from_path(split_csv).map_err(|e| DataError::file(split_csv, e.to_string()))?;
        let headers = reader.headers().map_err(|e| DataError::file(split_csv, e.to_string()))?.clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| DataError::file(split_csv, format!("no `{name}` column")))
        };
        let path_at = column("path")?;
        let mut items: Vec<SegmentationItem> = Vec::new();
        match dataset {
            Dataset::Rsna => {
                let boxes_at = column("bbox")?;
                for (i, record) in reader.records().enumerate() {
                    let r = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
                    let text = r.get(boxes_at).unwrap_or("").trim();
                    let boxes: Vec<[f64; 4]> = if text.is_empty() {
                        Vec::new()
                    } else {
                        serde_json::from_str(text).map_err(|e| {
                            DataError::row(
                                split_csv,
                                i + 2,
                                format!("boxes `{text}` are not a list of 4-number lists: {e}"),
                            )
                        })?
                    };
                    let path = r.get(path_at).unwrap_or("").to_string();
                    items.push(SegmentationItem { path, mask: MaskSource::Boxes(boxes), line: i + 2 });
                }
            }
            Dataset::Siim => {
                let (id_at, rle_at) = (column("ImageId")?, column("EncodedPixels")?);
                let mut index: HashMap<String, usize> = HashMap::new();
                for (i, record) in reader.records().enumerate() {
                    let r = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
                    let id = r.get(id_at).unwrap_or("").trim().to_string();
                    let value = r.get(rle_at).unwrap_or("").trim().to_string();
                    if id.is_empty() || value.is_empty() {
                        return Err(DataError::row(split_csv, i + 2, "empty `ImageId` or `EncodedPixels`"));
                    }
                    match index.get(&id) {
                        Some(&k) => {
                            if let MaskSource::Rle(rows) = &mut items[k].mask {
                                rows.push(value);
                            }
                        }
                        None => {
                            index.insert(id, items.len());
                            let path = r.get(path_at).unwrap_or("").to_string();
                            items.push(SegmentationItem { path, mask: MaskSource::Rle(vec![value]), line: i + 2 });
                        }
                    }
                }
            }
            other => {
                return Err(DataError::file(
                    split_csv,
                    format!("{other:?} has no segmentation task (SIIM and RSNA have)"),
                ));
            }
        }
        if let Some(item) = items.iter().find(|it| it.path.trim().is_empty()) {
            return Err(DataError::row(split_csv, item.line, "empty `path`"));
        }
        Ok(Self { root: root.into(), split: split_csv.into(), items: Arc::new(items), side: SEGMENTATION_SIDE })
    }

    /// Serve images and masks at `side × side` instead of the reference's 224 (the smoke tier's
    /// small encoders; the ViT's own input size).
    pub fn with_side(mut self, side: usize) -> Self {
        self.side = side;
        self
    }

    /// The side of images and masks.
    pub fn side(&self) -> usize {
        self.side
    }

    /// Number of items (images).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the split has no image.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items.
    pub fn items(&self) -> &[SegmentationItem] {
        &self.items
    }

    /// Item `row`: the evaluation sample, or the training one drawn with `rng`.
    pub fn sample(&self, row: usize, rng: Option<&mut LegacyRng>) -> Result<SegmentationSample, DataError> {
        load(&self.root, &self.split, &self.items[row], self.side, rng)
    }

    // ANCHOR: batches
    /// Batches of `order`, `batch` at a time (the last partial one dropped when `drop_last`),
    /// prepared `prefetch` ahead on worker threads; training batches augmented with draws from
    /// `seed` (one generator per batch, one seed per item drawn in order, so the batches do not
    /// depend on thread scheduling).
    pub fn batches(
        &self,
        order: Vec<usize>,
        batch: usize,
        train: bool,
        drop_last: bool,
        seed: u32,
        prefetch: usize,
    ) -> impl Iterator<Item = Result<SegmentationBatch, DataError>> + use<> {
        let keep = if drop_last { order.len() / batch * batch } else { order.len() };
        let (tx, rx) = mpsc::sync_channel(prefetch.max(1));
        let (root, split, items, side) = (self.root.clone(), self.split.clone(), self.items.clone(), self.side);
        std::thread::spawn(move || {
            for (index, chunk) in order[..keep].chunks(batch).enumerate() {
                let mut rng = batch_rng(seed, index);
                let seeds: Vec<u32> = chunk.iter().map(|_| rng.next_u32()).collect();
                let samples: Result<Vec<SegmentationSample>, DataError> = chunk
                    .par_iter()
                    .zip(&seeds)
                    .map(|(&row, &s)| {
                        let mut item_rng = LegacyRng::new(s);
                        load(&root, &split, &items[row], side, train.then_some(&mut item_rng))
                    })
                    .collect();
                let message = samples.map(|samples| SegmentationBatch {
                    images: samples.iter().flat_map(|s| s.image.iter().copied()).collect(),
                    masks: samples.iter().flat_map(|s| s.mask.iter().copied()).collect(),
                    rows: chunk.to_vec(),
                });
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        rx.into_iter()
    }
    // ANCHOR_END: batches
}

/// Decode an item and draw its mask; with `rng`, the training augmentation.
fn load(
    root: &Path,
    split: &Path,
    item: &SegmentationItem,
    side: usize,
    rng: Option<&mut LegacyRng>,
) -> Result<SegmentationSample, DataError> {
    let path = root.join(&item.path);
    match &item.mask {
        MaskSource::Boxes(boxes) => rsna_segmentation_drawn(&path, boxes, side, rng),
        MaskSource::Rle(rows) => {
            let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
            siim_segmentation_drawn(&path, &rows, side, rng)
        }
    }
    .map_err(|e| DataError::row(split, item.line, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::prepare::{PrepareOptions, Task, prepare};
    use crate::data::synth;

    /// Both datasets, generated and prepared: every evaluation batch equals the per-image
    /// samples; SIIM items are distinct images whose masks join their rows; training batches
    /// are reproducible from the seed and differ from the evaluation ones where a transform
    /// was drawn; a malformed row names the file and line.
    #[test]
    fn synthetic_segmentation_splits() {
        let dir = std::env::temp_dir().join(format!("mgca-segmentation-data-{}", std::process::id()));
        for dataset in [Dataset::Siim, Dataset::Rsna] {
            let root = dir.join(format!("{dataset:?}"));
            match dataset {
                Dataset::Siim => synth::siim(&root, synth::Scale::Tiny, 6).unwrap(),
                _ => synth::rsna(&root, synth::Scale::Tiny, 6).unwrap(),
            }
            let out = dir.join(format!("{dataset:?}-prepared"));
            prepare(&PrepareOptions::new(dataset, Task::Segmentation, root.clone())).unwrap().write(&out).unwrap();
            let split = out.join("train.csv");
            let data = SegmentationDataset::open(&split, &root, dataset).unwrap();
            let rows = std::fs::read_to_string(&split).unwrap().lines().count() - 1;
            assert!(!data.is_empty() && data.len() <= rows);
            if dataset == Dataset::Siim {
                let mut paths: Vec<&str> = data.items().iter().map(|i| i.path.as_str()).collect();
                paths.sort();
                paths.dedup();
                assert_eq!(paths.len(), data.len(), "one item per image");
            }
            let order: Vec<usize> = (0..data.len().min(6)).collect();
            let eval: Vec<SegmentationBatch> =
                data.batches(order.clone(), 4, false, false, 0, 2).map(Result::unwrap).collect();
            assert_eq!(eval.iter().map(|b| b.rows.len()).sum::<usize>(), order.len());
            let n = SEGMENTATION_SIDE * SEGMENTATION_SIDE;
            let mut foreground = 0.0;
            for b in &eval {
                for (k, &row) in b.rows.iter().enumerate() {
                    let s = data.sample(row, None).unwrap();
                    assert_eq!(&b.images[k * 3 * n..(k + 1) * 3 * n], &s.image[..]);
                    assert_eq!(&b.masks[k * n..(k + 1) * n], &s.mask[..]);
                    foreground += s.mask.iter().sum::<f32>();
                }
            }
            assert!(foreground > 0.0, "{dataset:?}: some foreground");
            // At a smaller side, the same items at that size, the foreground at about the same
            // share of the picture.
            let small = SegmentationDataset::open(&split, &root, dataset).unwrap().with_side(64);
            let b: Vec<SegmentationBatch> =
                small.batches(order.clone(), 4, false, false, 0, 2).map(Result::unwrap).collect();
            assert_eq!(b[0].images.len(), b[0].rows.len() * 3 * 64 * 64);
            let share = |m: &[f32], n: usize| m.iter().sum::<f32>() / n as f32;
            let small_masks: Vec<f32> = b.iter().flat_map(|b| b.masks.clone()).collect();
            let full_share = foreground / (order.len() * n) as f32;
            let small_share = share(&small_masks, order.len() * 64 * 64);
            assert!((small_share - full_share).abs() < 0.2 * full_share, "{small_share} vs {full_share}");
            let train = |seed| -> Vec<f32> {
                data.batches(order.clone(), 4, true, false, seed, 2).flat_map(|b| b.unwrap().images).collect()
            };
            assert_eq!(train(3), train(3), "reproducible from the seed");
            let flat_eval: Vec<f32> = eval.iter().flat_map(|b| b.images.clone()).collect();
            assert_ne!(train(3), flat_eval, "some training image was transformed");
        }
        // A malformed box list names the file and line.
        let out = dir.join("Rsna-prepared");
        let broken = out.join("broken.csv");
        std::fs::write(&broken, "path,bbox\na.dcm,\nb.dcm,\"[[1, 2]]\"\n").unwrap();
        let err = SegmentationDataset::open(&broken, &dir, Dataset::Rsna).unwrap_err().to_string();
        assert!(err.contains("broken.csv line 3") && err.contains("boxes"), "{err}");
        let err = SegmentationDataset::open(&broken, &dir, Dataset::Chexpert).unwrap_err().to_string();
        assert!(err.contains("no segmentation task"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
