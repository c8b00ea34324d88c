//! The segmentation-loss case: the loss, its two terms and its gradient with respect to the
//! logits, computed from a case's logits and targets, to compare with the reference's
//! `segmentation_loss.py` (`mgca parity segloss`).
//!
//! Inputs: `seg.logits` f32 `[B, H, W]` and `seg.targets` f32 `[B, H, W]` (in `[0, 1]`,
//! fractional at mask edges). Outputs: `seg.loss` f32 `[]` (`10·FL − ln DC`), `seg.focal` f32
//! `[]`, `seg.dice_coef` f32 `[]` and `seg.grad.logits` f32 `[B, H, W]`. When the case also holds
//! tensors under the output names (as `golden/reference/segmentation/case_*` hold the
//! reference's), [`SegLossCase::compare`] measures ours against them.
//!
//! Book: "Segmentation". Reference: `mgca/utils/segmentation_loss.py`, `MixedLoss`, at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};

use super::{Agreement, ParityError, SEG_GRADIENTS, SEG_LOSS};
use crate::backend::{CpuAutodiff, cpu_device};
use crate::loss::segmentation::{SegmentationLossConfig, segmentation_loss};
use crate::tensor_file::{HostTensor, TensorFile};

/// The logits' name.
pub const LOGITS: &str = "seg.logits";
/// The targets' name.
pub const TARGETS: &str = "seg.targets";
/// Output names: the loss, its focal term, the soft Dice coefficient, the logits' gradient.
pub const OUTPUTS: [&str; 4] = ["seg.loss", "seg.focal", "seg.dice_coef", "seg.grad.logits"];

/// A validated segmentation-loss case.
#[derive(Debug, Clone)]
pub struct SegLossCase {
    pub path: PathBuf,
    shape: [usize; 3],
    logits: Vec<f32>,
    targets: Vec<f32>,
    reference: BTreeMap<String, HostTensor>,
}

impl SegLossCase {
    /// Read and validate `path`: both inputs present, f32 `[B, H, W]` of one shape with every
    /// dimension at least 1, logits finite, targets in `[0, 1]`.
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        let file = TensorFile::read(path).map_err(ParityError::File)?;
        let get = |name: &str| {
            file.tensors
                .get(name)
                .cloned()
                .ok_or_else(|| ParityError::MissingTensor { path: path.into(), name: name.into() })
        };
        let logits = get(LOGITS)?;
        let shape: [usize; 3] = match logits.shape[..] {
            [b, h, w] if b > 0 && h > 0 && w > 0 => [b, h, w],
            _ => {
                return Err(ParityError::Shape {
                    path: path.into(),
                    name: LOGITS.into(),
                    expected: "[B, H, W], each at least 1".into(),
                    got: logits.shape,
                });
            }
        };
        let targets = get(TARGETS)?;
        if targets.shape != shape {
            return Err(ParityError::Shape {
                path: path.into(),
                name: TARGETS.into(),
                expected: format!("{shape:?} (as `{LOGITS}`)"),
                got: targets.shape,
            });
        }
        if let Some(index) = logits.values.iter().position(|v| !v.is_finite()) {
            return Err(ParityError::BadValue {
                path: path.into(),
                name: LOGITS.into(),
                index,
                value: logits.values[index],
            });
        }
        if let Some(index) = targets.values.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(ParityError::BadValue {
                path: path.into(),
                name: TARGETS.into(),
                index,
                value: targets.values[index],
            });
        }
        let reference =
            OUTPUTS.iter().filter_map(|n| file.tensors.get(*n).map(|t| (n.to_string(), t.clone()))).collect();
        Ok(Self { path: path.into(), shape, logits: logits.values, targets: targets.values, reference })
    }

    /// Our loss, terms and gradient (autodiff on the CPU backend).
    pub fn run(&self) -> TensorFile {
        let device = cpu_device();
        let z = Tensor::<CpuAutodiff, 3>::from_data(TensorData::new(self.logits.clone(), self.shape), &device)
            .require_grad();
        let y = Tensor::<CpuAutodiff, 3>::from_data(TensorData::new(self.targets.clone(), self.shape), &device);
        let out = segmentation_loss(z.clone(), y, &SegmentationLossConfig::reference());
        let scalar = |t: Tensor<CpuAutodiff, 1>| HostTensor { shape: vec![], values: vec![t.into_scalar()] };
        let (focal, dice) = (scalar(out.focal.clone()), scalar(out.dice_coef.clone()));
        let grads = out.loss.clone().backward();
        let grad = z.grad(&grads).expect("the logits' gradient");
        let mut file = TensorFile::default();
        file.tensors.insert(OUTPUTS[0].into(), scalar(out.loss));
        file.tensors.insert(OUTPUTS[1].into(), focal);
        file.tensors.insert(OUTPUTS[2].into(), dice);
        file.tensors.insert(
            OUTPUTS[3].into(),
            HostTensor { shape: self.shape.to_vec(), values: grad.into_data().to_vec::<f32>().expect("f32") },
        );
        file
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
                let mut want = reference.clone();
                if want.values.len() == 1 && ours.tensors[name].shape.is_empty() {
                    want.shape.clear();
                }
                let tol = if name == OUTPUTS[3] { SEG_GRADIENTS } else { SEG_LOSS };
                Agreement::measure(name, &ours.tensors[name], &want, tol)
            })
            .collect();
        Some(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::golden;

    /// Every committed case (the reference's `MixedLoss`, `FocalLoss`, `dice_loss` and
    /// autograd): each output within its tolerance.
    #[test]
    fn every_committed_case_equals_the_reference() {
        for name in ["hard_masks", "fractional_edges", "all_empty", "extreme_logits", "full_size"] {
            let case = SegLossCase::read(&golden(&format!("reference/segmentation/case_{name}.safetensors"))).unwrap();
            let lines = case.compare(&case.run()).unwrap();
            assert_eq!(lines.len(), 4, "{name}");
            for a in lines {
                assert!(a.ok, "{name}: {a}");
            }
        }
    }
}
