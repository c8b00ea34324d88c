//! The metrics case: AUROC, accuracy, detection mAP and segmentation Dice computed from a
//! case's inputs, to compare with scikit-learn, torchmetrics and the reference's own code
//! (`mgca parity metrics`).
//!
//! A case holds any of the groups of inputs:
//!
//! - `auroc.scores` f32 `[N, C]` and `auroc.labels` f32 `[N, C]` (0 or 1, both values in every
//!   column) → `auroc.per_class` f32 `[C]` and `auroc.macro` f32 `[]`;
//! - `accuracy.scores` f32 `[N, C]` and `accuracy.labels` i64 `[N]` (in `0..C`) → `accuracy`
//!   f32 `[]`, a fraction in `[0, 1]`;
//! - the `map.*` group (see [`MAP_INPUTS`], [`MAP_OUTPUTS`]): torchmetrics' mean average
//!   precision over IoU 0.40:0.05:0.75;
//! - the `dice.*` group: `dice.probs` and `dice.targets` f32 `[N, H, W]` (in `[0, 1]`) and
//!   `dice.batch_size` i64 `[]` → `dice.per_image` f32 `[N]` and `dice.epoch` f32 `[]` (the
//!   unweighted mean of per-batch means over consecutive batches, as the reference's
//!   segmentation evaluation averages).
//!
//! When the case also holds outputs under those names (as `golden/python/metrics/case_*`
//! hold scikit-learn's), [`MetricsCase::compare`] measures ours against them within
//! [`crate::metrics::SKLEARN_TOLERANCE`].
//!
//! Book: "Parity with the reference" (metrics) and "Linear probing" (metrics). Reference:
//! `mgca/models/ssl_finetuner.py`, `SSLFineTuner` (torchmetrics `AUROC` and `Accuracy`), at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** as in [`crate::metrics`]: a column with one label value, a non-finite score
//! or a label that is not 0 or 1 (not in `0..C` for accuracy) is bad input naming the tensor,
//! where torchmetrics warns and returns 0 or NaN.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{Agreement, ParityError, Tolerance};
use crate::metrics::map::{self, MapImage};
use crate::metrics::{Matrix, MetricError, SKLEARN_TOLERANCE, accuracy, auroc, dice};
use crate::tensor_file::{HostTensor, TensorFile, TensorFileError};

/// The two input groups: scores, labels, and the outputs they give.
pub const AUROC_INPUTS: [&str; 2] = ["auroc.scores", "auroc.labels"];
/// Outputs of the AUROC group.
pub const AUROC_OUTPUTS: [&str; 2] = ["auroc.per_class", "auroc.macro"];
/// Inputs of the accuracy group.
pub const ACCURACY_INPUTS: [&str; 2] = ["accuracy.scores", "accuracy.labels"];
/// Output of the accuracy group.
pub const ACCURACY_OUTPUT: &str = "accuracy";

/// Inputs of the mean-average-precision group.
pub const MAP_INPUTS: [&str; 6] =
    ["map.pred_boxes", "map.pred_scores", "map.pred_image", "map.gt_boxes", "map.gt_image", "map.num_images"];
/// Outputs of the mean-average-precision group.
pub const MAP_OUTPUTS: [&str; 2] = ["map.map", "map.per_threshold"];
/// Agreement with torchmetrics' mean average precision: 1e-6 absolute.
pub const TORCHMETRICS_MAP: Tolerance = Tolerance { abs: 1e-6, rel: 0.0 };

/// Inputs of the Dice group.
pub const DICE_INPUTS: [&str; 3] = ["dice.probs", "dice.targets", "dice.batch_size"];
/// Outputs of the Dice group.
pub const DICE_OUTPUTS: [&str; 2] = ["dice.per_image", "dice.epoch"];
/// Agreement with the reference's `get_dice` and its epoch mean: 1e-6 absolute.
pub const REFERENCE_DICE: Tolerance = Tolerance { abs: 1e-6, rel: 0.0 };

/// Agreement with scikit-learn, as a [`Tolerance`]: [`SKLEARN_TOLERANCE`] absolute.
pub const SKLEARN: Tolerance = Tolerance { abs: SKLEARN_TOLERANCE, rel: 0.0 };

/// One tensor as stored: element type, shape and values (f32 or i64).
#[derive(Debug, Clone)]
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

/// A validated metrics case.
#[derive(Debug, Clone)]
pub struct MetricsCase {
    /// Where it was read from.
    pub path: PathBuf,
    /// AUROC inputs: scores and 0/1 labels, `[N, C]` each, and `(N, C)`.
    auroc: Option<(Vec<f32>, Vec<f32>, usize, usize)>,
    /// Accuracy inputs: scores `[N, C]`, labels `[N]`, and `(N, C)`.
    accuracy: Option<(Vec<f32>, Vec<i64>, usize, usize)>,
    /// Mean-average-precision inputs, per image.
    map: Option<Vec<MapImage>>,
    /// Dice inputs: probabilities and targets `[N, H·W]`, N, and the batch size.
    dice: Option<(Vec<f32>, Vec<f32>, usize, usize)>,
    /// Reference outputs the case carries, by name.
    reference: BTreeMap<String, HostTensor>,
}

impl MetricsCase {
    /// Read and validate `path`: at least one complete group, each tensor of its dtype and shape,
    /// scores finite, labels valid, every AUROC column with both label values.
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        let file_err = |e: TensorFileError| ParityError::File(e);
        let bytes =
            std::fs::read(path).map_err(|source| file_err(TensorFileError::Io { path: path.into(), source }))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(TensorFileError::Format { path: path.into(), message: e.to_string() }))?;
        let mut stored = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = view.data();
            let (floats, ints) = match view.dtype() {
                Dtype::F32 => {
                    (data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), vec![])
                }
                Dtype::I64 => {
                    (vec![], data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())
                }
                _ => (vec![], vec![]),
            };
            stored.insert(name, Stored { dtype: view.dtype(), shape: view.shape().to_vec(), floats, ints });
        }
        let has = |names: &[&str]| names.iter().any(|n| stored.contains_key(*n));
        if !has(&AUROC_INPUTS) && !has(&ACCURACY_INPUTS) && !has(&MAP_INPUTS) && !has(&DICE_INPUTS) {
            return Err(ParityError::NoInput {
                path: path.into(),
                message: "no metric to compute: the case needs `auroc.scores` and `auroc.labels`, or \
                          `accuracy.scores` and `accuracy.labels`, or the `map.*` or `dice.*` group"
                    .into(),
            });
        }
        let get = |name: &str, dtype: Dtype, expected: &'static str| -> Result<&Stored, ParityError> {
            let t =
                stored.get(name).ok_or_else(|| ParityError::MissingTensor { path: path.into(), name: name.into() })?;
            if t.dtype != dtype {
                return Err(ParityError::DType {
                    path: path.into(),
                    name: name.into(),
                    dtype: format!("{:?}", t.dtype),
                    expected,
                });
            }
            Ok(t)
        };
        let shape_err = |name: &str, expected: String, got: &[usize]| ParityError::Shape {
            path: path.into(),
            name: name.into(),
            expected,
            got: got.to_vec(),
        };
        // Scores: [N, C] with N, C >= 1, every value finite.
        let scores = |name: &str| -> Result<(Vec<f32>, usize, usize), ParityError> {
            let t = get(name, Dtype::F32, "F32")?;
            let [n, c] = t.shape[..] else {
                return Err(shape_err(name, "[N, C]".into(), &t.shape));
            };
            if n == 0 || c == 0 {
                return Err(shape_err(name, "[N, C] with N >= 1 and C >= 1".into(), &t.shape));
            }
            if let Some((index, &value)) = t.floats.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ParityError::BadValue { path: path.into(), name: name.into(), index, value });
            }
            Ok((t.floats.clone(), n, c))
        };
        // A metric's complaint about its input, attributed to the tensor it concerns.
        let metric_err = |scores: &str, labels: &str, e: MetricError| {
            let name = match e {
                MetricError::NonFinite { .. } | MetricError::Shape(_) | MetricError::Empty => scores,
                MetricError::BadLabel { .. } | MetricError::OneClass { .. } => labels,
            };
            ParityError::Invalid { path: path.into(), name: name.into(), message: e.to_string() }
        };

        let auroc = if has(&AUROC_INPUTS) {
            let [s_name, y_name] = AUROC_INPUTS;
            let (s, n, c) = scores(s_name)?;
            let y = get(y_name, Dtype::F32, "F32")?;
            if y.shape != [n, c] {
                return Err(shape_err(y_name, format!("[N, C] = [{n}, {c}] (as `{s_name}`)"), &y.shape));
            }
            // Checks every label, then every column for both values.
            auroc::auroc_per_class(Matrix::new(&s, n, c).unwrap(), Matrix::new(&y.floats, n, c).unwrap())
                .map_err(|e| metric_err(s_name, y_name, e))?;
            Some((s, y.floats.clone(), n, c))
        } else {
            None
        };
        let accuracy = if has(&ACCURACY_INPUTS) {
            let [s_name, y_name] = ACCURACY_INPUTS;
            let (s, n, c) = scores(s_name)?;
            let y = get(y_name, Dtype::I64, "I64")?;
            if y.shape != [n] {
                return Err(shape_err(y_name, format!("[N] = [{n}] (as `{s_name}`)"), &y.shape));
            }
            accuracy::accuracy(Matrix::new(&s, n, c).unwrap(), &y.ints).map_err(|e| metric_err(s_name, y_name, e))?;
            Some((s, y.ints.clone(), n, c))
        } else {
            None
        };
        let map = if has(&MAP_INPUTS) {
            let [pb, ps, pi, gb, gi, ni] = MAP_INPUTS;
            let num = get(ni, Dtype::I64, "I64")?;
            let num_images = match num.ints[..] {
                [n] if n >= 1 && num.shape.len() <= 1 => n as usize,
                _ => return Err(shape_err(ni, "[] holding a count >= 1".into(), &num.shape)),
            };
            let boxes = |name: &str| -> Result<Vec<[f32; 4]>, ParityError> {
                let t = get(name, Dtype::F32, "F32")?;
                if t.shape.len() != 2 || t.shape[1] != 4 {
                    return Err(shape_err(name, "[P, 4]".into(), &t.shape));
                }
                if let Some((index, &value)) = t.floats.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(ParityError::BadValue { path: path.into(), name: name.into(), index, value });
                }
                Ok(t.floats.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
            };
            let image_of = |name: &str, count: usize| -> Result<Vec<usize>, ParityError> {
                let t = get(name, Dtype::I64, "I64")?;
                if t.shape != [count] {
                    return Err(shape_err(name, format!("[{count}]"), &t.shape));
                }
                match t.ints.iter().position(|i| *i < 0 || *i as usize >= num_images) {
                    Some(index) => Err(ParityError::Invalid {
                        path: path.into(),
                        name: name.into(),
                        message: format!("image index {} at {index} is not in 0..{num_images}", t.ints[index]),
                    }),
                    None => Ok(t.ints.iter().map(|i| *i as usize).collect()),
                }
            };
            let pred_boxes = boxes(pb)?;
            let scores = get(ps, Dtype::F32, "F32")?;
            if scores.shape != [pred_boxes.len()] {
                return Err(shape_err(ps, format!("[{}]", pred_boxes.len()), &scores.shape));
            }
            if let Some((index, &value)) = scores.floats.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ParityError::BadValue { path: path.into(), name: ps.into(), index, value });
            }
            let pred_image = image_of(pi, pred_boxes.len())?;
            let gt_boxes = boxes(gb)?;
            let gt_image = image_of(gi, gt_boxes.len())?;
            let mut images = vec![MapImage::default(); num_images];
            for ((b, s), i) in pred_boxes.iter().zip(&scores.floats).zip(&pred_image) {
                images[*i].predictions.push((*b, *s));
            }
            for (b, i) in gt_boxes.iter().zip(&gt_image) {
                images[*i].ground_truth.push(*b);
            }
            Some(images)
        } else {
            None
        };
        let dice = if has(&DICE_INPUTS) {
            let [pn, tn, bn] = DICE_INPUTS;
            let probs = get(pn, Dtype::F32, "F32")?;
            let n = match probs.shape[..] {
                [n, h, w] if n > 0 && h > 0 && w > 0 => n,
                _ => return Err(shape_err(pn, "[N, H, W], each at least 1".into(), &probs.shape)),
            };
            let targets = get(tn, Dtype::F32, "F32")?;
            if targets.shape != probs.shape {
                return Err(shape_err(tn, format!("{:?} (as `{pn}`)", probs.shape), &targets.shape));
            }
            for (name, t) in [(pn, probs), (tn, targets)] {
                if let Some((index, &value)) = t.floats.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
                    return Err(ParityError::BadValue { path: path.into(), name: name.into(), index, value });
                }
            }
            let batch = get(bn, Dtype::I64, "I64")?;
            let batch_size = match batch.ints[..] {
                [b] if b >= 1 && batch.shape.len() <= 1 => b as usize,
                _ => return Err(shape_err(bn, "[] holding a batch size >= 1".into(), &batch.shape)),
            };
            Some((probs.floats.clone(), targets.floats.clone(), n, batch_size))
        } else {
            None
        };
        let reference = stored
            .iter()
            .filter(|(name, t)| {
                (AUROC_OUTPUTS.contains(&name.as_str())
                    || MAP_OUTPUTS.contains(&name.as_str())
                    || DICE_OUTPUTS.contains(&name.as_str())
                    || name.as_str() == ACCURACY_OUTPUT)
                    && t.dtype == Dtype::F32
            })
            .map(|(name, t)| (name.clone(), HostTensor { shape: t.shape.clone(), values: t.floats.clone() }))
            .collect();
        Ok(Self { path: path.into(), auroc, accuracy, map, dice, reference })
    }

    /// Compute every group the case holds: `auroc.per_class` `[C]`, `auroc.macro` `[]`,
    /// `accuracy` `[]`, all f32.
    pub fn run(&self) -> TensorFile {
        let mut out = TensorFile::default();
        if let Some((s, y, n, c)) = &self.auroc {
            let (s, y) = (Matrix::new(s, *n, *c).unwrap(), Matrix::new(y, *n, *c).unwrap());
            let per_class = auroc::auroc_per_class(s, y).expect("validated when read");
            let mean = per_class.iter().sum::<f64>() / per_class.len() as f64;
            let values = per_class.iter().map(|v| *v as f32).collect();
            out.tensors.insert(AUROC_OUTPUTS[0].into(), HostTensor { shape: vec![*c], values });
            out.tensors.insert(AUROC_OUTPUTS[1].into(), HostTensor { shape: vec![], values: vec![mean as f32] });
        }
        if let Some((s, y, n, c)) = &self.accuracy {
            let acc = accuracy::accuracy(Matrix::new(s, *n, *c).unwrap(), y).expect("validated when read");
            out.tensors.insert(ACCURACY_OUTPUT.into(), HostTensor { shape: vec![], values: vec![acc as f32] });
        }
        if let Some(images) = &self.map {
            let r = map::mean_average_precision(images, &map::DETECTION_IOU_THRESHOLDS);
            out.tensors.insert(MAP_OUTPUTS[0].into(), HostTensor { shape: vec![], values: vec![r.map] });
            out.tensors.insert(
                MAP_OUTPUTS[1].into(),
                HostTensor { shape: vec![r.per_threshold.len()], values: r.per_threshold },
            );
        }
        if let Some((probs, targets, n, batch_size)) = &self.dice {
            let per_image = dice::dice_per_image(probs, targets, *n).expect("validated when read");
            let epoch = dice::dice_epoch(&per_image, *batch_size).expect("validated when read");
            out.tensors.insert(DICE_OUTPUTS[0].into(), HostTensor { shape: vec![*n], values: per_image });
            out.tensors.insert(DICE_OUTPUTS[1].into(), HostTensor { shape: vec![], values: vec![epoch as f32] });
        }
        out.metadata.insert("produced_by".into(), format!("mgca {} parity metrics", env!("CARGO_PKG_VERSION")));
        out
    }

    /// Compare our outputs with the reference outputs the case carries (a scalar stored as `[1]`
    /// counts as `[]`), within [`SKLEARN`];
    /// `None` when it carries none.
    pub fn compare(&self, ours: &TensorFile) -> Option<Vec<Agreement>> {
        let lines: Vec<Agreement> = ours
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let mut want = self.reference.get(name)?.clone();
                // A scalar may be stored as `[]` or `[1]` (NumPy's writers differ): the same value.
                if t.shape.is_empty() && want.values.len() == 1 {
                    want.shape.clear();
                }
                let tol = if MAP_OUTPUTS.contains(&name.as_str()) {
                    TORCHMETRICS_MAP
                } else if DICE_OUTPUTS.contains(&name.as_str()) {
                    REFERENCE_DICE
                } else {
                    SKLEARN
                };
                Some(Agreement::measure(name, t, &want, tol))
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{golden, scratch};

    fn write(dir: &Path, name: &str, file: &TensorFile) -> PathBuf {
        let path = dir.join(name);
        file.write(&path).unwrap();
        path
    }

    fn t(shape: &[usize], values: &[f32]) -> HostTensor {
        HostTensor { shape: shape.to_vec(), values: values.to_vec() }
    }

    #[test]
    fn every_committed_case_equals_scikit_learn() {
        for case in ["case_chexpert_like", "case_rsna_imbalanced", "case_covidx_ties"] {
            let case = MetricsCase::read(&golden(&format!("python/metrics/{case}.safetensors"))).unwrap();
            let ours = case.run();
            let lines = case.compare(&ours).unwrap();
            assert_eq!(lines.len(), 3, "{}", case.path.display());
            for a in lines {
                assert!(a.ok, "{}: {a}", case.path.display());
            }
            let acc = ours.tensors[ACCURACY_OUTPUT].values[0];
            assert!((0.0..=1.0).contains(&acc));
        }
    }

    /// The Dice cases made with the reference's `get_dice` (`golden/python/dice/gen_dice_cases.py`):
    /// `dice.per_image` and `dice.epoch` within 1e-6, including a short last batch.
    #[test]
    fn every_committed_dice_case_equals_the_reference() {
        for case in ["case_short_last_batch", "case_mostly_empty", "case_all_positive", "case_one_batch"] {
            let case = MetricsCase::read(&golden(&format!("python/dice/{case}.safetensors"))).unwrap();
            let lines = case.compare(&case.run()).unwrap();
            assert_eq!(lines.len(), 2, "{}", case.path.display());
            for a in lines {
                assert!(a.ok, "{}: {a}", case.path.display());
            }
        }
    }

    /// The mean-average-precision cases made with torchmetrics 0.8.2
    /// (`golden/python/map/gen_map_cases.py`): `map.map` and `map.per_threshold` within 1e-6.
    #[test]
    fn every_committed_map_case_equals_torchmetrics() {
        for case in ["case_mixed", "case_hundred_objects", "case_crowded", "case_tight"] {
            let case = MetricsCase::read(&golden(&format!("python/map/{case}.safetensors"))).unwrap();
            let ours = case.run();
            let lines = case.compare(&ours).unwrap();
            assert_eq!(lines.len(), 2, "{}", case.path.display());
            for a in lines {
                assert!(a.ok, "{}: {a}", case.path.display());
            }
            assert_eq!(ours.tensors["map.per_threshold"].shape, vec![8]);
        }
    }

    /// An image index beyond `map.num_images` is bad input naming the tensor.
    #[test]
    fn a_map_case_with_a_stray_image_index_is_refused() {
        let dir = scratch("parity-metrics-map-bad");
        let mut file = TensorFile::default();
        file.tensors.insert("map.pred_boxes".into(), t(&[1, 4], &[0.0, 0.0, 10.0, 10.0]));
        file.tensors.insert("map.pred_scores".into(), t(&[1], &[0.9]));
        file.ints.insert("map.pred_image".into(), (vec![1], vec![3]));
        file.tensors.insert("map.gt_boxes".into(), t(&[1, 4], &[0.0, 0.0, 10.0, 10.0]));
        file.ints.insert("map.gt_image".into(), (vec![1], vec![0]));
        file.ints.insert("map.num_images".into(), (vec![], vec![2]));
        let err = MetricsCase::read(&write(&dir, "bad.safetensors", &file)).unwrap_err().to_string();
        assert!(err.contains("map.pred_image") && err.contains("0..2"), "{err}");
        file.ints.insert("map.pred_image".into(), (vec![1], vec![1]));
        let case = MetricsCase::read(&write(&dir, "ok.safetensors", &file)).unwrap();
        // Image 0: one box, no detection; image 1: one false positive. AP = 0.
        assert_eq!(case.run().tensors["map.map"].values, vec![0.0]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn one_group_alone_and_a_hand_computed_auroc() {
        let dir = scratch("parity-metrics-one");
        let mut file = TensorFile::default();
        // Column 0: positives 0.9 and 0.4 against 0.5 and 0.1: 3 of 4 pairs ordered.
        file.tensors.insert("auroc.scores".into(), t(&[4, 1], &[0.9, 0.5, 0.4, 0.1]));
        file.tensors.insert("auroc.labels".into(), t(&[4, 1], &[1.0, 0.0, 1.0, 0.0]));
        let case = MetricsCase::read(&write(&dir, "a.safetensors", &file)).unwrap();
        let out = case.run();
        assert_eq!(out.tensors["auroc.per_class"], t(&[1], &[0.75]));
        assert_eq!(out.tensors["auroc.macro"], t(&[], &[0.75]));
        assert!(!out.tensors.contains_key(ACCURACY_OUTPUT));
        assert!(case.compare(&out).is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_cases_name_the_tensor_and_the_problem() {
        let dir = scratch("parity-metrics-bad");
        let scores = t(&[3, 1], &[0.2, 0.7, 0.4]);
        let labels = t(&[3, 1], &[0.0, 1.0, 0.0]);
        let ok = || {
            let mut f = TensorFile::default();
            f.tensors.insert("auroc.scores".into(), scores.clone());
            f.tensors.insert("auroc.labels".into(), labels.clone());
            f.tensors.insert("accuracy.scores".into(), t(&[3, 2], &[0.1, 0.9, 0.8, 0.2, 0.5, 0.5]));
            f.ints.insert("accuracy.labels".into(), (vec![3], vec![1, 0, 0]));
            f
        };
        type Edit = Box<dyn Fn(&mut TensorFile)>;
        let cases: Vec<(&str, Edit, &[&str])> = vec![
            ("empty", Box::new(|f| *f = TensorFile::default()), &["no metric to compute"]),
            ("no-labels", Box::new(|f| drop(f.tensors.remove("auroc.labels"))), &["missing tensor `auroc.labels`"]),
            (
                "f32-labels",
                Box::new(|f| {
                    f.ints.remove("accuracy.labels");
                    f.tensors.insert("accuracy.labels".into(), t(&[3], &[1.0, 0.0, 0.0]));
                }),
                &["`accuracy.labels` is F32, expected I64"],
            ),
            (
                "rank",
                Box::new(|f| f.tensors.get_mut("auroc.scores").unwrap().shape = vec![3]),
                &["`auroc.scores`", "[N, C]"],
            ),
            (
                "shape",
                Box::new(|f| drop(f.tensors.insert("auroc.labels".into(), t(&[1, 3], &[0.0, 1.0, 0.0])))),
                &["`auroc.labels`", "[3, 1]"],
            ),
            (
                "label-2",
                Box::new(|f| f.tensors.get_mut("auroc.labels").unwrap().values[2] = 2.0),
                &["`auroc.labels`", "not 0 or 1"],
            ),
            (
                "one-class",
                Box::new(|f| f.tensors.get_mut("auroc.labels").unwrap().values.fill(1.0)),
                &["`auroc.labels`", "only one label value"],
            ),
            (
                "nan",
                Box::new(|f| f.tensors.get_mut("accuracy.scores").unwrap().values[3] = f32::NAN),
                &["`accuracy.scores`", "NaN"],
            ),
            (
                "class-out-of-range",
                Box::new(|f| f.ints.get_mut("accuracy.labels").unwrap().1[0] = 7),
                &["`accuracy.labels`", "7"],
            ),
        ];
        MetricsCase::read(&write(&dir, "ok.safetensors", &ok())).unwrap();
        for (name, edit, words) in cases {
            let mut f = ok();
            edit(&mut f);
            let err = MetricsCase::read(&write(&dir, &format!("{name}.safetensors"), &f)).unwrap_err().to_string();
            for word in words {
                assert!(err.contains(word), "{name}: `{err}` does not name `{word}`");
            }
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
