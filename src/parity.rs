//! Parity with the reference: read a case the reference computed, run our implementation on
//! its inputs, write our outputs in the same layout, and compare.
//!
//! A loss case (`shared/fixtures/losses/*.safetensors`, copied to `golden/reference/losses/`)
//! holds the `in.*` tensors the reference's loss block received, its `out.*` scalars and
//! `grad.*` gradients, and a JSON description in the metadata key `fixture` (`encoder`,
//! `hparams`). Spec: `losses.md` §2–§5; fixture layout: the fixtures' README.
//!
//! A case is checked before it runs: every tensor present, float32, finite and of a shape that
//! agrees with the others; the `hparams` in the objective's ranges (named by the reference's
//! keys, `hparams.local_temperature`); attention weights >= 0; at least one real word slot per
//! sample; ε above the f32 overflow floor for the case's `K × N` scores. Outputs that are still
//! not finite are refused ([`LossCase::check_finite`]) rather than written.
//!
//! **Deviation:** none; tolerances are the fixtures': losses within 1e-5 relative, gradients
//! within 1e-6 absolute + 1e-4 relative. Where the reference returns NaN (a temperature of 0,
//! a report with every word slot padded), this is bad input here.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::Deserialize;

use crate::backend::{CpuAutodiff, cpu_device};
use crate::config::ImageEncoderKind;
use crate::loss::{CtaEngine, Objective, ObjectiveConfig, ObjectiveInputs, normalize_prototypes};

/// Why a case could not be read, run or written. Every variant names the file or tensor.
#[derive(Debug)]
pub enum ParityError {
    /// The file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a valid safetensors file.
    Format { path: PathBuf, message: String },
    /// The `fixture` metadata is missing or malformed.
    Metadata { path: PathBuf, message: String },
    /// A required tensor is absent.
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong element type.
    DType { path: PathBuf, name: String, dtype: String },
    /// A tensor's shape does not fit the case.
    Shape { path: PathBuf, name: String, expected: String, got: Vec<usize> },
    /// A tensor holds a NaN or an infinity, or a mask holds something other than 0 or 1.
    BadValue { path: PathBuf, name: String, index: usize, value: f32 },
    /// A tensor's values are each valid but together not a case the objective is defined on.
    Invalid { path: PathBuf, name: String, message: String },
    /// Our output is not finite: the case lies outside the range where the objective is.
    NonFinite { path: PathBuf, name: String, value: f32 },
}

impl fmt::Display for ParityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Format { path, message } => write!(f, "{}: not a safetensors file: {message}", path.display()),
            Self::Metadata { path, message } => write!(f, "{}: metadata `fixture`: {message}", path.display()),
            Self::MissingTensor { path, name } => write!(f, "{}: missing tensor `{name}`", path.display()),
            Self::DType { path, name, dtype } => {
                write!(f, "{}: tensor `{name}` is {dtype}, expected F32", path.display())
            }
            Self::Shape { path, name, expected, got } => {
                write!(f, "{}: tensor `{name}` has shape {got:?}, expected {expected}", path.display())
            }
            Self::BadValue { path, name, index, value } => {
                write!(f, "{}: tensor `{name}` holds {value} at flat index {index}", path.display())
            }
            Self::Invalid { path, name, message } => write!(f, "{}: tensor `{name}`: {message}", path.display()),
            Self::NonFinite { path, name, value } => write!(
                f,
                "{}: the objective on this case gives {value} in `{name}`: its inputs or hparams are outside the \
                 range where the loss is finite (a temperature or epsilon so small that exp overflows f32?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ParityError {}

/// A float32 tensor read from or written to a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copy a burn tensor to the host.
    pub fn from_tensor<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        let values = t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 data");
        Self { shape, values }
    }

    /// Copy to a burn tensor on `device` (the rank must match the shape).
    pub fn to_tensor<B: burn::tensor::backend::Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(self.values.clone(), self.shape.clone()), device)
    }
}

/// FNV-1a (64 bit) of `bytes` as 16 hex digits: how the golden files record large outputs
/// (images, checkpoint tensors) without a copy of them. Python: `h = (h ^ b) * 0x100000001b3`.
pub fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Deterministic tokenised reports for tests and benchmarks, `[n, l]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticReports {
    /// Token strings: `[CLS]`, words `w{j}` and pieces `##p{j}`, `[SEP]`, `[PAD]`.
    pub tokens: Vec<Vec<String>>,
    /// Token ids, 0 on padding.
    pub ids: Vec<i64>,
    /// 1 on real tokens.
    pub mask: Vec<f32>,
}

/// Report `b` has `length(b)` real tokens (`[CLS]` and `[SEP]` included), padded to `l`; token
/// `j` is a `##` piece when `j % piece_every == piece_every − 1`; ids are `id(b, j)`, called
/// for every position in order (so a stateful generator advances over padding too) and
/// replaced by 0 on padding.
pub fn synthetic_reports(
    n: usize,
    l: usize,
    length: impl Fn(usize) -> usize,
    piece_every: usize,
    mut id: impl FnMut(usize, usize) -> i64,
) -> SyntheticReports {
    let mut tokens = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n * l);
    for b in 0..n {
        let len = length(b);
        tokens.push(
            (0..l)
                .map(|j| match j {
                    0 => "[CLS]".to_string(),
                    j if j == len - 1 => "[SEP]".to_string(),
                    j if j >= len => "[PAD]".to_string(),
                    j if j % piece_every == piece_every - 1 => format!("##p{j}"),
                    j => format!("w{j}"),
                })
                .collect::<Vec<_>>(),
        );
        for j in 0..l {
            let v = id(b, j);
            ids.push(if j < len { v } else { 0 });
        }
    }
    let mask = tokens.iter().flat_map(|r| r.iter().map(|t| (t != "[PAD]") as i32 as f32)).collect();
    SyntheticReports { tokens, ids, mask }
}

/// Deterministic test images `[n, 3, size, size]` that need no file:
/// `x[b, c, i, j] = sin(0.05 (c + 1) i + 0.07 j + b) · cos(0.03 (i + j)(b + 1))`, computed in
/// f64 and rounded to f32, exactly as `golden/pytorch/resnet/make_resnet.py` computes them.
pub fn formula_images(n: usize, size: usize) -> HostTensor {
    let mut values = Vec::with_capacity(n * 3 * size * size);
    for b in 0..n {
        for c in 0..3 {
            for i in 0..size {
                for j in 0..size {
                    let (bf, cf, fi, fj) = (b as f64, c as f64, i as f64, j as f64);
                    let v = (0.05 * (cf + 1.0) * fi + 0.07 * fj + bf).sin() * (0.03 * (fi + fj) * (bf + 1.0)).cos();
                    values.push(v as f32);
                }
            }
        }
    }
    HostTensor { shape: vec![n, 3, size, size], values }
}

/// A safetensors file: float32 tensors by name and string metadata.
#[derive(Debug, Clone, Default)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Integer tensors to write (token ids) as I64: shape and values.
    pub ints: BTreeMap<String, (Vec<usize>, Vec<i64>)>,
    /// The header's `__metadata__`.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Read every tensor of `path`; all must be float32.
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        Self::read_converting(path, false)
    }

    /// Read every tensor of `path`, converting F64, I64 and I32 tensors (a checkpoint's integer
    /// buffers, token ids) to f32; an integer that f32 cannot hold exactly is an error.
    pub fn read_numeric(path: &Path) -> Result<Self, ParityError> {
        Self::read_converting(path, true)
    }

    fn read_converting(path: &Path, convert: bool) -> Result<Self, ParityError> {
        let bytes = std::fs::read(path).map_err(|source| ParityError::Io { path: path.into(), source })?;
        let format =
            |e: safetensors::SafeTensorError| ParityError::Format { path: path.into(), message: e.to_string() };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
        let file = SafeTensors::deserialize(&bytes).map_err(format)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let bytes = view.data();
            let ints = |wide: Vec<i64>| -> Result<Vec<f32>, ParityError> {
                match wide.iter().position(|v| v.unsigned_abs() > 1 << 24) {
                    Some(index) => Err(ParityError::BadValue {
                        path: path.into(),
                        name: name.clone(),
                        index,
                        value: wide[index] as f32,
                    }),
                    None => Ok(wide.into_iter().map(|v| v as f32).collect()),
                }
            };
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::F64 if convert => {
                    bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
                }
                Dtype::I64 if convert => {
                    ints(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect())?
                }
                Dtype::I32 if convert => {
                    ints(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect())?
                }
                other => return Err(ParityError::DType { path: path.into(), name, dtype: format!("{other:?}") }),
            };
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), values });
        }
        Ok(Self { tensors, ints: BTreeMap::new(), metadata: header.metadata().clone().unwrap_or_default() })
    }

    /// Write all tensors (float32 and int64, little-endian) and the metadata to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ParityError> {
        let floats = self.tensors.iter().map(|(name, t)| {
            (name, Dtype::F32, t.shape.clone(), t.values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        });
        let ints = self.ints.iter().map(|(name, (shape, v))| {
            (name, Dtype::I64, shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
        });
        let bytes: Vec<_> = floats.chain(ints).collect();
        let views = bytes.iter().map(|(name, dtype, shape, b)| {
            (name.as_str(), TensorView::new(*dtype, shape.clone(), b).expect("consistent view"))
        });
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::tensor::serialize_to_file(views, metadata, path)
            .map_err(|e| ParityError::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })
    }

    fn get(&self, path: &Path, name: &str) -> Result<&HostTensor, ParityError> {
        self.tensors.get(name).ok_or_else(|| ParityError::MissingTensor { path: path.into(), name: name.into() })
    }
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
        let img = self.file.get(path, "in.img_emb")?;
        let [n, d] = img.shape[..] else {
            return Err(shape_err("in.img_emb", "[N, D]".into(), &img.shape));
        };
        let patch = self.file.get(path, "in.patch_emb")?;
        let m = *patch.shape.get(1).unwrap_or(&0);
        let word = self.file.get(path, "in.word_emb")?;
        let w = *word.shape.get(1).unwrap_or(&0);
        let protos = self.file.get(path, "in.prototypes")?;
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
            let t = self.file.get(path, name)?;
            if t.shape != shape || shape.contains(&0) {
                let sizes = format!("{pattern} = {shape:?} (N={n}, D={d}, M={m}, W={w}, K={k})");
                return Err(shape_err(name, sizes, &t.shape));
            }
            if let Some((index, &value)) = t.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ParityError::BadValue { path: path.into(), name: name.into(), index, value });
            }
        }
        let mask = self.file.get(path, "in.word_pad_mask")?;
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
            let t = self.file.get(path, name)?;
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
        let names = SCALARS
            .iter()
            .map(|s| (*s, Tolerance::SCALAR))
            .chain(GRADIENTS.iter().map(|(g, _)| (*g, Tolerance::GRADIENT)));
        let lines: Vec<Agreement> = names
            .filter_map(|(name, tol)| {
                let want = self.file.tensors.get(name)?;
                Some(Agreement::measure(name, &ours.tensors[name], want, tol))
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    }
}

// ANCHOR: compare
/// `|ours − reference| ≤ abs + rel·|reference|`, element-wise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part.
    pub rel: f64,
}

impl Tolerance {
    /// Scalar losses and accuracies: 1e-5 relative.
    pub const SCALAR: Tolerance = Tolerance { abs: 0.0, rel: 1e-5 };
    /// Gradients: 1e-6 absolute + 1e-4 relative.
    pub const GRADIENT: Tolerance = Tolerance { abs: 1e-6, rel: 1e-4 };
}

/// How closely one tensor of ours agrees with the reference's.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// Tensor name.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `‖ours − reference‖₂ / ‖reference‖₂` (0 when both are 0): the error of the tensor as a
    /// whole, which tiny entries cannot inflate.
    pub norm_rel: f64,
    /// Whether every element is within the tolerance (and the shapes agree).
    pub ok: bool,
}

impl Agreement {
    /// Measure `ours` against `reference` under `tol`.
    pub fn measure(name: &str, ours: &HostTensor, reference: &HostTensor, tol: Tolerance) -> Self {
        let mut a = Agreement { name: name.into(), max_abs: 0.0, norm_rel: 0.0, ok: ours.shape == reference.shape };
        let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
        for (&o, &r) in ours.values.iter().zip(&reference.values) {
            let (o, r) = (o as f64, r as f64);
            let diff = (o - r).abs();
            a.max_abs = a.max_abs.max(diff);
            diff2 += diff * diff;
            ref2 += r * r;
            // Written so that a NaN fails.
            a.ok &= diff <= tol.abs + tol.rel * r.abs();
        }
        a.norm_rel = if ref2 > 0.0 { (diff2 / ref2).sqrt() } else { diff2.sqrt() };
        a
    }
}

// ANCHOR_END: compare

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok" } else { "FAIL" };
        write!(f, "{:<18} max |Δ| {:.2e}  ‖Δ‖/‖ref‖ {:.2e}  {verdict}", self.name, self.max_abs, self.norm_rel)
    }
}
