//! Which images the detection metric sees, faithful and standard.
//!
//! The reference's `SSLDetector.shared_step` converts the ground truth from normalised
//! `(cx, cy, w, h)` to pixel corners in the 224 px frame, keeps the boxes with `x2 > 0`, and
//! passes an image to the metric **only if it has at least one detection after NMS and at
//! least one ground-truth box**. Images with objects but no detection (missed findings) and
//! images with detections but no object (false alarms) are skipped, which inflates mAP. The
//! standard evaluation passes every image.
//!
//! Book: "Detection" (the metric and its quirk). Reference: `mgca/models/ssl_detector.py`,
//! `SSLDetector.shared_step`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** faithful mode reproduces the inclusion rule; [`Inclusion::Standard`] is the
//! usual evaluation, reported beside it.

use serde::{Deserialize, Serialize};

use crate::loss::yolo::{IMAGE_SIZE, TargetBox};
use crate::metrics::map::MapImage;
use crate::model::yolo::Detection;

/// Which images reach the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Inclusion {
    /// The reference's rule: only images with a detection and a ground-truth box.
    Faithful,
    /// Every image.
    Standard,
}

/// A ground-truth box in pixel corners of the 224 px frame (the reference's conversion).
pub fn to_pixels(b: &TargetBox) -> [f32; 4] {
    let s = IMAGE_SIZE as f32;
    [(b.cx - b.w / 2.0) * s, (b.cy - b.h / 2.0) * s, (b.cx + b.w / 2.0) * s, (b.cy + b.h / 2.0) * s]
}

// ANCHOR: inclusion
/// The metric's images from each image's detections (`None`: nothing passed the confidence
/// filter) and ground truth, under `rule`. Scores are the objectness, as the reference's.
pub fn metric_images(
    detections: &[Option<Vec<Detection>>],
    truth: &[Vec<TargetBox>],
    rule: Inclusion,
) -> Vec<MapImage> {
    assert_eq!(detections.len(), truth.len(), "one detection list per image");
    detections
        .iter()
        .zip(truth)
        .filter_map(|(dets, boxes)| {
            let ground_truth: Vec<[f32; 4]> = boxes.iter().map(to_pixels).filter(|b| b[2] > 0.0).collect();
            let predictions: Vec<([f32; 4], f32)> =
                dets.iter().flatten().map(|d| ([d.x1, d.y1, d.x2, d.y2], d.objectness)).collect();
            let included = match rule {
                Inclusion::Faithful => dets.is_some() && !ground_truth.is_empty(),
                Inclusion::Standard => true,
            };
            included.then_some(MapImage { predictions, ground_truth })
        })
        .collect()
}
// ANCHOR_END: inclusion

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::map::{DETECTION_IOU_THRESHOLDS, mean_average_precision};

    fn det(x1: f32, y1: f32, x2: f32, y2: f32, objectness: f32) -> Detection {
        Detection { x1, y1, x2, y2, objectness, class_score: 0.9, class: 0 }
    }

    /// The worked example of the book: one image found perfectly, one image whose object was
    /// missed, one image with a false alarm. Faithful mode sees only the first (mAP 1); the
    /// standard evaluation sees all three (recall 1/2, and the false alarm ranks first: 0.25).
    #[test]
    fn faithful_and_standard_differ_on_the_worked_example() {
        let found = TargetBox { class: 0, cx: 0.5, cy: 0.5, w: 0.2, h: 0.2 };
        let missed = TargetBox { class: 0, cx: 0.3, cy: 0.3, w: 0.1, h: 0.1 };
        let truth = vec![vec![found], vec![missed], vec![]];
        let [x1, y1, x2, y2] = to_pixels(&found);
        let detections = vec![Some(vec![det(x1, y1, x2, y2, 0.8)]), None, Some(vec![det(10.0, 10.0, 40.0, 40.0, 0.9)])];
        let faithful = metric_images(&detections, &truth, Inclusion::Faithful);
        let standard = metric_images(&detections, &truth, Inclusion::Standard);
        assert_eq!((faithful.len(), standard.len()), (1, 3));
        let f = mean_average_precision(&faithful, &DETECTION_IOU_THRESHOLDS).map;
        let s = mean_average_precision(&standard, &DETECTION_IOU_THRESHOLDS).map;
        assert_eq!(f, 1.0);
        // Ranked: false alarm (0.9, FP), the found box (0.8, TP): recall 0.5 at precision 0.5;
        // the 51 recall points 0..=0.5 read 0.5, the rest 0: 0.5·51/101.
        assert!((s - 0.5 * 51.0 / 101.0).abs() < 1e-6, "{s}");
    }

    #[test]
    fn ground_truth_converts_to_pixel_corners() {
        let b = TargetBox { class: 0, cx: 0.5, cy: 0.25, w: 0.5, h: 0.1 };
        let p = to_pixels(&b);
        let want = [56.0, 44.8, 168.0, 67.2];
        assert!(p.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{p:?}");
    }
}
