//! COCO-style mean average precision for one class, as torchmetrics 0.8's
//! `MeanAveragePrecision` computes it (area "all", up to 100 detections per image):
//! per IoU threshold `t`, each image's detections in descending score order are matched
//! greedily to the unmatched ground truth of highest IoU, a match needing IoU > t; the
//! detections of all images, ranked by score, give precision and recall; precision is made
//! monotone and read at the 101 recall points 0, 0.01, …, 1 (0 beyond the last recall reached);
//! `map` is the mean over thresholds and recall points.
//!
//! Book: "Detection" (the metric and its quirk). Reference: torchmetrics 0.8
//! `detection/mean_ap.py`, `MeanAveragePrecision`, as `mgca/models/ssl_detector.py`,
//! `SSLDetector` uses it with thresholds 0.40:0.05:0.75, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none here. The reference's evaluation loop passes only the images that have
//! both a detection and a ground-truth box; that inclusion rule belongs to the loop, not to the
//! metric, which takes whatever images it is given.

/// The reference's IoU thresholds, 0.40 to 0.75 in steps of 0.05.
pub const DETECTION_IOU_THRESHOLDS: [f32; 8] = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75];
/// Detections per image that count.
pub const MAX_DETECTIONS: usize = 100;
/// Recall points.
pub const RECALL_POINTS: usize = 101;

/// One image: predicted boxes `(x1, y1, x2, y2)` in pixels with scores, and ground-truth boxes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapImage {
    pub predictions: Vec<([f32; 4], f32)>,
    pub ground_truth: Vec<[f32; 4]>,
}

/// The metric: the mean over thresholds, and each threshold's mean over recall points; −1 where
/// undefined (no ground truth at all), as torchmetrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MapResult {
    pub map: f32,
    pub per_threshold: Vec<f32>,
}

/// torchvision's `box_iou` (no "+1"), in f32.
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// torchmetrics' area range "all", `(0², 1e5²)`: boxes whose signed area falls outside it (an
/// inverted box has negative area) are ignored — a ground-truth box is not counted and cannot be
/// matched; an unmatched detection is neither a true nor a false positive.
const AREA_ALL: (f32, f32) = (0.0, 1e10);

fn outside_area(b: [f32; 4]) -> bool {
    let area = (b[2] - b[0]) * (b[3] - b[1]);
    area < AREA_ALL.0 || area > AREA_ALL.1
}

/// `torch.linspace(0, 1, 101)` in f32, computed as PyTorch's CPU kernel does: from the start
/// for the first half, from the end for the second, each a fused multiply-add (a plain
/// multiply and subtract differs in 8 of the 101 points, which moves recall thresholds such as
/// 0.53 by an ulp — enough to change AP when recall lands on the grid).
pub fn recall_points() -> [f32; RECALL_POINTS] {
    let steps = RECALL_POINTS;
    let step = (1.0f32 - 0.0) / (steps - 1) as f32;
    let halfway = steps / 2;
    std::array::from_fn(|i| {
        if i < halfway { step.mul_add(i as f32, 0.0) } else { (-step).mul_add((steps - i - 1) as f32, 1.0) }
    })
}

/// Indices of `scores` in descending order (ties keep their order).
fn by_score(scores: impl Iterator<Item = f32>) -> Vec<usize> {
    let scores: Vec<f32> = scores.collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

// ANCHOR: map
/// Mean average precision over `images` at `thresholds`.
pub fn mean_average_precision(images: &[MapImage], thresholds: &[f32]) -> MapResult {
    let points = recall_points();
    let npig: usize = images.iter().map(|im| im.ground_truth.iter().filter(|g| !outside_area(**g)).count()).sum();
    let mut per_threshold = Vec::with_capacity(thresholds.len());
    // Each image's detections, best first, at most MAX_DETECTIONS.
    let ranked: Vec<Vec<usize>> = images
        .iter()
        .map(|im| by_score(im.predictions.iter().map(|p| p.1)).into_iter().take(MAX_DETECTIONS).collect())
        .collect();
    // All detections in image order (each image's ranked list), then ranked by score.
    let pooled: Vec<(usize, usize)> =
        ranked.iter().enumerate().flat_map(|(i, r)| r.iter().enumerate().map(move |(k, _)| (i, k))).collect();
    let order = by_score(pooled.iter().map(|&(i, k)| images[i].predictions[ranked[i][k]].1));
    for &t in thresholds {
        if npig == 0 {
            per_threshold.push(-1.0);
            continue;
        }
        // Each ranked detection of each image: matched to a ground-truth box at this threshold
        // (Some(true)), a false positive (Some(false)), or ignored (None).
        let matched: Vec<Vec<Option<bool>>> = images
            .iter()
            .zip(&ranked)
            .map(|(im, r)| {
                let mut taken: Vec<bool> = im.ground_truth.iter().map(|g| outside_area(*g)).collect();
                r.iter()
                    .map(|&d| {
                        let boxes = im.predictions[d].0;
                        // argmax of IoU over the free boxes (taken ones count as 0), first on ties.
                        let mut best = (0usize, f32::NEG_INFINITY);
                        for (g, gt) in im.ground_truth.iter().enumerate() {
                            let iou = if taken[g] { 0.0 } else { box_iou(boxes, *gt) };
                            if iou > best.1 {
                                best = (g, iou);
                            }
                        }
                        let hit = !im.ground_truth.is_empty() && best.1 > t;
                        if hit {
                            taken[best.0] = true;
                        }
                        if !hit && outside_area(boxes) { None } else { Some(hit) }
                    })
                    .collect()
            })
            .collect();
        let (mut tp, mut fp) = (0f32, 0f32);
        let mut recall = Vec::with_capacity(order.len());
        let mut precision = Vec::with_capacity(order.len());
        for &p in &order {
            let (i, k) = pooled[p];
            match matched[i][k] {
                Some(true) => tp += 1.0,
                Some(false) => fp += 1.0,
                None => {}
            }
            recall.push(tp / npig as f32);
            precision.push(tp / (fp + tp + f64::EPSILON as f32));
        }
        for j in (0..precision.len().saturating_sub(1)).rev() {
            precision[j] = precision[j].max(precision[j + 1]);
        }
        // searchsorted(recall, point, left); points past the last recall reached read 0.
        let mut sum = 0f64;
        for point in points {
            let at = recall.partition_point(|r| *r < point);
            if at < recall.len() {
                sum += precision[at] as f64;
            } else {
                break;
            }
        }
        per_threshold.push((sum / RECALL_POINTS as f64) as f32);
    }
    let defined: Vec<f32> = per_threshold.iter().copied().filter(|v| *v > -1.0).collect();
    let map = if defined.is_empty() {
        -1.0
    } else {
        (defined.iter().map(|v| *v as f64).sum::<f64>() / defined.len() as f64) as f32
    };
    MapResult { map, per_threshold }
}
// ANCHOR_END: map

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_points_are_torch_linspace() {
        let p = recall_points();
        assert_eq!((p[0], p[50], p[100]), (0.0, 0.5, 1.0));
        assert!(p.windows(2).all(|w| w[1] > w[0]));
        // The bits of torch.linspace(0, 1, 101)[53] and [57] (PyTorch 2.15, CPU).
        assert_eq!(p[53].to_bits(), 0x3f07_ae15);
        assert_eq!(p[57].to_bits(), 0x3f11_eb85);
    }

    /// One image, one box found exactly: 1 at every threshold. A second, unmatched detection
    /// with a lower score leaves AP at 1 (precision at recall 1 is already 1).
    #[test]
    fn a_perfect_detection_scores_one() {
        let im = MapImage {
            predictions: vec![([10.0, 10.0, 50.0, 50.0], 0.9), ([100.0, 100.0, 120.0, 120.0], 0.3)],
            ground_truth: vec![[10.0, 10.0, 50.0, 50.0]],
        };
        let r = mean_average_precision(&[im], &DETECTION_IOU_THRESHOLDS);
        assert_eq!(r.map, 1.0);
    }

    /// The false positive ranked first halves the precision: AP = 0.5 at every point.
    #[test]
    fn a_higher_ranked_false_positive_halves_precision() {
        let im = MapImage {
            predictions: vec![([10.0, 10.0, 50.0, 50.0], 0.3), ([100.0, 100.0, 120.0, 120.0], 0.9)],
            ground_truth: vec![[10.0, 10.0, 50.0, 50.0]],
        };
        let r = mean_average_precision(&[im], &[0.5]);
        assert!((r.map - 0.5).abs() < 1e-6, "{r:?}");
        // An inverted (negative-area) unmatched detection is ignored, not a false positive.
        let inverted = MapImage {
            predictions: vec![([120.0, 100.0, 100.0, 120.0], 0.9), ([10.0, 10.0, 50.0, 50.0], 0.3)],
            ground_truth: vec![[10.0, 10.0, 50.0, 50.0]],
        };
        assert_eq!(mean_average_precision(&[inverted], &[0.5]).map, 1.0);
        // No ground truth anywhere: undefined.
        let none = MapImage { predictions: vec![([0.0, 0.0, 1.0, 1.0], 0.9)], ground_truth: vec![] };
        assert_eq!(mean_average_precision(&[none], &[0.5]).map, -1.0);
    }
}
