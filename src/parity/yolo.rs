//! The detection case: the YOLO loss, its gradients and the detections after NMS, computed
//! from a case's head outputs and targets, to compare with the reference's `yolo_loss.py`
//! (`mgca parity yolo`).
//!
//! Inputs: `yolo.out0` f32 `[B, 18, 7, 7]`, `yolo.out1` `[B, 18, 14, 14]`, `yolo.out2`
//! `[B, 18, 28, 28]` (head outputs) and `yolo.targets` f32 `[B, T, 5]` (`class, cx, cy, w, h`
//! normalised; all-zero rows are padding). Outputs: `yolo.loss` f32 `[]` (summed over the
//! scales), `yolo.grad.out0|1|2` (its gradient with respect to each head output) and
//! `yolo.detections` f32 `[D, 8]`, rows `(image, x1, y1, x2, y2, objectness, class score,
//! class)` after the confidence filter (0.5) and NMS (0.5), images in order. When the case also
//! holds tensors under the output names (as `golden/reference/detection/case_*` hold the
//! reference's), [`YoloCase::compare`] measures ours against them.
//!
//! Book: "Detection". Reference: `mgca/utils/yolo_loss.py`, `YOLOLoss` and
//! `non_max_suppression`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Agreement, ParityError, YOLO_DETECTIONS, YOLO_GRADIENTS, YOLO_LOSS};
use crate::loss::yolo::{GRIDS, YoloLossConfig, boxes_from_padded, yolo_loss_host};
use crate::model::yolo::{decode, non_max_suppression};
use crate::tensor_file::{HostTensor, TensorFile};

/// Head output names, per scale.
pub const OUTPUTS: [&str; 3] = ["yolo.out0", "yolo.out1", "yolo.out2"];
/// The targets' name.
pub const TARGETS: &str = "yolo.targets";
/// The loss's name.
pub const LOSS: &str = "yolo.loss";
/// Gradient names, per scale.
pub const GRADIENTS: [&str; 3] = ["yolo.grad.out0", "yolo.grad.out1", "yolo.grad.out2"];
/// The detections' name.
pub const DETECTIONS: &str = "yolo.detections";
/// The reference's thresholds in `SSLDetector`: objectness ≥ 0.5, NMS IoU ≥ 0.5 suppresses.
pub const CONF_THRESHOLD: f32 = 0.5;
pub const NMS_THRESHOLD: f32 = 0.5;

/// A validated detection case.
#[derive(Debug, Clone)]
pub struct YoloCase {
    pub path: PathBuf,
    batch: usize,
    heads: [Vec<f32>; 3],
    targets: Vec<f32>,
    rows: usize,
    reference: BTreeMap<String, HostTensor>,
}

impl YoloCase {
    /// Read and validate `path`: the four inputs present, f32, of consistent shapes, finite,
    /// target rows with a class in {0} and coordinates in [0, 1].
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        let file = TensorFile::read(path).map_err(ParityError::File)?;
        let get = |name: &str| {
            file.tensors
                .get(name)
                .cloned()
                .ok_or_else(|| ParityError::MissingTensor { path: path.into(), name: name.into() })
        };
        let targets = get(TARGETS)?;
        if targets.shape.len() != 3 || targets.shape[2] != 5 || targets.shape[0] == 0 {
            return Err(ParityError::Shape {
                path: path.into(),
                name: TARGETS.into(),
                expected: "[B, T, 5]".into(),
                got: targets.shape,
            });
        }
        let batch = targets.shape[0];
        let mut heads: [Vec<f32>; 3] = Default::default();
        for (s, name) in OUTPUTS.iter().enumerate() {
            let t = get(name)?;
            let g = GRIDS[s];
            if t.shape != [batch, 18, g, g] {
                return Err(ParityError::Shape {
                    path: path.into(),
                    name: (*name).into(),
                    expected: format!("[{batch}, 18, {g}, {g}]"),
                    got: t.shape,
                });
            }
            if let Some(index) = t.values.iter().position(|v| !v.is_finite()) {
                return Err(ParityError::BadValue {
                    path: path.into(),
                    name: (*name).into(),
                    index,
                    value: t.values[index],
                });
            }
            heads[s] = t.values;
        }
        for (index, v) in targets.values.iter().enumerate() {
            let column = index % 5;
            let bad = !v.is_finite() || if column == 0 { *v != 0.0 } else { !(0.0..=1.0).contains(v) };
            if bad {
                return Err(ParityError::BadValue { path: path.into(), name: TARGETS.into(), index, value: *v });
            }
        }
        let mut reference = BTreeMap::new();
        for name in [LOSS, DETECTIONS].into_iter().chain(GRADIENTS) {
            if let Some(t) = file.tensors.get(name) {
                reference.insert(name.to_string(), t.clone());
            }
        }
        Ok(Self { path: path.into(), batch, heads, rows: targets.shape[1], targets: targets.values, reference })
    }

    /// Our loss, gradients and detections.
    pub fn run(&self) -> TensorFile {
        let config = YoloLossConfig::reference();
        let boxes = boxes_from_padded(&self.targets, self.batch, self.rows);
        let mut out = TensorFile::default();
        let heads = [&self.heads[0][..], &self.heads[1][..], &self.heads[2][..]];
        let mut loss = 0f64;
        for (s, (terms, grad)) in yolo_loss_host(heads, &boxes, &config, 1.0).into_iter().enumerate() {
            loss += terms.total;
            let g = GRIDS[s];
            out.tensors.insert(GRADIENTS[s].into(), HostTensor { shape: vec![self.batch, 18, g, g], values: grad });
        }
        out.tensors.insert(LOSS.into(), HostTensor { shape: vec![], values: vec![loss as f32] });
        let mut rows = Vec::new();
        for b in 0..self.batch {
            let candidates = decode(heads, b);
            for d in non_max_suppression(&candidates, CONF_THRESHOLD, NMS_THRESHOLD).unwrap_or_default() {
                rows.extend([b as f32, d.x1, d.y1, d.x2, d.y2, d.objectness, d.class_score, d.class as f32]);
            }
        }
        out.tensors.insert(DETECTIONS.into(), HostTensor { shape: vec![rows.len() / 8, 8], values: rows });
        out
    }

    /// Ours against the reference outputs the case holds (`None` when it holds none).
    pub fn compare(&self, ours: &TensorFile) -> Option<Vec<Agreement>> {
        if self.reference.is_empty() {
            return None;
        }
        let lines = self
            .reference
            .iter()
            .map(|(name, reference)| {
                let tol = match name.as_str() {
                    LOSS => YOLO_LOSS,
                    DETECTIONS => YOLO_DETECTIONS,
                    _ => YOLO_GRADIENTS,
                };
                Agreement::measure(name, &ours.tensors[name], reference, tol)
            })
            .collect();
        Some(lines)
    }
}
