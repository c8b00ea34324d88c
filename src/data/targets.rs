//! Detection and segmentation targets as the reference's datasets build them.
//!
//! Detection: boxes become rows `[class = 0, cx, cy, w, h]` with the centre and size divided by
//! the original image's width and height, padded with zero rows to a fixed count (RSNA 10,
//! Object-CXR 20). Segmentation: a binary mask at the image's resolution (RSNA: the boxes,
//! coordinates truncated; SIIM: the union of the run-length rows), shrunk to 224 with area
//! interpolation, fractional edges kept.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/detection_dataset.py`
//! (`RSNADetectionDataset.__getitem__`, `OBJCXRDetectionDataset.__getitem__`) and
//! `segmentation_dataset.py` (`RSNASegmentDataset.__getitem__`, `SIIMImageDataset.rle2mask`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the reference normalises the boxes in place inside its stored array (harmless
//! with worker processes, shrinking boxes on every access without); here every target is a
//! fresh value. More boxes than rows is an error, not a silent truncation; so is a box that is
//! empty or not inside its image (the reference would normalise it to a target outside [0, 1]
//! or clip it silently), and a mask for an image smaller than the mask size.

use super::resize::resize_area_f32;
use super::rle::{self, RleError};

/// Every corner box `[x1, y1, x2, y2]` finite, non-empty and inside the `width × height` image.
pub fn check_corner_boxes(boxes: &[[f64; 4]], width: f64, height: f64) -> Result<(), String> {
    for (k, &[x1, y1, x2, y2]) in boxes.iter().enumerate() {
        let inside = [x1, y1, x2, y2].iter().all(|v| v.is_finite())
            && 0.0 <= x1
            && x1 < x2
            && x2 <= width
            && 0.0 <= y1
            && y1 < y2
            && y2 <= height;
        if !inside {
            return Err(format!(
                "box {k} [x1 {x1:?}, y1 {y1:?}, x2 {x2:?}, y2 {y2:?}] is empty or not inside the {width} x {height} image"
            ));
        }
    }
    Ok(())
}

/// RSNA: boxes `[x1, y1, x2, y2]` of an image `width × height` into 10 rows
/// `[0, cx/W, cy/H, w/W, h/H]`, zero-padded.
pub fn rsna_detection(boxes: &[[f64; 4]], width: f64, height: f64) -> Result<Vec<[f64; 5]>, String> {
    check_corner_boxes(boxes, width, height)?;
    let rows: Vec<[f64; 5]> = boxes
        .iter()
        .map(|&[x1, y1, x2, y2]| {
            [0.0, (x1 + x2) / 2.0 / width, (y1 + y2) / 2.0 / height, (x2 - x1) / width, (y2 - y1) / height]
        })
        .collect();
    pad(rows, 10)
}

/// Object-CXR: boxes `[x, y, w, h]` into 20 rows `[0, (x + w/2)/W, (y + h/2)/H, w/W, h/H]`,
/// zero-padded. A box must be finite and non-empty, but may reach past the image: a polygon's
/// box is centred on its pole of inaccessibility and can, and the reference keeps it as it is.
pub fn object_cxr_detection(boxes: &[[f64; 4]], width: f64, height: f64) -> Result<Vec<[f64; 5]>, String> {
    for (k, &[x, y, w, h]) in boxes.iter().enumerate() {
        if ![x, y, w, h].iter().all(|v| v.is_finite()) || w <= 0.0 || h <= 0.0 {
            return Err(format!("box {k} [x {x:?}, y {y:?}, w {w:?}, h {h:?}] is empty or not finite"));
        }
    }
    if !(width > 0.0 && height > 0.0) {
        return Err(format!("the image is {width} x {height}"));
    }
    let rows: Vec<[f64; 5]> = boxes
        .iter()
        .map(|&[x, y, w, h]| [0.0, (x + w / 2.0) / width, (y + h / 2.0) / height, w / width, h / height])
        .collect();
    pad(rows, 20)
}

fn pad(mut rows: Vec<[f64; 5]>, n: usize) -> Result<Vec<[f64; 5]>, String> {
    if rows.len() > n {
        return Err(format!("{} boxes; the reference's targets hold {n}", rows.len()));
    }
    rows.resize(n, [0.0; 5]);
    Ok(rows)
}

/// RSNA: the box mask at `height × width` (boxes with `y2 > 0`, coordinates truncated, rows
/// `y1..y2`, columns `x1..x2`), shrunk to `size × size`.
pub fn rsna_mask(boxes: &[[f64; 4]], height: usize, width: usize, size: usize) -> Result<Vec<f32>, String> {
    // All-zero rows are the padding of a detection target, which the reference's mask skips.
    let real: Vec<[f64; 4]> = boxes.iter().copied().filter(|b| *b != [0.0; 4]).collect();
    check_corner_boxes(&real, width as f64, height as f64)?;
    check_mask_size(height, width, size)?;
    let mut mask = vec![0f32; height * width];
    for &[x1, y1, x2, y2] in boxes.iter().filter(|b| b[3] > 0.0) {
        let clip = |v: f64, hi: usize| (v.trunc().max(0.0) as usize).min(hi);
        for y in clip(y1, height)..clip(y2, height) {
            for x in clip(x1, width)..clip(x2, width) {
                mask[y * width + x] = 1.0;
            }
        }
    }
    Ok(resize_area_f32(&mask, height, width, size, size))
}

/// Masks are only shrunk (as the reference's images always are): an image smaller than the
/// mask is an error, not a panic.
fn check_mask_size(height: usize, width: usize, size: usize) -> Result<(), String> {
    if height < size || width < size || size == 0 {
        return Err(format!("a {width} x {height} image is smaller than the {size} x {size} mask"));
    }
    Ok(())
}

/// SIIM: the union of an image's run-length rows at `height × width`, shrunk to `size × size`
/// (all zeros for a negative).
pub fn siim_mask(rows: &[&str], height: usize, width: usize, size: usize) -> Result<Vec<f32>, RleError> {
    check_mask_size(height, width, size).map_err(RleError)?;
    let mut mask = vec![0u8; height * width];
    for value in rows {
        rle::decode_into(value, width, height, &mut mask)?;
    }
    let values: Vec<f32> = mask.iter().map(|&v| v as f32).collect();
    Ok(resize_area_f32(&values, height, width, size, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_rows_are_normalised_centres_padded() {
        let t = rsna_detection(&[[264.0, 152.0, 477.0, 531.0]], 1024.0, 1024.0).unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!(t[0], [0.0, 370.5 / 1024.0, 341.5 / 1024.0, 213.0 / 1024.0, 379.0 / 1024.0]);
        assert!(t[1..].iter().all(|r| *r == [0.0; 5]));
        let o = object_cxr_detection(&[[10.0, 20.0, 40.0, 60.0]], 200.0, 100.0).unwrap();
        assert_eq!((o.len(), o[0]), (20, [0.0, 30.0 / 200.0, 50.0 / 100.0, 0.2, 0.6]));
        assert!(object_cxr_detection(&[[0.0, 0.0, 1.0, 1.0]; 21], 1.0, 1.0).unwrap_err().contains("21 boxes"));
    }

    /// A box at x = 1e300, negative, NaN, empty or reaching past the image is an error naming
    /// the box; so is a mask larger than its image (before: a panic in the resize).
    #[test]
    fn bad_boxes_and_small_images_are_errors() {
        for b in [
            [1e300, 0.0, 1e300 + 5.0, 4.0],
            [-1.0, 0.0, 5.0, 4.0],
            [f64::NAN, 0.0, 5.0, 4.0],
            [5.0, 0.0, 5.0, 4.0],
            [0.0, 0.0, 1025.0, 4.0],
        ] {
            let err = rsna_detection(&[[1.0, 1.0, 2.0, 2.0], b], 1024.0, 1024.0).unwrap_err();
            assert!(err.contains("box 1") && err.contains("1024 x 1024"), "{err}");
            assert!(rsna_mask(&[b], 1024, 1024, 224).unwrap_err().contains("box 0"));
        }
        // Object-CXR keeps a box that reaches past the image (polygon boxes do), not an empty one.
        assert!(object_cxr_detection(&[[100.0, 0.0, 150.0, 10.0]], 200.0, 100.0).is_ok());
        assert!(object_cxr_detection(&[[100.0, 0.0, 0.0, 10.0]], 200.0, 100.0).unwrap_err().contains("box 0"));
        assert!(object_cxr_detection(&[[f64::NAN, 0.0, 1.0, 10.0]], 200.0, 100.0).unwrap_err().contains("box 0"));
        assert!(rsna_mask(&[[1.0, 1.0, 2.0, 2.0]], 100, 300, 224).unwrap_err().contains("smaller than"));
        assert!(siim_mask(&["1 2"], 100, 300, 224).unwrap_err().0.contains("smaller than"));
        assert!(siim_mask(&["1 20000"], 4, 4, 2).unwrap_err().0.contains("past the image"));
    }

    #[test]
    fn masks_from_boxes_and_run_lengths() {
        // A 4 × 4 box mask kept at full size: rows 1..3, columns 0..2 (truncated coordinates).
        let m = rsna_mask(&[[0.9, 1.5, 2.7, 3.2], [0.0; 4]], 4, 4, 4).unwrap();
        let want = [0., 0., 0., 0., 1., 1., 0., 0., 1., 1., 0., 0., 0., 0., 0., 0.];
        assert_eq!(m, want);
        // SIIM's 4 × 4 example, OR-ed with a second row, shrunk 4 → 2 (block means).
        let m = siim_mask(&["1 2 3 1", "15 1"], 4, 4, 2).unwrap();
        assert_eq!(m, vec![0.25, 0.0, 0.5, 0.25]);
        assert_eq!(siim_mask(&[" -1"], 4, 4, 2).unwrap(), vec![0.0; 4]);
    }
}
