//! The loss case: the `in.*` tensors the reference's loss block received, its `out.*` scalars
//! and `grad.*` gradients, and a JSON description in the metadata key `fixture` (`encoder`,
//! `hparams`), as in `golden/reference/losses/` (layout: that folder's README).
//!
//! A case is checked before it runs: every tensor present, float32, finite and of a shape that
//! agrees with the others; the `hparams` in the objective's ranges (named by the reference's
//! keys, `hparams.local_temperature`); attention weights >= 0; at least one real word slot per
//! sample; ε above the f32 overflow floor for the case's `K × N` scores. Outputs that are still
//! not finite are refused ([`LossCase::check_finite`]) rather than written.
//!
//! Book: "Parity with the reference" and "The objective at a glance". Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA.forward` (the ITA, CTA and CPA losses) and
//! `MGCA.sinkhorn`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none; tolerances are the fixtures' ([`super::LOSS_SCALARS`],
//! [`super::LOSS_GRADIENTS`]). Where the reference returns NaN (a temperature of 0, a report
//! with every word slot padded), this is bad input here.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Tensor};
use serde::Deserialize;

use super::{Agreement, LOSS_GRADIENTS, LOSS_SCALARS, ParityError};
use crate::backend::{CpuAutodiff, cpu_device};
use crate::config::ImageEncoderKind;
use crate::loss::{CtaEngine, Objective, ObjectiveConfig, ObjectiveInputs, normalize_prototypes};
use crate::tensor_file::{HostTensor, TensorFile};

/// The tensor `name` of `file` (read from `path`), or an error naming both.
pub(crate) fn tensor<'a>(file: &'a TensorFile, path: &Path, name: &str) -> Result<&'a HostTensor, ParityError> {
    file.tensors.get(name).ok_or_else(|| ParityError::MissingTensor { path: path.into(), name: name.into() })
}

/// The `fixture` metadata of a loss case.
#[derive(Debug, Clone, Deserialize)]
struct FixtureMeta {
    encoder: String,
    #[serde(default)]
    hparams: Hparams,
}

/// The reference's hyperparameter names; absent fields keep the reference's values.
#[derive(Debug, Clone, Default, Deserialize)]
struct Hparams {
    ita_temperature: Option<f32>,
    local_temperature: Option<f32>,
    proto_temperature: Option<f32>,
    epsilon: Option<f32>,
    sinkhorn_iterations: Option<usize>,
    lambdas: Option<[f32; 3]>,
    bidirectional: Option<bool>,
}

/// The objective's fields the `hparams` set, by the reference's names.
const HPARAM_NAMES: [(&str, &str); 8] = [
    ("ita.temperature", "ita_temperature"),
    ("cta.temperature", "local_temperature"),
    ("cpa.temperature", "proto_temperature"),
    ("cpa.sinkhorn.epsilon", "epsilon"),
    ("cpa.sinkhorn.iterations", "sinkhorn_iterations"),
    ("lambda_ita", "lambdas[0]"),
    ("lambda_cta", "lambdas[1]"),
    ("lambda_cpa", "lambdas[2]"),
];

/// A validated loss case: its configuration and inputs.
#[derive(Debug, Clone)]
pub struct LossCase {
    /// Where it was read from.
    pub path: PathBuf,
    /// Which CTA branch the case exercises.
    pub encoder: ImageEncoderKind,
    /// The objective, from the reference's defaults and the case's `hparams`.
    pub config: ObjectiveConfig,
    /// Everything the file holds (inputs, and reference outputs when present).
    pub file: TensorFile,
}

/// Names of the scalar outputs, in the order they are written and reported.
pub const SCALARS: [&str; 6] =
    ["out.loss_ita", "out.loss_local", "out.loss_proto", "out.loss_total", "out.acc1", "out.acc5"];
/// Names of the gradients, with the input each belongs to.
pub const GRADIENTS: [(&str, &str); 5] = [
    ("grad.img_emb", "in.img_emb"),
    ("grad.patch_emb", "in.patch_emb"),
    ("grad.report_emb", "in.report_emb"),
    ("grad.word_emb", "in.word_emb"),
    ("grad.prototypes", "in.prototypes"),
];

impl LossCase {
    /// Read and validate a case: every required tensor present, float32, finite, with shapes
    /// that agree (`N` samples, `D` width, `M` patches, `W` word slots, `K` prototypes).
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        let file = TensorFile::read(path)?;
        let meta_err = |message: String| ParityError::Metadata { path: path.into(), message };
        let raw = file.metadata.get("fixture").ok_or_else(|| meta_err("missing".into()))?;
        let meta: FixtureMeta = serde_json::from_str(raw).map_err(|e| meta_err(e.to_string()))?;
        let encoder = ImageEncoderKind::from_reference_name(&meta.encoder)
            .ok_or_else(|| meta_err(format!("unknown encoder `{}` (vit_base or resnet_50)", meta.encoder)))?;
        let mut config = ObjectiveConfig::reference(encoder);
        let h = meta.hparams;
        if let Some(v) = h.ita_temperature {
            config.ita.temperature = v;
        }
        if let Some(v) = h.local_temperature {
            config.cta.temperature = v;
        }
        if let Some(v) = h.proto_temperature {
            config.cpa.temperature = v;
        }
        if let Some(v) = h.epsilon {
            config.cpa.sinkhorn.epsilon = v;
        }
        if let Some(v) = h.sinkhorn_iterations {
            config.cpa.sinkhorn.iterations = v;
        }
        if let Some([a, b, c]) = h.lambdas {
            (config.lambda_ita, config.lambda_cta, config.lambda_cpa) = (a, b, c);
        }
        if let Some(v) = h.bidirectional {
            config.cta.bidirectional = v;
        }
        if let Err(mut e) = config.validate() {
            for field in &mut e.fields {
                if let Some((_, key)) = HPARAM_NAMES.iter().find(|(ours, _)| *ours == field.path) {
                    field.path = format!("hparams.{key}");
                }
            }
            return Err(meta_err(e.to_string()));
        }
        let case = Self { path: path.into(), encoder, config, file };
        case.validate()?;
        Ok(case)
    }

    fn validate(&self) -> Result<(), ParityError> {
        let path = self.path.as_path();
        let shape_err = |name: &str, expected: String, got: &[usize]| ParityError::Shape {
            path: path.into(),
            name: name.into(),
            expected,
            got: got.to_vec(),
        };
        let img = tensor(&self.file, path, "in.img_emb")?;
        let [n, d] = img.shape[..] else {
            return Err(shape_err("in.img_emb", "[N, D]".into(), &img.shape));
        };
        let patch = tensor(&self.file, path, "in.patch_emb")?;
        let m = *patch.shape.get(1).unwrap_or(&0);
        let word = tensor(&self.file, path, "in.word_emb")?;
        let w = *word.shape.get(1).unwrap_or(&0);
        let protos = tensor(&self.file, path, "in.prototypes")?;
        let k = *protos.shape.first().unwrap_or(&0);
        let mut expected: Vec<(&str, Vec<usize>, &str)> = vec![
            ("in.img_emb", vec![n, d], "[N, D]"),
            ("in.report_emb", vec![n, d], "[N, D]"),
            ("in.patch_emb", vec![n, m, d], "[N, M, D]"),
            ("in.word_emb", vec![n, w, d], "[N, W, D]"),
            ("in.word_attn", vec![n, w], "[N, W]"),
            ("in.word_pad_mask", vec![n, w], "[N, W]"),
            ("in.prototypes", vec![k, d], "[K, D]"),
        ];
        let heads = self.file.tensors.get("in.vit_cls_attn").and_then(|t| t.shape.get(1).copied()).unwrap_or(1);
        if self.encoder == ImageEncoderKind::VitBase {
            expected.push(("in.vit_cls_attn", vec![n, heads, m], "[N, H, M]"));
        }
        for (name, shape, pattern) in expected {
            let t = tensor(&self.file, path, name)?;
            if t.shape != shape || shape.contains(&0) {
                let sizes = format!("{pattern} = {shape:?} (N={n}, D={d}, M={m}, W={w}, K={k})");
                return Err(shape_err(name, sizes, &t.shape));
            }
            if let Some((index, &value)) = t.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ParityError::BadValue { path: path.into(), name: name.into(), index, value });
            }
        }
        let mask = tensor(&self.file, path, "in.word_pad_mask")?;
        if let Some((index, &value)) = mask.values.iter().enumerate().find(|(_, v)| **v != 0.0 && **v != 1.0) {
            return Err(ParityError::BadValue { path: path.into(), name: "in.word_pad_mask".into(), index, value });
        }
        // A report has at least its [SEP] slot; with every slot padded, CTA's patch side
        // attends over no word (a softmax of nothing: NaN in the reference too).
        if let Some(sample) = mask.values.chunks(w).position(|row| row.iter().all(|v| *v == 1.0)) {
            return Err(ParityError::Invalid {
                path: path.into(),
                name: "in.word_pad_mask".into(),
                message: format!(
                    "sample {sample} has all {w} word slots padded: every report needs at least one real word \
                     slot (its [SEP]) for CTA to attend over"
                ),
            });
        }
        let mut attention = vec!["in.word_attn"];
        if self.encoder == ImageEncoderKind::VitBase {
            attention.push("in.vit_cls_attn");
        }
        for name in attention {
            let t = tensor(&self.file, path, name)?;
            if let Some((index, &value)) = t.values.iter().enumerate().find(|(_, v)| **v < 0.0) {
                return Err(ParityError::Invalid {
                    path: path.into(),
                    name: name.into(),
                    message: format!("holds {value} at flat index {index}: attention weights must be >= 0"),
                });
            }
        }
        let epsilon = self.config.cpa.sinkhorn.epsilon;
        let floor = crate::loss::SinkhornConfig::min_epsilon(k.saturating_mul(n));
        if (epsilon as f64) < floor {
            return Err(ParityError::Metadata {
                path: path.into(),
                message: format!(
                    "hparams.epsilon = {epsilon} (allowed: >= {floor:.4}: below it exp(1/epsilon) summed over \
                     K x N = {k} x {n} scores overflows f32)"
                ),
            });
        }
        Ok(())
    }

    /// Refuse outputs that are not finite (NaN or infinite losses or gradients), naming the
    /// first such tensor: a value the reference would also have produced is still not a result.
    pub fn check_finite(&self, ours: &TensorFile) -> Result<(), ParityError> {
        // The losses first: a non-finite loss is the cause of non-finite gradients.
        let names = SCALARS.iter().chain(GRADIENTS.iter().map(|(g, _)| g));
        for name in names {
            let Some(t) = ours.tensors.get(*name) else { continue };
            if let Some(&value) = t.values.iter().find(|v| !v.is_finite()) {
                return Err(ParityError::NonFinite { path: self.path.clone(), name: name.to_string(), value });
            }
        }
        Ok(())
    }

    /// Run the objective forward and backward on the CPU, with CTA computed by `engine`, and
    /// return what the command writes: the six `out.*` scalars (shape `[1]`) and the five
    /// `grad.*` tensors.
    pub fn run(&self, engine: CtaEngine) -> TensorFile {
        let dev = cpu_device();
        let input = |name: &str| &self.file.tensors[name];
        let leaf2 = |name: &str| input(name).to_tensor::<CpuAutodiff, 2>(&dev).require_grad();
        let leaf3 = |name: &str| input(name).to_tensor::<CpuAutodiff, 3>(&dev).require_grad();
        let (img, report) = (leaf2("in.img_emb"), leaf2("in.report_emb"));
        let (patch, word) = (leaf3("in.patch_emb"), leaf3("in.word_emb"));
        // The reference re-normalises the prototype parameter in place, then differentiates
        // with respect to the normalised rows: make those rows the leaf.
        let protos = normalize_prototypes(input("in.prototypes").to_tensor::<CpuAutodiff, 2>(&dev)).require_grad();
        let word_pad: Tensor<CpuAutodiff, 2, Bool> =
            input("in.word_pad_mask").to_tensor::<CpuAutodiff, 2>(&dev).greater_elem(0.5);
        let patch_attn = (self.encoder == ImageEncoderKind::VitBase)
            .then(|| input("in.vit_cls_attn").to_tensor::<CpuAutodiff, 3>(&dev));

        let out = Objective::new(self.config.clone()).with_engine(engine).forward(ObjectiveInputs {
            img_emb: img.clone(),
            report_emb: report.clone(),
            patch_emb: patch.clone(),
            word_emb: word.clone(),
            word_attn: input("in.word_attn").to_tensor(&dev),
            word_pad,
            patch_attn,
            prototypes: protos.clone(),
        });
        let grads = out.total.backward();

        let mut result = TensorFile::default();
        let scalars = [out.ita, out.local, out.proto, out.total, out.acc1, out.acc5];
        for (name, value) in SCALARS.iter().zip(scalars) {
            result.tensors.insert(name.to_string(), HostTensor::from_tensor(value.inner()));
        }
        let grad2 = |t: &Tensor<CpuAutodiff, 2>| HostTensor::from_tensor(t.grad(&grads).expect("leaf has a gradient"));
        let grad3 = |t: &Tensor<CpuAutodiff, 3>| HostTensor::from_tensor(t.grad(&grads).expect("leaf has a gradient"));
        result.tensors.insert("grad.img_emb".into(), grad2(&img));
        result.tensors.insert("grad.patch_emb".into(), grad3(&patch));
        result.tensors.insert("grad.report_emb".into(), grad2(&report));
        result.tensors.insert("grad.word_emb".into(), grad3(&word));
        result.tensors.insert("grad.prototypes".into(), grad2(&protos));
        if let Some(fixture) = self.file.metadata.get("fixture") {
            result.metadata.insert("fixture".into(), fixture.clone());
        }
        result.metadata.insert("produced_by".into(), format!("mgca {} parity losses", env!("CARGO_PKG_VERSION")));
        result
    }

    /// Compare our outputs with the reference's `out.*` and `grad.*` tensors held in the case,
    /// if any. Returns one line per tensor; `None` when the case carries no reference outputs.
    pub fn compare(&self, ours: &TensorFile) -> Option<Vec<Agreement>> {
        let names =
            SCALARS.iter().map(|s| (*s, LOSS_SCALARS)).chain(GRADIENTS.iter().map(|(g, _)| (*g, LOSS_GRADIENTS)));
        let lines: Vec<Agreement> = names
            .filter_map(|(name, tol)| {
                let want = self.file.tensors.get(name)?;
                Some(Agreement::measure(name, &ours.tensors[name], want, tol))
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    }
}
