//! The image cache: every image of a split decoded once, brought to a square as the reference
//! does — resized and padded to 256 × 256 by `resize_img` (classification, pretraining), or
//! stretched to 224 × 224 by OpenCV's bilinear `resize` (detection) — and packed into one file
//! of fixed-size records that worker threads read by offset; a loader that crops, normalises and
//! batches on worker threads and prefetches ahead of the training step.
//!
//! File layout: a 64-byte header (`MGCACACHE1`, record side, record count, geometry), then one
//! `side × side` u8 record per row of the split, in the split's order; beside it an index CSV
//! (`row, path, status, height, width`: which rows were skipped and why, and each decoded
//! image's size before resizing, which detection targets are normalised by). The file is
//! written under a temporary name and renamed when complete.
//!
//! Book: "Data: splits, images and masks" (the 256 px geometry the cache stores; crops at load
//! time). Reference: `mgca/datasets/utils.py`, `resize_img` and `get_imgs`, and
//! `mgca/datasets/detection_dataset.py`, `RSNADetectionDataset.__getitem__` and
//! `OBJCXRDetectionDataset.__getitem__` (`cv2.resize(x, (224, 224))`), at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none: the cached record is exactly `resize_img(256)` (or the 224 bilinear
//! resize) of the decoded image, so a crop of it equals the reference's crop of its in-memory
//! image.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rayon::prelude::*;

use super::DataError;
use super::augment::{MocoV2Config, MocoV2Draw};
use super::image::{crop, normalise, read_dicom, read_gray};
use super::prepare::OnBad;
use super::resize::{Gray, resize_and_pad, resize_linear};
use super::sampling::LegacyRng;

const MAGIC: &[u8; 10] = b"MGCACACHE1";
const HEADER: u64 = 64;

/// How a decoded image becomes a `side × side` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// `resize_img(side)`: aspect kept (area interpolation), zero-padded to a square.
    ResizePad,
    /// OpenCV `resize(img, (side, side))`, bilinear, aspect not kept (the detection datasets).
    Stretch,
}

impl Geometry {
    fn code(self) -> u8 {
        match self {
            Self::ResizePad => 0,
            Self::Stretch => 1,
        }
    }
}

/// Decode any supported image (DICOM by extension, else JPEG/PNG) and apply `resize_img(side)`.
/// Every failure names the file, including a panic inside a third-party decoder (caught here
/// so that one hostile image cannot take a whole cache build down unnamed).
pub fn load_resized(path: &Path, side: usize) -> Result<Gray, DataError> {
    load_record(path, side, Geometry::ResizePad).map(|(img, _)| img)
}

/// A record and its image's decoded size `(height, width)`.
pub type Record = (Gray, (usize, usize));

/// Decode an image and bring it to a `side × side` record by `geometry`; also the decoded
/// size `(height, width)`.
pub fn load_record(path: &Path, side: usize, geometry: Geometry) -> Result<Record, DataError> {
    let load = || -> Result<Record, DataError> {
        let is_dicom = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
        let img = if is_dicom { read_dicom(path)? } else { read_gray(path)? };
        let size = (img.height, img.width);
        let record = match geometry {
            Geometry::ResizePad => resize_and_pad(&img, side).map_err(|m| DataError::file(path, m))?,
            Geometry::Stretch => resize_linear(&img, side, side),
        };
        Ok((record, size))
    };
    std::panic::catch_unwind(load).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(DataError::file(path, format!("the image decoder failed: {what}")))
    })
}

/// Removes a temporary file when dropped, unless it was kept (renamed into place).
struct PartFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

/// What building a cache did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    /// Records written (all rows, skipped ones as zero images flagged in the index).
    pub rows: usize,
    /// `(row, path, reason)` of every row that could not be read.
    pub skipped: Vec<(usize, String, String)>,
}

/// Build a cache from a split CSV with a `path` column (relative to `root`), in row order,
/// with `resize_img(side)` records.
pub fn build(split_csv: &Path, root: &Path, out: &Path, side: usize, on_bad: OnBad) -> Result<CacheReport, DataError> {
    build_with(split_csv, root, out, side, Geometry::ResizePad, on_bad)
}

/// [`build`] with the records made by `geometry`.
pub fn build_with(
    split_csv: &Path,
    root: &Path,
    out: &Path,
    side: usize,
    geometry: Geometry,
    on_bad: OnBad,
) -> Result<CacheReport, DataError> {
    let mut reader = csv::Reader::from_path(split_csv).map_err(|e| DataError::file(split_csv, e.to_string()))?;
    let headers = reader.headers().map_err(|e| DataError::file(split_csv, e.to_string()))?.clone();
    let column =
        headers.iter().position(|h| h == "path").ok_or_else(|| DataError::file(split_csv, "no `path` column"))?;
    let mut paths = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DataError::row(split_csv, i + 2, e.to_string()))?;
        let path = record.get(column).unwrap_or("").trim();
        if path.is_empty() {
            return Err(DataError::row(split_csv, i + 2, "empty `path`"));
        }
        paths.push(path.to_string());
    }
    let tmp = out.with_extension("part");
    let file = File::create(&tmp).map_err(|e| DataError::file(&tmp, e.to_string()))?;
    // Whatever happens from here on, no `.part` file is left behind.
    let mut part = PartFile { path: tmp.clone(), keep: false };
    let mut writer = BufWriter::new(file);
    let mut header = [0u8; HEADER as usize];
    header[..10].copy_from_slice(MAGIC);
    header[16..24].copy_from_slice(&(side as u64).to_le_bytes());
    header[24..32].copy_from_slice(&(paths.len() as u64).to_le_bytes());
    header[32] = geometry.code();
    writer.write_all(&header).map_err(|e| DataError::file(&tmp, e.to_string()))?;
    let mut skipped = Vec::new();
    let mut sizes = vec![(0, 0); paths.len()];
    // Decode in parallel, a chunk at a time, and write in row order.
    for (chunk_index, chunk) in paths.chunks(256).enumerate() {
        let decoded: Vec<Result<Record, DataError>> =
            chunk.par_iter().map(|p| load_record(&root.join(p), side, geometry)).collect();
        for (k, result) in decoded.into_iter().enumerate() {
            let row = chunk_index * 256 + k;
            let record = match result {
                Ok((img, size)) => {
                    sizes[row] = size;
                    img.pixels
                }
                Err(e) if on_bad == OnBad::Skip => {
                    skipped.push((row, paths[row].clone(), e.message.clone()));
                    vec![0u8; side * side]
                }
                Err(e) => {
                    drop(writer);
                    return Err(DataError::row(
                        split_csv,
                        row + 2,
                        format!("{e} (use --on-bad skip to skip such rows)"),
                    ));
                }
            };
            writer.write_all(&record).map_err(|e| DataError::file(&tmp, e.to_string()))?;
        }
    }
    writer.flush().map_err(|e| DataError::file(&tmp, e.to_string()))?;
    drop(writer);
    let index = index_path(out);
    let mut w = csv::Writer::from_path(&index).map_err(|e| DataError::file(&index, e.to_string()))?;
    w.write_record(["row", "path", "status", "height", "width"]).map_err(|e| DataError::file(&index, e.to_string()))?;
    let mut next_skip = skipped.iter().peekable();
    for (row, path) in paths.iter().enumerate() {
        let status = match next_skip.peek() {
            Some((r, _, reason)) if *r == row => {
                next_skip.next();
                format!("skipped: {reason}")
            }
            _ => "ok".to_string(),
        };
        let (h, w_) = sizes[row];
        w.write_record([row.to_string(), path.clone(), status, h.to_string(), w_.to_string()])
            .map_err(|e| DataError::file(&index, e.to_string()))?;
    }
    w.flush().map_err(|e| DataError::file(&index, e.to_string()))?;
    std::fs::rename(&tmp, out).map_err(|e| DataError::file(out, e.to_string()))?;
    part.keep = true;
    Ok(CacheReport { rows: paths.len(), skipped })
}

fn index_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".index.csv");
    cache.with_file_name(name)
}

/// An opened cache.
#[derive(Debug)]
pub struct ImageCache {
    path: PathBuf,
    file: File,
    /// Record side (256).
    pub side: usize,
    /// Number of records.
    pub len: usize,
    /// Rows that were skipped when the cache was built (zero records; never served).
    pub skipped: Vec<usize>,
    /// How the records were made.
    pub geometry: Geometry,
    /// Each row's decoded image size `(height, width)` before resizing (`(0, 0)` for skipped
    /// rows).
    pub sizes: Vec<(usize, usize)>,
}

impl ImageCache {
    /// Open a cache and its index.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let mut file = File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
        let mut header = [0u8; HEADER as usize];
        file.read_exact(&mut header).map_err(|e| DataError::file(path, format!("no cache header: {e}")))?;
        if &header[..10] != MAGIC {
            return Err(DataError::file(path, "not an mgca image cache"));
        }
        let side = u64::from_le_bytes(header[16..24].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(header[24..32].try_into().unwrap()) as usize;
        let geometry = match header[32] {
            0 => Geometry::ResizePad,
            1 => Geometry::Stretch,
            other => return Err(DataError::file(path, format!("unknown record geometry {other}"))),
        };
        let expected = HEADER + (side * side * len) as u64;
        let actual = file.metadata().map_err(|e| DataError::file(path, e.to_string()))?.len();
        if actual != expected {
            return Err(DataError::file(path, format!("{actual} bytes, the header promises {expected} (truncated?)")));
        }
        let index = index_path(path);
        let mut reader = csv::Reader::from_path(&index).map_err(|e| DataError::file(&index, e.to_string()))?;
        let mut skipped = Vec::new();
        let mut sizes = Vec::with_capacity(len);
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DataError::row(&index, i + 2, e.to_string()))?;
            if record.get(2).is_some_and(|s| s != "ok") {
                skipped.push(i);
            }
            // Indexes written before the size columns existed (only ever `resize_img` caches,
            // which need no sizes) read as (0, 0).
            let number = |k: usize| -> Result<usize, DataError> {
                let text = record.get(k).unwrap_or("0");
                text.parse().map_err(|_| DataError::row(&index, i + 2, format!("image size `{text}` is not a number")))
            };
            sizes.push((number(3)?, number(4)?));
        }
        if sizes.len() != len {
            return Err(DataError::file(&index, format!("{} rows, the cache holds {len} images", sizes.len())));
        }
        Ok(Self { path: path.into(), file, side, len, skipped, geometry, sizes })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `row` (`resize_img(side)` of its image).
    pub fn get(&self, row: usize) -> Result<Gray, DataError> {
        let n = self.side * self.side;
        let mut buf = vec![0u8; n];
        read_at(&self.file, HEADER + (row * n) as u64, &mut buf)
            .map_err(|e| DataError::file(&self.path, e.to_string()))?;
        Ok(Gray::new(self.side, self.side, buf))
    }

    /// The rows that can be served, in order.
    pub fn usable_rows(&self) -> Vec<usize> {
        let skipped: std::collections::HashSet<usize> = self.skipped.iter().copied().collect();
        (0..self.len).filter(|r| !skipped.contains(r)).collect()
    }
}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// One batch of normalised crops. `[N, 3, crop, crop]` values, row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The cache rows in this batch.
    pub rows: Vec<usize>,
    /// `N · 3 · crop · crop` values in [−1, 1].
    pub pixels: Vec<f32>,
}

/// How the loader crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    /// Uniform top-left offset in `{0, …, side − crop}` per axis (training).
    Random,
    /// The centre (evaluation).
    Centre,
}

/// What the loader does to each cached image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// A `size` crop (the reference's "basic" transform), then normalise.
    Crop { mode: Crop, size: usize },
    /// The moco-v2 style transform of CheXpert linear probing ([`super::augment`]).
    MocoV2(MocoV2Config),
    /// The whole record, normalised (the detection transform: to-tensor and normalise).
    Whole,
}

/// Batches of `rows` (in the given order, e.g. a shuffled epoch), cropped and normalised on
/// rayon's threads, with up to `prefetch` batches prepared ahead on a background thread.
pub fn batches(
    cache: std::sync::Arc<ImageCache>,
    rows: Vec<usize>,
    batch: usize,
    crop_size: usize,
    mode: Crop,
    seed: u32,
    prefetch: usize,
) -> mpsc::Receiver<Result<Batch, DataError>> {
    transformed_batches(cache, rows, batch, Transform::Crop { mode, size: crop_size }, seed, 0, prefetch)
}

/// The generator of batch `index` of a loader seeded with `seed`: each batch has its own, so
/// a loader can start at any batch (a resumed run) and draw what it would have drawn.
pub fn batch_rng(seed: u32, index: usize) -> LegacyRng {
    LegacyRng::new(seed ^ (index as u32).wrapping_mul(0x9e37_79b9))
}

/// [`batches`] with any [`Transform`], numbering the batches from `first_batch` (see
/// [`batch_rng`]). The random draws are made in row order on the producer thread, so the
/// batches do not depend on how rayon schedules the work.
pub fn transformed_batches(
    cache: std::sync::Arc<ImageCache>,
    rows: Vec<usize>,
    batch: usize,
    transform: Transform,
    seed: u32,
    first_batch: usize,
    prefetch: usize,
) -> mpsc::Receiver<Result<Batch, DataError>> {
    let (tx, rx) = mpsc::sync_channel(prefetch.max(1));
    std::thread::spawn(move || {
        for (index, chunk) in rows.chunks(batch).enumerate() {
            let mut rng = batch_rng(seed, first_batch + index);
            let items: Result<Vec<Vec<f32>>, DataError> = match transform {
                Transform::Crop { mode, size } => {
                    let span = (cache.side - size) as u64;
                    let offsets: Vec<(usize, usize)> = chunk
                        .iter()
                        .map(|_| match mode {
                            Crop::Random => (rng.interval(span) as usize, rng.interval(span) as usize),
                            Crop::Centre => ((span / 2) as usize, (span / 2) as usize),
                        })
                        .collect();
                    chunk
                        .par_iter()
                        .zip(&offsets)
                        .map(|(&row, &(top, left))| cache.get(row).map(|img| normalise(&crop(&img, top, left, size))))
                        .collect()
                }
                Transform::Whole => chunk.par_iter().map(|&row| cache.get(row).map(|img| normalise(&img))).collect(),
                Transform::MocoV2(config) => {
                    let draws: Vec<MocoV2Draw> = chunk.iter().map(|_| config.draw(&mut rng, cache.side)).collect();
                    chunk
                        .par_iter()
                        .zip(&draws)
                        .map(|(&row, draw)| cache.get(row).map(|img| draw.apply(&img, config.crop)))
                        .collect()
                }
            };
            let message = items.map(|items| Batch { rows: chunk.to_vec(), pixels: items.concat() });
            if tx.send(message).is_err() {
                return; // the consumer stopped
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth;
    use std::sync::Arc;

    #[test]
    fn cache_round_trip_skips_and_loader() {
        let dir = std::env::temp_dir().join(format!("mgca-cache-{}", std::process::id()));
        synth::chexpert(&dir.join("chexpert"), synth::Scale::Tiny, 3).unwrap();
        // A split CSV with a missing image in it.
        let text = std::fs::read_to_string(dir.join("chexpert/train.csv")).unwrap();
        let mut split = String::from("path\n");
        for line in text.lines().skip(1).take(20) {
            split.push_str(line.split(',').next().unwrap().split_once('/').unwrap().1);
            split.push('\n');
        }
        split.push_str("train/missing.jpg\n");
        std::fs::write(dir.join("split.csv"), &split).unwrap();
        let out = dir.join("train.cache");
        let err = build(&dir.join("split.csv"), &dir.join("chexpert"), &out, 256, OnBad::Fail).unwrap_err();
        assert!(err.to_string().contains("split.csv line 22") && err.to_string().contains("missing.jpg"), "{err}");
        assert!(!out.exists(), "no half-written cache");
        let report = build(&dir.join("split.csv"), &dir.join("chexpert"), &out, 256, OnBad::Skip).unwrap();
        assert_eq!((report.rows, report.skipped.len()), (21, 1));
        let cache = Arc::new(ImageCache::open(&out).unwrap());
        assert_eq!((cache.len, cache.side, cache.skipped.clone()), (21, 256, vec![20]));
        // A record is exactly resize_img(256) of the decoded JPEG.
        let first = split.lines().nth(1).unwrap();
        let direct = load_resized(&dir.join("chexpert").join(first), 256).unwrap();
        assert_eq!(cache.get(0).unwrap(), direct);
        // The loader: every usable row once, crops inside, normalised values.
        let rows = cache.usable_rows();
        let got: Vec<Batch> =
            batches(cache.clone(), rows.clone(), 8, 224, Crop::Random, 1, 2).into_iter().map(Result::unwrap).collect();
        assert_eq!(got.iter().map(|b| b.rows.len()).collect::<Vec<_>>(), vec![8, 8, 4]);
        assert_eq!(got.iter().flat_map(|b| b.rows.clone()).collect::<Vec<_>>(), rows);
        assert!(got[0].pixels.iter().all(|v| (-1.0..=1.0).contains(v)) && got[0].pixels.len() == 8 * 3 * 224 * 224);
        let centre: Vec<Batch> =
            batches(cache.clone(), vec![0], 1, 224, Crop::Centre, 0, 1).into_iter().map(Result::unwrap).collect();
        assert_eq!(centre[0].pixels, normalise(&crop(&direct, 16, 16, 224)));
        // Images that cannot be resized to the crop (the 600 × 2 PNG and 4 × 25600
        // DICOM): named and skipped under --on-bad skip; a clean error otherwise, no `.part`.
        let root = dir.join("chexpert");
        image::GrayImage::from_pixel(600, 2, image::Luma([90])).save(root.join("wide.png")).unwrap();
        let tall = Gray::new(25_600, 4, vec![90; 25_600 * 4]);
        crate::data::image::write_dicom(&root.join("tall.dcm"), &tall, "1.2.3.4", false, false).unwrap();
        std::fs::write(dir.join("odd.csv"), format!("path\n{first}\nwide.png\ntall.dcm\n")).unwrap();
        let odd = dir.join("odd.cache");
        let report = build(&dir.join("odd.csv"), &root, &odd, 256, OnBad::Skip).unwrap();
        assert_eq!(report.skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(report.skipped[0].1 == "wide.png" && report.skipped[0].2.contains("600 x 2"), "{report:?}");
        assert!(report.skipped[1].1 == "tall.dcm" && report.skipped[1].2.contains("4 x 25600"), "{report:?}");
        std::fs::remove_file(&odd).ok();
        let err = build(&dir.join("odd.csv"), &root, &odd, 256, OnBad::Fail).unwrap_err().to_string();
        assert!(
            err.contains("odd.csv line 3") && err.contains("wide.png") && err.contains("cannot be resized"),
            "{err}"
        );
        assert!(!odd.exists() && !odd.with_extension("part").exists(), "no cache, no .part");
        // A truncated cache is refused.
        let bytes = std::fs::read(&out).unwrap();
        std::fs::write(&out, &bytes[..bytes.len() - 10]).unwrap();
        assert!(ImageCache::open(&out).unwrap_err().to_string().contains("truncated"));
        std::fs::remove_dir_all(dir).ok();
    }
}
