//! The detector's inference output: decoding the three YOLOv3 heads into boxes, the confidence
//! filter and greedy non-maximum suppression.
//!
//! Decode, per scale `s` with grid `G`, stride `r` and grid-unit anchors `(a_w, a_h)`:
//! `b_x = (σ(t_x) + col)·r`, `b_y = (σ(t_y) + row)·r`, `b_w = e^{t_w}·a_w·r`, `b_h = e^{t_h}·a_h·r`,
//! objectness `σ(t_o)`, class score `σ(t_c)`; scales 0, 1, 2 concatenated, within a scale in
//! the order anchor, row, column. Per image: corners, keep `σ(t_o) ≥ 0.5`, sort by objectness
//! (descending), keep the top box and drop the rest whose "+1" IoU with it is ≥ 0.5; repeat.
//!
//! Book: "Detection" (inference and NMS). Reference: `mgca/utils/yolo_loss.py`,
//! `YOLOLoss.forward` without targets and `non_max_suppression`, and
//! `mgca/models/ssl_detector.py`, `SSLDetector.shared_step` (thresholds 0.5 and 0.5), at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Ties in objectness (which `torch.sort` orders arbitrarily) keep their
//! decode order here.

use crate::loss::yolo::{ANCHORS_PER_SCALE, ATTRIBUTES, GRIDS, anchors_grid, iou_plus_one, stride};

/// One detection: corners in pixels of the 224 px frame, objectness, class score, class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub objectness: f32,
    pub class_score: f32,
    pub class: usize,
}

/// The decoded candidates of one image, before filtering: `(cx, cy, w, h, objectness, class)`.
pub type Candidate = [f32; 6];

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

// ANCHOR: decode
/// Decode image `b` of the three head outputs (`[B, 18, G, G]` each) into its 3087 candidates.
pub fn decode(heads: [&[f32]; 3], b: usize) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(3087);
    for (s, raw) in heads.iter().enumerate() {
        let (g, r, anchors) = (GRIDS[s], stride(s), anchors_grid(s));
        let plane = g * g;
        for (k, anchor) in anchors.iter().enumerate() {
            let base = (b * ANCHORS_PER_SCALE + k) * ATTRIBUTES * plane;
            let at = |attr: usize, pos: usize| raw[base + attr * plane + pos];
            for row in 0..g {
                for col in 0..g {
                    let pos = row * g + col;
                    // As the reference: grid units in f32, then times the stride.
                    let x = (sigmoid(at(0, pos)) + col as f32) * r;
                    let y = (sigmoid(at(1, pos)) + row as f32) * r;
                    let w = (at(2, pos).exp() * anchor[0]) * r;
                    let h = (at(3, pos).exp() * anchor[1]) * r;
                    out.push([x, y, w, h, sigmoid(at(4, pos)), sigmoid(at(5, pos))]);
                }
            }
        }
    }
    out
}
// ANCHOR_END: decode

// ANCHOR: nms
/// The confidence filter and greedy NMS of one image's candidates; `None` when no candidate
/// passes the filter (the reference's "no detection list").
pub fn non_max_suppression(
    candidates: &[Candidate],
    conf_threshold: f32,
    nms_threshold: f32,
) -> Option<Vec<Detection>> {
    let mut kept: Vec<Detection> = candidates
        .iter()
        .filter(|c| c[4] >= conf_threshold)
        .map(|c| Detection {
            x1: c[0] - c[2] / 2.0,
            y1: c[1] - c[3] / 2.0,
            x2: c[0] + c[2] / 2.0,
            y2: c[1] + c[3] / 2.0,
            objectness: c[4],
            class_score: c[5],
            class: 0,
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    kept.sort_by(|a, b| b.objectness.total_cmp(&a.objectness)); // stable: ties keep decode order
    let mut out = Vec::new();
    while let Some((first, rest)) = kept.split_first() {
        let top = *first;
        out.push(top);
        let corners = |d: &Detection| [d.x1, d.y1, d.x2, d.y2];
        kept = rest.iter().copied().filter(|d| iou_plus_one(corners(&top), corners(d)) < nms_threshold).collect();
    }
    Some(out)
}
// ANCHOR_END: nms

#[cfg(test)]
mod tests {
    use super::*;

    /// A head output with every logit at `fill`, `[1, 18, G, G]` for each scale.
    fn heads(fill: f32) -> [Vec<f32>; 3] {
        GRIDS.map(|g| vec![fill; 18 * g * g])
    }

    #[test]
    fn decoding_places_boxes_on_the_grid() {
        let h = heads(0.0);
        let c = decode([&h[0], &h[1], &h[2]], 0);
        assert_eq!(c.len(), 3 * (49 + 196 + 784));
        // Scale 0, anchor 0, row 0, col 0: centre (0.5·32, 0.5·32), size = anchor in pixels.
        assert!((c[0][0] - 16.0).abs() < 1e-5 && (c[0][1] - 16.0).abs() < 1e-5);
        assert!((c[0][2] - 62.461_54).abs() < 1e-3 && (c[0][3] - 48.461_54).abs() < 1e-3);
        // Row 1, col 2 of the same anchor.
        assert!((c[9][0] - 2.5 * 32.0).abs() < 1e-4 && (c[9][1] - 1.5 * 32.0).abs() < 1e-4);
        assert_eq!(c[0][4], 0.5);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let cands = vec![
            [50.0, 50.0, 20.0, 20.0, 0.6, 0.9],
            [51.0, 50.0, 20.0, 20.0, 0.9, 0.8], // overlaps the first, higher objectness
            [150.0, 150.0, 10.0, 10.0, 0.7, 0.5], // apart
            [10.0, 10.0, 10.0, 10.0, 0.49, 0.5], // below the threshold
        ];
        let kept = non_max_suppression(&cands, 0.5, 0.5).unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].objectness, 0.9);
        assert_eq!(kept[1].objectness, 0.7);
        assert_eq!((kept[0].x1, kept[0].y2), (41.0, 60.0));
        assert!(non_max_suppression(&cands[3..], 0.5, 0.5).is_none());
    }
}
