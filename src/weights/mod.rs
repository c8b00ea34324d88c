//! Reading checkpoints into modules: keys looked up by name, shapes checked, PyTorch layouts
//! converted (a torch `Linear` stores `[out, in]`, burn `[in, out]`), and every key the model
//! did not take reported.
//!
//! Spec: `architecture.md` §1 (checkpoint key layout).
//!
//! **Deviation:** none; unused keys are not an error (a DeiT checkpoint carries a classifier
//! `head.*` that MGCA discards, as the reference's non-strict load does), but they are reported.

use std::collections::BTreeSet;
use std::fmt;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::parity::TensorFile;

/// Why a checkpoint does not fit a model. Every variant names the key.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightError {
    /// The model needs a key the checkpoint lacks.
    Missing(String),
    /// A key's tensor has another shape than the model's parameter.
    Shape { key: String, expected: Vec<usize>, got: Vec<usize> },
    /// The checkpoint describes an architecture that cannot be built.
    Architecture(String),
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "checkpoint is missing `{key}`"),
            Self::Shape { key, expected, got } => {
                write!(f, "checkpoint key `{key}` has shape {got:?}, the model needs {expected:?}")
            }
            Self::Architecture(what) => write!(f, "checkpoint architecture: {what}"),
        }
    }
}

impl std::error::Error for WeightError {}

/// A checkpoint's tensors, handed out by key, remembering which were taken.
#[derive(Debug, Clone)]
pub struct WeightReader {
    file: TensorFile,
    used: BTreeSet<String>,
}

impl WeightReader {
    /// Wrap the tensors of a checkpoint.
    pub fn new(file: TensorFile) -> Self {
        Self { file, used: BTreeSet::new() }
    }

    /// Whether the checkpoint holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.file.tensors.contains_key(key)
    }

    /// The shape stored under `key`.
    pub fn shape(&self, key: &str) -> Result<Vec<usize>, WeightError> {
        self.file.tensors.get(key).map(|t| t.shape.clone()).ok_or_else(|| WeightError::Missing(key.into()))
    }

    /// The tensor under `key`, which must have shape `expected`; marks it used.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        device: &B::Device,
        key: &str,
        expected: &[usize],
    ) -> Result<Tensor<B, D>, WeightError> {
        let t = self.file.tensors.get(key).ok_or_else(|| WeightError::Missing(key.into()))?;
        if t.shape != expected {
            return Err(WeightError::Shape { key: key.into(), expected: expected.to_vec(), got: t.shape.clone() });
        }
        self.used.insert(key.into());
        Ok(t.to_tensor(device))
    }

    /// [`WeightReader::tensor`] as a trainable parameter.
    pub fn param<B: Backend, const D: usize>(
        &mut self,
        device: &B::Device,
        key: &str,
        expected: &[usize],
    ) -> Result<Param<Tensor<B, D>>, WeightError> {
        self.tensor(device, key, expected).map(Param::from_tensor)
    }

    /// A torch `Linear` (`{prefix}.weight` `[out, in]`, `{prefix}.bias` `[out]`) into `linear`.
    pub fn linear<B: Backend>(
        &mut self,
        device: &B::Device,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        linear: &mut Linear<B>,
    ) -> Result<(), WeightError> {
        let w: Tensor<B, 2> = self.tensor(device, &format!("{prefix}.weight"), &[d_out, d_in])?;
        linear.weight = Param::from_tensor(w.transpose()); // burn: [in, out]
        linear.bias = Some(self.param(device, &format!("{prefix}.bias"), &[d_out])?);
        Ok(())
    }

    /// A torch `LayerNorm` (`{prefix}.weight`, `{prefix}.bias`, both `[d]`) into `norm`.
    pub fn layer_norm<B: Backend>(
        &mut self,
        device: &B::Device,
        prefix: &str,
        d: usize,
        norm: &mut LayerNorm<B>,
    ) -> Result<(), WeightError> {
        norm.gamma = self.param(device, &format!("{prefix}.weight"), &[d])?;
        norm.beta = Some(self.param(device, &format!("{prefix}.bias"), &[d])?);
        Ok(())
    }

    /// Mark `key` as deliberately not loaded, if the checkpoint has it (a BatchNorm's
    /// `num_batches_tracked`, modules MGCA never runs): it then counts as taken, not unused.
    pub fn set_aside(&mut self, key: &str) {
        if self.contains(key) {
            self.used.insert(key.into());
        }
    }

    /// Keys of the checkpoint that no parameter took, sorted.
    pub fn unused(&self) -> Vec<String> {
        self.file.tensors.keys().filter(|k| !self.used.contains(*k)).cloned().collect()
    }
}
