//! Image–report pairs for pretraining: a prepared MIMIC-CXR split (`prepare mimic`, with its
//! `caption` column) and its image cache, served as collated batches — images cropped and
//! normalised on worker threads, captions tokenised, the batch sorted by caption length with
//! the images in the same order.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/pretrain_dataset.py`,
//! `MultimodalPretrainingDataset` and `multimodal_collate_fn`, and `data_module.py`, `DataModule`
//! (`drop_last` for train and valid), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none in what a batch holds. Rows whose image could not be read when the
//! cache was built are skipped and counted ([`PairDataset::skipped`]), where the reference would
//! stop with an exception.

use std::path::Path;
use std::sync::Arc;

use super::DataError;
use super::cache::{Crop, ImageCache, Transform, transformed_batches};
use super::collate::{TextBatch, collate_text};
use crate::text::tokenizer::ReportTokenizer;

/// A split's captions and its cached images.
#[derive(Debug)]
pub struct PairDataset {
    cache: Arc<ImageCache>,
    captions: Vec<String>,
}

/// One collated batch.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Images in collated order, `[N, 3, 224, 224]` values.
    pub images: Vec<f32>,
    /// Captions in collated order (ids, mask, lengths, word grouping).
    pub text: TextBatch,
    /// The split rows, in collated order.
    pub rows: Vec<usize>,
}

impl PairDataset {
    /// Open a prepared split (`caption` column) and the cache built from it.
    pub fn open(split_csv: &Path, cache: &Path) -> Result<Self, DataError> {
        let mut reader = csv::Reader::from_path(split_csv).map_err(|e| DataError::file(split_csv, e.to_string()))?;
        let headers = reader.headers().map_err(|e| DataError::file(split_csv, e.to_string()))?.clone();
        let column = headers
            .iter()
            .position(|h| h == "caption")
            .ok_or_else(|| DataError::file(split_csv, "no `caption` column (a `prepare mimic` split is needed)"))?;
        let mut captions = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
            let caption = record.get(column).unwrap_or("").to_string();
            if caption.trim().is_empty() {
                return Err(DataError::row(split_csv, i + 2, "empty caption"));
            }
            captions.push(caption);
        }
        let cache = ImageCache::open(cache)?;
        if cache.len != captions.len() {
            return Err(DataError::file(
                split_csv,
                format!(
                    "{} rows but the cache holds {} images: rebuild the cache from this file",
                    captions.len(),
                    cache.len
                ),
            ));
        }
        Ok(Self { cache: Arc::new(cache), captions })
    }

    /// Rows that can be served.
    pub fn usable_rows(&self) -> Vec<usize> {
        self.cache.usable_rows()
    }

    /// Rows skipped because their image could not be read.
    pub fn skipped(&self) -> usize {
        self.cache.skipped.len()
    }

    /// The side of the cached images.
    pub fn side(&self) -> usize {
        self.cache.side
    }

    /// The captions, in split order.
    pub fn captions(&self) -> &[String] {
        &self.captions
    }

    /// Collated batches of `order` (e.g. a shuffled epoch of [`PairDataset::usable_rows`]),
    /// `batch` at a time, the last partial batch dropped as the reference's loaders do; images
    /// prepared `prefetch` batches ahead.
    pub fn batches<'a>(
        &'a self,
        tokenizer: &'a ReportTokenizer,
        order: Vec<usize>,
        batch: usize,
        crop: Crop,
        seed: u32,
        prefetch: usize,
    ) -> impl Iterator<Item = Result<PairBatch, DataError>> + 'a {
        self.batches_from(tokenizer, order, batch, crop, 224, seed, 0, prefetch)
    }

    /// [`PairDataset::batches`] with a `crop_size` crop, starting at batch `first_batch` of
    /// `order` (a resumed epoch) with the crops that batch would have had.
    #[allow(clippy::too_many_arguments)]
    pub fn batches_from<'a>(
        &'a self,
        tokenizer: &'a ReportTokenizer,
        order: Vec<usize>,
        batch: usize,
        crop: Crop,
        crop_size: usize,
        seed: u32,
        first_batch: usize,
        prefetch: usize,
    ) -> impl Iterator<Item = Result<PairBatch, DataError>> + 'a {
        let full = order.len() / batch * batch;
        let start = (first_batch * batch).min(full);
        let transform = Transform::Crop { mode: crop, size: crop_size };
        let images = transformed_batches(
            self.cache.clone(),
            order[start..full].to_vec(),
            batch,
            transform,
            seed,
            first_batch,
            prefetch,
        );
        images.into_iter().map(move |item| {
            let item = item?;
            let captions: Vec<String> = item.rows.iter().map(|&r| self.captions[r].clone()).collect();
            let text = collate_text(tokenizer, &captions)
                .map_err(|e| DataError::file(&e.path, format!("tokenising a caption: {}", e.message)))?;
            let per_image = 3 * crop_size * crop_size;
            let mut images = Vec::with_capacity(item.pixels.len());
            for &k in &text.order {
                images.extend_from_slice(&item.pixels[k * per_image..(k + 1) * per_image]);
            }
            let rows = text.order.iter().map(|&k| item.rows[k]).collect();
            Ok(PairBatch { images, text, rows })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;
    use crate::data::prepare::{Dataset, OnBad, PrepareOptions, Task, prepare};
    use crate::data::{cache, synth};

    /// Synthetic MIMIC-CXR through `prepare`, the cache and the pair loader: full batches only,
    /// captions longest first, each image still next to its own caption.
    #[test]
    fn synthetic_pairs_batch_and_collate() {
        let dir = std::env::temp_dir().join(format!("mgca-pairs-{}", std::process::id()));
        synth::mimic(&dir.join("mimic"), synth::Scale::Tiny, 5).unwrap();
        let options = PrepareOptions::new(Dataset::Mimic, Task::Pretraining, dir.join("mimic"));
        // PhysioNet ships the CSVs gzipped: read them that way.
        for name in ["mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-split.csv"] {
            let path = dir.join("mimic").join(name);
            let bytes = std::fs::read(&path).unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &bytes).unwrap();
            std::fs::write(path.with_extension("csv.gz"), gz.finish().unwrap()).unwrap();
            std::fs::remove_file(path).unwrap();
        }
        let prepared = prepare(&options).unwrap();
        assert!(prepared.manifest.sources.contains_key("mimic-cxr-2.0.0-metadata.csv.gz"));
        prepared.write(&dir.join("out")).unwrap();
        let split = dir.join("out/train.csv");
        cache::build(&split, &dir.join("mimic"), &dir.join("train.cache"), 256, OnBad::Fail).unwrap();
        let data = PairDataset::open(&split, &dir.join("train.cache")).unwrap();
        let tokenizer = ReportTokenizer::from_tokenizer_json(
            &assets::minilm_dir().unwrap_or_else(|e| panic!("{e}")).join("tokenizer.json"),
            Some(112),
        )
        .unwrap();
        let rows = data.usable_rows();
        let got: Vec<PairBatch> =
            data.batches(&tokenizer, rows.clone(), 8, Crop::Centre, 0, 2).map(Result::unwrap).collect();
        assert_eq!(got.len(), rows.len() / 8, "the partial batch is dropped");
        for b in &got {
            assert_eq!(b.images.len(), 8 * 3 * 224 * 224);
            assert!(b.text.lengths.windows(2).all(|w| w[0] >= w[1]));
            // The first collated image is the cached image of the first collated row.
            let direct = cache::ImageCache::open(&dir.join("train.cache")).unwrap().get(b.rows[0]).unwrap();
            let want = crate::data::image::normalise(&crate::data::image::centre_crop(&direct, 224));
            assert_eq!(&b.images[..3 * 224 * 224], &want[..]);
        }
        assert_eq!(data.skipped(), 0);
        std::fs::remove_dir_all(dir).ok();
    }
}
