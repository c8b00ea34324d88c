//! Downstream samples as the reference's detection and segmentation datasets build them
//! (evaluation path: no random augmentation).
//!
//! Detection (RSNA, Object-CXR): the full-resolution image resized to 224 × 224 with OpenCV's
//! bilinear interpolation (aspect not preserved), normalised with mean = std = 0.5; the target
//! rows of [`super::targets`], normalised by the original size. Segmentation (RSNA, SIIM): the
//! same image path and the mask drawn at full resolution, area-resized to 224.
//!
//! Spec: `data.md` §4.4, §4.5, §6.3, §7.4, §1.4 (detection and segmentation transforms).
//!
//! **Deviation:** the training-time shift-scale-rotate of the segmentation transform is not
//! implemented yet (evaluation samples only).

use std::path::Path;

use super::DataError;
use super::image::{normalise, read_dicom, read_gray};
use super::resize::{Gray, resize_linear};
use super::targets;

/// An image `[3, 224, 224]` and its detection target rows.
#[derive(Debug, Clone)]
pub struct DetectionSample {
    pub image: Vec<f32>,
    pub target: Vec<[f64; 5]>,
}

/// An image `[3, 224, 224]` and its mask `[224, 224]` (fractional at the edges).
#[derive(Debug, Clone)]
pub struct SegmentationSample {
    pub image: Vec<f32>,
    pub mask: Vec<f32>,
}

fn full_resolution(path: &Path) -> Result<Gray, DataError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm")) { read_dicom(path) } else { read_gray(path) }
}

fn image_224(img: &Gray) -> Vec<f32> {
    normalise(&resize_linear(img, 224, 224))
}

/// RSNA detection: boxes `[x1, y1, x2, y2]` of the DICOM at `path`.
pub fn rsna_detection(path: &Path, boxes: &[[f64; 4]]) -> Result<DetectionSample, DataError> {
    let img = full_resolution(path)?;
    let target =
        targets::rsna_detection(boxes, img.width as f64, img.height as f64).map_err(|m| DataError::file(path, m))?;
    Ok(DetectionSample { image: image_224(&img), target })
}

/// Object-CXR detection: boxes `[x, y, w, h]` of the JPEG at `path`.
pub fn object_cxr_detection(path: &Path, boxes: &[[f64; 4]]) -> Result<DetectionSample, DataError> {
    let img = full_resolution(path)?;
    let target = targets::object_cxr_detection(boxes, img.width as f64, img.height as f64)
        .map_err(|m| DataError::file(path, m))?;
    Ok(DetectionSample { image: image_224(&img), target })
}

/// RSNA segmentation: the box mask of the DICOM at `path`.
pub fn rsna_segmentation(path: &Path, boxes: &[[f64; 4]]) -> Result<SegmentationSample, DataError> {
    let img = full_resolution(path)?;
    let mask = targets::rsna_mask(boxes, img.height, img.width, 224);
    Ok(SegmentationSample { image: image_224(&img), mask })
}

/// SIIM segmentation: the union of the run-length rows of the DICOM at `path`.
pub fn siim_segmentation(path: &Path, rows: &[&str]) -> Result<SegmentationSample, DataError> {
    let img = full_resolution(path)?;
    let mask = targets::siim_mask(rows, img.height, img.width, 224).map_err(|e| DataError::file(path, e.0))?;
    Ok(SegmentationSample { image: image_224(&img), mask })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{rsna, siim, synth};

    /// On synthetic data: the target rows point at the drawn finding, and the mask covers the
    /// darkened pneumothorax band.
    #[test]
    fn samples_from_synthetic_data() {
        let dir = std::env::temp_dir().join(format!("mgca-samples-{}", std::process::id()));
        synth::rsna(&dir.join("rsna"), synth::Scale::Tiny, 2).unwrap();
        synth::siim(&dir.join("siim"), synth::Scale::Tiny, 3).unwrap();
        let patients = rsna::read_labels(&dir.join("rsna/stage_2_train_labels.csv")).unwrap();
        let p = patients.iter().find(|p| p.target() == 1).unwrap();
        let s = rsna_detection(&dir.join("rsna").join(p.path()), &p.boxes).unwrap();
        assert_eq!((s.image.len(), s.target.len()), (3 * 224 * 224, 10));
        // The box centre in 224 px coordinates is brighter than the image's mean.
        let (cx, cy) = ((s.target[0][1] * 224.0) as usize, (s.target[0][2] * 224.0) as usize);
        let mean = s.image[..224 * 224].iter().sum::<f32>() / (224.0 * 224.0);
        assert!(s.image[cy * 224 + cx] > mean + 0.3, "{} vs {mean}", s.image[cy * 224 + cx]);
        let seg = rsna_segmentation(&dir.join("rsna").join(p.path()), &p.boxes).unwrap();
        assert!(seg.mask[cy * 224 + cx] > 0.99);

        let rows = siim::read_rle(&dir.join("siim/train-rle.csv")).unwrap();
        let positive = rows.iter().find(|r| r.label() == 1).unwrap();
        let paths = siim::image_paths(&dir.join("siim")).unwrap();
        let regions: Vec<&str> =
            rows.iter().filter(|r| r.image_id == positive.image_id).map(|r| r.encoded.as_str()).collect();
        let s = siim_segmentation(&dir.join("siim").join(&paths[&positive.image_id]), &regions).unwrap();
        let (inside, n) =
            s.mask.iter().zip(&s.image).filter(|(m, _)| **m == 1.0).fold((0.0, 0.0), |(a, n), (_, v)| (a + v, n + 1.0));
        assert!(n > 50.0 && inside / n < -0.5, "the masked band is dark: {}", inside / n);
        std::fs::remove_dir_all(dir).ok();
    }
}
