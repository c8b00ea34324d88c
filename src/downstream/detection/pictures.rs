//! Pictures of a detector's test output: the 224 px X-ray the model saw, enlarged ×2, with the
//! ground-truth boxes in green and the detections after NMS in red (line width growing with
//! objectness, at most [`MAX_DRAWN`] per image), written as PNG.
//!
//! Book: "Detection" (the smoke report's pictures). The reference draws nothing; this is the
//! reproduction's own.
//!
//! **Deviation:** none (no reference counterpart).

use std::path::Path;

use image::{Rgb, RgbImage};

use super::DetectionOutputs;
use super::eval::to_pixels;
use crate::data::detection::DetectionDataset;
use crate::data::resize::Gray;

/// Enlargement of the 224 px image.
pub const SCALE: u32 = 2;
/// Detections drawn per image (the most confident).
pub const MAX_DRAWN: usize = 10;
/// Ground truth.
pub const TRUTH: Rgb<u8> = Rgb([40, 220, 60]);
/// Detections.
pub const PREDICTED: Rgb<u8> = Rgb([235, 40, 40]);

/// The rectangle `[x1, y1, x2, y2]` (224 px frame) drawn `width` pixels wide, clipped to the
/// picture.
pub fn draw_box(picture: &mut RgbImage, corners: [f32; 4], width: u32, colour: Rgb<u8>) {
    let (w, h) = (picture.width() as i64, picture.height() as i64);
    let s = SCALE as f32;
    let [x1, y1, x2, y2] = corners.map(|v| (v * s).round() as i64);
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            picture.put_pixel(x as u32, y as u32, colour);
        }
    };
    for k in 0..width as i64 {
        for x in x1..=x2 {
            put(x, y1 + k);
            put(x, y2 - k);
        }
        for y in y1..=y2 {
            put(x1 + k, y);
            put(x2 - k, y);
        }
    }
}

/// The picture of one image: grey enlarged ×[`SCALE`], truth and detections drawn.
pub fn picture(image: &Gray, outputs: &DetectionOutputs, row: usize) -> RgbImage {
    let mut picture = RgbImage::from_fn(image.width as u32 * SCALE, image.height as u32 * SCALE, |x, y| {
        let v = image.pixels[(y / SCALE) as usize * image.width + (x / SCALE) as usize];
        Rgb([v, v, v])
    });
    for b in &outputs.truth[row] {
        draw_box(&mut picture, to_pixels(b), 2, TRUTH);
    }
    let mut detections = outputs.detections[row].clone().unwrap_or_default();
    detections.sort_by(|a, b| b.objectness.total_cmp(&a.objectness));
    for d in detections.iter().take(MAX_DRAWN) {
        let width = 1 + (d.objectness * 2.0) as u32;
        draw_box(&mut picture, [d.x1, d.y1, d.x2, d.y2], width, PREDICTED);
    }
    picture
}

/// Pictures of up to `count` test images with ground truth (then any) into `run/pictures/`;
/// their paths relative to `run`.
pub fn write_pictures(
    run: &Path,
    test: &DetectionDataset,
    outputs: &DetectionOutputs,
    count: usize,
) -> Result<Vec<String>, String> {
    let rows = test.usable_rows();
    if rows.len() != outputs.truth.len() {
        return Err(format!("{} test images but {} evaluated", rows.len(), outputs.truth.len()));
    }
    let mut order: Vec<usize> = (0..rows.len()).filter(|&k| !outputs.truth[k].is_empty()).collect();
    order.extend((0..rows.len()).filter(|&k| outputs.truth[k].is_empty()));
    let dir = run.join("pictures");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for &k in order.iter().take(count) {
        let image = test.image(rows[k]).map_err(|e| e.to_string())?;
        let name = format!("pictures/test-{:04}.png", rows[k]);
        let path = run.join(&name);
        picture(&image, outputs, k).save(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(name);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::yolo::TargetBox;
    use crate::model::yolo::Detection;

    #[test]
    fn boxes_land_where_they_belong() {
        let image = Gray::new(224, 224, vec![100; 224 * 224]);
        let truth = TargetBox { class: 0, cx: 0.5, cy: 0.5, w: 0.25, h: 0.25 }; // 84..140 px
        let d = Detection { x1: 10.0, y1: 20.0, x2: 60.0, y2: 90.0, objectness: 0.9, class_score: 0.8, class: 0 };
        let outputs = DetectionOutputs { detections: vec![Some(vec![d])], truth: vec![vec![truth]] };
        let p = picture(&image, &outputs, 0);
        assert_eq!(p.dimensions(), (448, 448));
        assert_eq!(*p.get_pixel(168, 200), TRUTH, "the truth's left edge at x = 84·2");
        assert_eq!(*p.get_pixel(20, 100), PREDICTED, "the detection's left edge at x = 10·2");
        assert_eq!(*p.get_pixel(224, 224), Rgb([100, 100, 100]), "inside the boxes: the X-ray");
        // A box reaching past the picture is clipped, not a panic.
        let mut q = p.clone();
        draw_box(&mut q, [-50.0, -50.0, 500.0, 500.0], 3, PREDICTED);
    }
}
