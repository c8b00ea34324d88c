//! The YOLOv3 detection loss of MGCA's detection evaluation, per scale and summed over the three:
//! `L_s = 2.5·(L_x + L_y) + 2.5·(L_w + L_h) + L_conf + L_cls`, each term a mean over the
//! `B·3·G·G` cells, with `L_x = BCE(σ(t_x)·m, t̂_x·m)`, `L_w = MSE(t_w·m, t̂_w·m)`,
//! `L_conf = BCE(σ(t_o)·m, m) + 0.5·BCE(σ(t_o)·n, 0)`, `L_cls = BCE(σ(t_c)·m, t̂_c·m)`, where
//! `m` marks each target's cell and best anchor and `n` (no-object) is 1 except where an
//! anchor's shape IoU with a target exceeds 0.5.
//!
//! The loss and its gradient with respect to the head outputs are computed on the host in one
//! pass (the heads are small: 18 channels on 7², 14² and 28² cells), with PyTorch's BCE
//! semantics: `log` clamped at −100, gradient `(p − t)/max(p(1 − p), 1e-12)`.
//!
//! Book: "Detection" (the loss). Reference: `mgca/utils/yolo_loss.py`, `YOLOLoss.forward` and
//! `YOLOLoss.get_target`, and `mgca/models/ssl_detector.py`, `ModelMain` (anchors), at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Faithful quirks kept: the "+1 pixel" shape IoU in grid units, later
//! targets overwriting earlier ones in the same cell and anchor, the no-object mask left at 1
//! on a positive cell whose anchor's IoU is at most 0.5.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::{GradientLink, gradient_link, take_values};

/// Attributes per anchor: `t_x, t_y, t_w, t_h`, objectness, one class.
pub const ATTRIBUTES: usize = 6;
/// Anchors per scale.
pub const ANCHORS_PER_SCALE: usize = 3;
/// The input side the anchors are scaled to, in pixels.
pub const IMAGE_SIZE: usize = 224;
/// The three scales' grids (strides 32, 16, 8 on 224 px).
pub const GRIDS: [usize; 3] = [7, 14, 28];
/// YOLOv3's COCO anchors in pixels at 416 px, per scale (`ModelMain.anchors` before `· 224/416`).
pub const COCO_ANCHORS_416: [[[u32; 2]; 3]; 3] =
    [[[116, 90], [156, 198], [373, 326]], [[30, 61], [62, 45], [59, 119]], [[10, 13], [16, 30], [33, 23]]];

/// The loss's weights and threshold (the reference's constants).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YoloLossConfig {
    /// λ_xy, on `L_x + L_y`.
    pub lambda_xy: f32,
    /// λ_wh, on `L_w + L_h`.
    pub lambda_wh: f32,
    /// λ_conf, on `L_conf`.
    pub lambda_conf: f32,
    /// λ_cls, on `L_cls`.
    pub lambda_cls: f32,
    /// The weight of the no-object term inside `L_conf`.
    pub noobj_weight: f32,
    /// Anchors whose shape IoU with a target exceeds this leave the no-object mask.
    pub ignore_threshold: f32,
}

impl YoloLossConfig {
    /// The reference's values: 2.5, 2.5, 1, 1, 0.5, 0.5.
    pub fn reference() -> Self {
        Self {
            lambda_xy: 2.5,
            lambda_wh: 2.5,
            lambda_conf: 1.0,
            lambda_cls: 1.0,
            noobj_weight: 0.5,
            ignore_threshold: 0.5,
        }
    }
}

/// The anchors of scale `s` in pixels, as the reference's float32 tensor holds them
/// (`int · 224 / 416`, one f32 division).
pub fn anchors_px(scale: usize) -> [[f32; 2]; 3] {
    COCO_ANCHORS_416[scale].map(|a| a.map(|v| (v * IMAGE_SIZE as u32) as f32 / 416.0))
}

/// The stride of scale `s` in pixels (`224 / G`).
pub fn stride(scale: usize) -> f32 {
    IMAGE_SIZE as f32 / GRIDS[scale] as f32
}

/// The anchors of scale `s` in grid units (pixels ÷ stride, in f32).
pub fn anchors_grid(scale: usize) -> [[f32; 2]; 3] {
    let r = stride(scale);
    anchors_px(scale).map(|a| a.map(|v| v / r))
}

/// One ground-truth box: class and normalised centre and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetBox {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

/// The "+1" IoU of two boxes given as corners (the reference's `bbox_iou`), in f32.
pub fn iou_plus_one(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0);
    let area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    inter / (area_a + area_b - inter + 1e-16)
}

/// The training targets of one scale, each `[B, 3, G, G]` (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleTargets {
    pub grid: usize,
    /// 1 at each target's cell and best anchor.
    pub obj: Vec<f32>,
    /// 1 except where an anchor's shape IoU with a target exceeds the threshold.
    pub noobj: Vec<f32>,
    pub tx: Vec<f32>,
    pub ty: Vec<f32>,
    pub tw: Vec<f32>,
    pub th: Vec<f32>,
    /// The class one-hot (one class: 1 where `obj` is 1 and the class is 0).
    pub tcls: Vec<f32>,
}

// ANCHOR: targets
/// Build scale `s`'s targets from each image's boxes (`get_target`): later boxes overwrite
/// earlier ones in the same cell and anchor.
pub fn build_targets(boxes: &[Vec<TargetBox>], scale: usize, config: &YoloLossConfig) -> ScaleTargets {
    let g = GRIDS[scale];
    let anchors = anchors_grid(scale);
    let cells = boxes.len() * ANCHORS_PER_SCALE * g * g;
    let mut t = ScaleTargets {
        grid: g,
        obj: vec![0.0; cells],
        noobj: vec![1.0; cells],
        tx: vec![0.0; cells],
        ty: vec![0.0; cells],
        tw: vec![0.0; cells],
        th: vec![0.0; cells],
        tcls: vec![0.0; cells],
    };
    for (b, image) in boxes.iter().enumerate() {
        for bx in image {
            // As the reference: `.item()` to a double, times the grid.
            let (gx, gy) = (bx.cx as f64 * g as f64, bx.cy as f64 * g as f64);
            let (gw, gh) = (bx.w as f64 * g as f64, bx.h as f64 * g as f64);
            let (gi, gj) = (gx as usize, gy as usize);
            if gi >= g || gj >= g {
                continue; // a centre on the far edge has no cell (the reference would index out of range)
            }
            let gt = [0.0, 0.0, gw as f32, gh as f32];
            let ious = anchors.map(|a| iou_plus_one(gt, [0.0, 0.0, a[0], a[1]]));
            let cell = |k: usize| ((b * ANCHORS_PER_SCALE + k) * g + gj) * g + gi;
            for (k, iou) in ious.iter().enumerate() {
                if *iou > config.ignore_threshold {
                    t.noobj[cell(k)] = 0.0;
                }
            }
            // The first maximum, as numpy's argmax.
            let best = (0..ANCHORS_PER_SCALE).fold(0, |best, k| if ious[k] > ious[best] { k } else { best });
            let at = cell(best);
            t.obj[at] = 1.0;
            t.tx[at] = (gx - gi as f64) as f32;
            t.ty[at] = (gy - gj as f64) as f32;
            // `gw / anchor` is a float32 division in the reference (the anchor is a 0-d tensor),
            // its logarithm a double.
            t.tw[at] = (((gw as f32) / anchors[best][0] + 1e-16) as f64).ln() as f32;
            t.th[at] = (((gh as f32) / anchors[best][1] + 1e-16) as f64).ln() as f32;
            t.tcls[at] = if bx.class == 0 { 1.0 } else { 0.0 };
        }
    }
    t
}
// ANCHOR_END: targets

/// The terms of one scale's loss (already weighted by nothing: the means).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScaleLoss {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub conf: f64,
    pub cls: f64,
    /// The weighted sum.
    pub total: f64,
}

/// The logistic function in f32, as `torch.sigmoid` on the heads.
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// PyTorch's BCE of one element (log clamped at −100).
fn bce(p: f32, t: f32) -> f64 {
    let lp = (p as f64).ln().max(-100.0);
    let lq = (1.0 - p as f64).ln().max(-100.0);
    -(t as f64 * lp + (1.0 - t as f64) * lq)
}

/// PyTorch's BCE gradient with respect to the prediction.
fn bce_grad(p: f32, t: f32) -> f32 {
    (p - t) / ((1.0 - p) * p).max(1e-12)
}

// ANCHOR: loss
/// One scale's loss and its gradient with respect to the head output `raw` (`[B, 18, G, G]`,
/// channel = anchor·6 + attribute); the gradient is scaled by `upstream`.
pub fn scale_loss(
    raw: &[f32],
    targets: &ScaleTargets,
    config: &YoloLossConfig,
    upstream: f32,
) -> (ScaleLoss, Vec<f32>) {
    let g = targets.grid;
    let cells = targets.obj.len();
    assert_eq!(raw.len(), cells * ATTRIBUTES, "a head output of [B, 18, {g}, {g}]");
    let n = cells as f32;
    let mut grad = vec![0f32; raw.len()];
    let mut sums = ScaleLoss::default();
    let plane = g * g;
    for cell in 0..cells {
        let (ba, pos) = (cell / plane, cell % plane); // (b·3 + anchor, row·G + col)
        let at = |attr: usize| (ba * ATTRIBUTES + attr) * plane + pos;
        let (m, no) = (targets.obj[cell], targets.noobj[cell]);
        let (sx, sy, so, sc) = (sigmoid(raw[at(0)]), sigmoid(raw[at(1)]), sigmoid(raw[at(4)]), sigmoid(raw[at(5)]));
        let (w, h) = (raw[at(2)], raw[at(3)]);
        // x, y, cls: BCE(σ·m, t·m).
        let (px, tx) = (sx * m, targets.tx[cell] * m);
        let (py, ty) = (sy * m, targets.ty[cell] * m);
        let (pc, tc) = (sc * m, targets.tcls[cell] * m);
        sums.x += bce(px, tx);
        sums.y += bce(py, ty);
        sums.cls += bce(pc, tc);
        // w, h: MSE(t·m, t̂·m).
        let (dw, dh) = (w * m - targets.tw[cell] * m, h * m - targets.th[cell] * m);
        sums.w += (dw as f64) * (dw as f64);
        sums.h += (dh as f64) * (dh as f64);
        // conf: BCE(σ·m, m) + 0.5·BCE(σ·n, 0).
        let (p1, p2) = (so * m, so * no);
        sums.conf += bce(p1, m) + config.noobj_weight as f64 * bce(p2, 0.0);

        let k = upstream / n;
        grad[at(0)] = k * config.lambda_xy * bce_grad(px, tx) * m * sx * (1.0 - sx);
        grad[at(1)] = k * config.lambda_xy * bce_grad(py, ty) * m * sy * (1.0 - sy);
        grad[at(2)] = k * config.lambda_wh * 2.0 * dw * m;
        grad[at(3)] = k * config.lambda_wh * 2.0 * dh * m;
        let dconf = bce_grad(p1, m) * m + config.noobj_weight * bce_grad(p2, 0.0) * no;
        grad[at(4)] = k * config.lambda_conf * dconf * so * (1.0 - so);
        grad[at(5)] = k * config.lambda_cls * bce_grad(pc, tc) * m * sc * (1.0 - sc);
    }
    let n = cells as f64;
    let mean = |v: f64| v / n;
    let mut l = ScaleLoss {
        x: mean(sums.x),
        y: mean(sums.y),
        w: mean(sums.w),
        h: mean(sums.h),
        conf: mean(sums.conf),
        cls: mean(sums.cls),
        total: 0.0,
    };
    l.total = config.lambda_xy as f64 * (l.x + l.y)
        + config.lambda_wh as f64 * (l.w + l.h)
        + config.lambda_conf as f64 * l.conf
        + config.lambda_cls as f64 * l.cls;
    (l, grad)
}
// ANCHOR_END: loss

/// The summed loss of the three scales and its per-scale terms.
#[derive(Debug, Clone)]
pub struct YoloLossOutput<B: Backend> {
    /// `L = L_scale0 + L_scale1 + L_scale2`, `[1]`, differentiable with respect to the heads.
    pub loss: Tensor<B, 1>,
    /// Each scale's terms (for the logs, as the reference logs `x, y, w, h, conf, cls`).
    pub scales: [ScaleLoss; 3],
}

// ANCHOR: yolo_loss
/// The three scales' terms and gradients (scaled by `upstream`) for head outputs `[B, 18, G, G]`
/// against each image's boxes, on the host.
pub fn yolo_loss_host(
    heads: [&[f32]; 3],
    boxes: &[Vec<TargetBox>],
    config: &YoloLossConfig,
    upstream: f32,
) -> [(ScaleLoss, Vec<f32>); 3] {
    std::array::from_fn(|s| scale_loss(heads[s], &build_targets(boxes, s, config), config, upstream))
}

/// The loss of the three head outputs `[B, 18, G, G]` against each image's boxes. The values
/// leave the device once (they are small); the gradient computed with them is attached to the
/// heads through [`gradient_link`], so backpropagation continues into the neck.
pub fn yolo_loss<B: GradientLink>(
    heads: [Tensor<B, 4>; 3],
    boxes: &[Vec<TargetBox>],
    config: &YoloLossConfig,
) -> YoloLossOutput<B> {
    let device = heads[0].device();
    let dims = heads.each_ref().map(|h| h.dims());
    assert!(dims.iter().all(|d| d[0] == boxes.len()), "one box list per image");
    let [(v0, h0), (v1, h1), (v2, h2)] = heads.map(take_values);
    let per_scale = yolo_loss_host([&v0, &v1, &v2], boxes, config, 1.0);
    let mut loss = Tensor::<B, 1>::zeros([1], &device);
    for ((handle, (terms, grad)), dims) in [h0, h1, h2].into_iter().zip(&per_scale).zip(dims) {
        let grad = Tensor::<B, 4>::from_data(TensorData::new(grad.clone(), dims), &device);
        loss = loss + gradient_link(handle, grad) + Tensor::from_floats([terms.total as f32], &device);
    }
    YoloLossOutput { loss, scales: per_scale.map(|(terms, _)| terms) }
}
// ANCHOR_END: yolo_loss

/// Targets from the reference's padded tensor `[B, T, 5]` (`class, cx, cy, w, h`; rows whose
/// five values sum to 0 are padding).
pub fn boxes_from_padded(values: &[f32], batch: usize, rows: usize) -> Vec<Vec<TargetBox>> {
    (0..batch)
        .map(|b| {
            (0..rows)
                .filter_map(|t| {
                    let r = &values[(b * rows + t) * 5..(b * rows + t + 1) * 5];
                    (r.iter().sum::<f32>() != 0.0).then(|| TargetBox {
                        class: r[0] as usize,
                        cx: r[1],
                        cy: r[2],
                        w: r[3],
                        h: r[4],
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's worked case: scale 0, a box at the centre, 0.3 × 0.4.
    #[test]
    fn targets_of_the_worked_example() {
        let config = YoloLossConfig::reference();
        let boxes = vec![vec![TargetBox { class: 0, cx: 0.5, cy: 0.5, w: 0.3, h: 0.4 }]];
        let anchors = anchors_grid(0);
        let ious = anchors.map(|a| iou_plus_one([0.0, 0.0, 2.1, 2.8], [0.0, 0.0, a[0], a[1]]));
        for (got, want) in ious.iter().zip([0.630083, 0.750198, 0.249619]) {
            assert!((got - want).abs() < 1e-6, "{ious:?}");
        }
        let t = build_targets(&boxes, 0, &config);
        let cell = |k: usize| (k * 7 + 3) * 7 + 3;
        assert_eq!((t.noobj[cell(0)], t.noobj[cell(1)], t.noobj[cell(2)]), (0.0, 0.0, 1.0));
        assert_eq!((t.obj[cell(0)], t.obj[cell(1)], t.obj[cell(2)]), (0.0, 1.0, 0.0));
        assert!((t.tx[cell(1)] - 0.5).abs() < 1e-6 && (t.ty[cell(1)] - 0.5).abs() < 1e-6);
        assert!((t.tw[cell(1)] - -0.223144).abs() < 1e-5, "{}", t.tw[cell(1)]);
        assert!((t.th[cell(1)] - -0.173873).abs() < 1e-5, "{}", t.th[cell(1)]);
        assert_eq!(t.obj.iter().sum::<f32>(), 1.0);
        assert_eq!(t.noobj.iter().filter(|v| **v == 0.0).count(), 2);
    }

    /// A later box in the same cell and anchor replaces the earlier one.
    #[test]
    fn later_targets_overwrite_earlier_ones() {
        let config = YoloLossConfig::reference();
        let a = TargetBox { class: 0, cx: 0.51, cy: 0.52, w: 0.3, h: 0.4 };
        let b = TargetBox { class: 0, cx: 0.55, cy: 0.56, w: 0.31, h: 0.41 };
        let t = build_targets(&[vec![a, b]], 0, &config);
        let only_b = build_targets(&[vec![b]], 0, &config);
        assert_eq!(t.tx, only_b.tx);
        assert_eq!(t.tw, only_b.tw);
        assert_eq!(t.obj, only_b.obj);
    }

    /// Through autodiff: the loss is the host loss, and the heads' gradients are the host
    /// gradients (whatever upstream scale: here 2·L).
    #[test]
    fn the_autodiff_loss_carries_the_host_gradient() {
        use crate::backend::{CpuAutodiff, cpu_device};
        let dev = cpu_device();
        let config = YoloLossConfig::reference();
        let boxes = vec![
            vec![TargetBox { class: 0, cx: 0.4, cy: 0.5, w: 0.3, h: 0.2 }],
            vec![TargetBox { class: 0, cx: 0.7, cy: 0.2, w: 0.1, h: 0.1 }],
        ];
        let raw: [Vec<f32>; 3] =
            GRIDS.map(|g| (0..2 * 18 * g * g).map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 2.0).collect());
        let heads: [Tensor<CpuAutodiff, 4>; 3] = std::array::from_fn(|s| {
            let g = GRIDS[s];
            Tensor::<CpuAutodiff, 4>::from_data(TensorData::new(raw[s].clone(), [2, 18, g, g]), &dev).require_grad()
        });
        let out = yolo_loss(heads.clone(), &boxes, &config);
        let host: f64 = raw
            .iter()
            .enumerate()
            .map(|(s, r)| scale_loss(r, &build_targets(&boxes, s, &config), &config, 1.0).0.total)
            .sum();
        let value = out.loss.clone().into_scalar();
        assert!((value as f64 - host).abs() < 1e-6 * host, "{value} vs {host}");
        let grads = (out.loss * 2.0).backward();
        let want = yolo_loss_host([&raw[0], &raw[1], &raw[2]], &boxes, &config, 2.0);
        for (s, (_, want)) in want.iter().enumerate() {
            let got = heads[s].grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let worst = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-9, "scale {s}: {worst}");
        }
    }

    /// The gradient is the derivative of the loss (central differences in f64 of the f32 loss).
    #[test]
    fn the_gradient_is_the_derivative_of_the_loss() {
        let config = YoloLossConfig::reference();
        let boxes = vec![vec![TargetBox { class: 0, cx: 0.3, cy: 0.6, w: 0.2, h: 0.25 }], vec![]];
        let t = build_targets(&boxes, 0, &config);
        let raw: Vec<f32> = (0..2 * 18 * 49).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 3.0).collect();
        let (_, grad) = scale_loss(&raw, &t, &config, 1.0);
        let mut checked = 0;
        for i in (0..raw.len()).step_by(37).chain([0, 1, 2, 3, 4, 5].map(|a| (a * 49) + 4 * 7 + 2)) {
            let h = 1e-2f32;
            let mut up = raw.clone();
            up[i] += h;
            let mut down = raw.clone();
            down[i] -= h;
            let numeric = (scale_loss(&up, &t, &config, 1.0).0.total - scale_loss(&down, &t, &config, 1.0).0.total)
                / (2.0 * h as f64);
            assert!(
                (numeric - grad[i] as f64).abs() < 1e-5 + 1e-2 * numeric.abs(),
                "element {i}: {numeric} vs {}",
                grad[i]
            );
            checked += 1;
        }
        assert!(checked > 20);
    }
}
