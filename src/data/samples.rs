//! Downstream samples as the reference's detection and segmentation datasets build them
//! (evaluation path: no random augmentation).
//!
//! Detection (RSNA, Object-CXR): the full-resolution image resized to 224 × 224 with OpenCV's
//! bilinear interpolation (aspect not preserved), normalised with mean = std = 0.5; the target
//! rows of [`super::targets`], normalised by the original size. Segmentation (RSNA, SIIM): the
//! same image path and the mask drawn at full resolution, area-resized to 224.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/detection_dataset.py`
//! (`RSNADetectionDataset`, `OBJCXRDetectionDataset`), `segmentation_dataset.py` (`SIIMImageDataset`,
//! `RSNASegmentDataset`, `get_transforms`) and `transforms.py`, `DetectionDataTransforms`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! Training segmentation samples first apply, with probability 0.5, the transform's
//! shift-scale-rotate (no shift, scale in [0.9, 1.1], rotation in [−10°, 10°], zero border;
//! image bilinear, mask nearest), each target rotated about its own centre.
//!
//! **Deviation:** the random draws come from this crate's generator, not albumentations', so a
//! training sample's augmentation differs from the reference's run by chance (its geometry
//! and distribution are the same); the rotation centre is the pixel grid's centre.

use std::path::Path;

use super::DataError;
use super::image::{normalise, read_dicom, read_gray};
use super::resize::{Gray, resize_linear};
use super::sampling::LegacyRng;
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
    image_side(img, 224)
}

/// The model's input: `img` resized to `side × side` (bilinear) and normalised.
fn image_side(img: &Gray, side: usize) -> Vec<f32> {
    normalise(&resize_linear(img, side, side))
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
    rsna_segmentation_drawn(path, boxes, 224, None)
}

/// [`rsna_segmentation`] at `side` px (the reference's is 224), and with `rng` the training
/// transform drawn from it (one decode).
pub fn rsna_segmentation_drawn(
    path: &Path,
    boxes: &[[f64; 4]],
    side: usize,
    rng: Option<&mut LegacyRng>,
) -> Result<SegmentationSample, DataError> {
    let img = full_resolution(path)?;
    let mask = targets::rsna_mask(boxes, img.height, img.width, side).map_err(|m| DataError::file(path, m))?;
    Ok(transformed(&img, mask, side, rng))
}

/// SIIM segmentation: the union of the run-length rows of the DICOM at `path`.
pub fn siim_segmentation(path: &Path, rows: &[&str]) -> Result<SegmentationSample, DataError> {
    siim_segmentation_drawn(path, rows, 224, None)
}

/// [`siim_segmentation`] at `side` px (the reference's is 224), and with `rng` the training
/// transform drawn from it (one decode).
pub fn siim_segmentation_drawn(
    path: &Path,
    rows: &[&str],
    side: usize,
    rng: Option<&mut LegacyRng>,
) -> Result<SegmentationSample, DataError> {
    let img = full_resolution(path)?;
    let mask = targets::siim_mask(rows, img.height, img.width, side).map_err(|e| DataError::file(path, e.0))?;
    Ok(transformed(&img, mask, side, rng))
}

/// One draw of the segmentation transform's shift-scale-rotate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShiftScaleRotate {
    /// Degrees, counter-clockwise (OpenCV's convention).
    pub angle: f64,
    pub scale: f64,
}

impl ShiftScaleRotate {
    /// With probability 0.5 a transform (scale ∈ [0.9, 1.1], angle ∈ [−10°, 10°]), else none.
    pub fn draw(rng: &mut LegacyRng) -> Option<Self> {
        let mut uniform = || rng.next_u32() as f64 / 4_294_967_296.0;
        if uniform() >= 0.5 {
            return None;
        }
        Some(Self { scale: 0.9 + 0.2 * uniform(), angle: -10.0 + 20.0 * uniform() })
    }

    /// The inverse map (destination pixel → source position) of OpenCV's
    /// `getRotationMatrix2D(centre, angle, scale)` for an `h × w` image.
    fn inverse(&self, h: usize, w: usize) -> impl Fn(f64, f64) -> (f64, f64) {
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let t = self.angle.to_radians();
        let (a, b) = (self.scale * t.cos(), self.scale * t.sin());
        let det = a * a + b * b;
        // Forward: x' = a(x − cx) + b(y − cy) + cx, y' = −b(x − cx) + a(y − cy) + cy.
        move |x, y| {
            let (dx, dy) = (x - cx, y - cy);
            ((a * dx - b * dy) / det + cx, (b * dx + a * dy) / det + cy)
        }
    }

    /// Warp a grey image (bilinear, zero outside).
    pub fn warp_gray(&self, img: &Gray) -> Gray {
        let inv = self.inverse(img.height, img.width);
        let mut out = vec![0u8; img.height * img.width];
        for y in 0..img.height {
            for x in 0..img.width {
                let (sx, sy) = inv(x as f64, y as f64);
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let at = |xx: f64, yy: f64| -> f64 {
                    if xx < 0.0 || yy < 0.0 || xx >= img.width as f64 || yy >= img.height as f64 {
                        0.0
                    } else {
                        img.pixels[yy as usize * img.width + xx as usize] as f64
                    }
                };
                let v = (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1.0, y0))
                    + fy * ((1.0 - fx) * at(x0, y0 + 1.0) + fx * at(x0 + 1.0, y0 + 1.0));
                out[y * img.width + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
        Gray::new(img.height, img.width, out)
    }

    /// Warp a mask (nearest, zero outside).
    pub fn warp_mask(&self, mask: &[f32], h: usize, w: usize) -> Vec<f32> {
        let inv = self.inverse(h, w);
        let mut out = vec![0f32; h * w];
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = inv(x as f64, y as f64);
                let (xx, yy) = (sx.round(), sy.round());
                if xx >= 0.0 && yy >= 0.0 && xx < w as f64 && yy < h as f64 {
                    out[y * w + x] = mask[yy as usize * w + xx as usize];
                }
            }
        }
        out
    }
}

/// The sample of a decoded image and its `side` px mask: with `rng`, both shift-scale-rotated
/// when the draw says so (the image at full resolution, the mask at `side`, each about its own
/// centre).
fn transformed(img: &Gray, mask: Vec<f32>, side: usize, rng: Option<&mut LegacyRng>) -> SegmentationSample {
    match rng.and_then(ShiftScaleRotate::draw) {
        Some(t) => {
            SegmentationSample { image: image_side(&t.warp_gray(img), side), mask: t.warp_mask(&mask, side, side) }
        }
        None => SegmentationSample { image: image_side(img, side), mask },
    }
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

    #[test]
    fn shift_scale_rotate_geometry() {
        let img = Gray::new(9, 9, (0..81).map(|v| v as u8).collect());
        let identity = ShiftScaleRotate { angle: 0.0, scale: 1.0 };
        assert_eq!(identity.warp_gray(&img), img);
        // 90° counter-clockwise about the centre: the top-right corner goes to the top-left.
        let quarter = ShiftScaleRotate { angle: 90.0, scale: 1.0 };
        let r = quarter.warp_gray(&img);
        assert_eq!(r.pixels[0], img.pixels[8]);
        let mut mask = vec![0f32; 81];
        mask[4 * 9 + 8] = 1.0; // middle of the right edge
        assert_eq!(quarter.warp_mask(&mask, 9, 9)[4], 1.0); // → middle of the top edge
        // Draws: about half transform, within the ranges.
        let mut rng = LegacyRng::new(1);
        let draws: Vec<_> = (0..400).map(|_| ShiftScaleRotate::draw(&mut rng)).collect();
        let n = draws.iter().flatten().count();
        assert!((160..240).contains(&n), "{n}");
        assert!(draws.iter().flatten().all(|t| (0.9..=1.1).contains(&t.scale) && t.angle.abs() <= 10.0));
    }
}
