//! Reading checkpoints into modules: keys looked up by name, shapes checked, PyTorch layouts
//! converted (a torch `Linear` stores `[out, in]`, burn `[in, out]`), and every key the model
//! did not take reported.
//!
//! Loading a whole published checkpoint into the module it initialises is one level up, in
//! `model::import` (this module knows tensors and keys, not models).
//!
//! Book: "Checkpoints and weight loading". Reference: `mgca/models/backbones/encoder.py`,
//! `ImageEncoder.__init__` and `BertEncoder.__init__` (the checkpoints they load and the keys
//! they keep), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none; unused keys are not an error (a DeiT checkpoint carries a classifier
//! `head.*` that MGCA discards, as the reference's non-strict load does), but they are reported.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::tensor_file::TensorFile;

pub mod keymap;
pub mod pickle;
pub mod torch;

/// Every tensor of a checkpoint file of any supported format (safetensors, or a `torch.save`
/// file whose state dict is found as [`torch::Checkpoint::state_dict`] finds it), under the
/// checkpoint's own names.
pub fn read_tensors(path: &std::path::Path) -> Result<TensorFile, torch::CheckpointError> {
    torch::Checkpoint::open(path)?.tensors(None, |_| true)
}

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
    /// Shared, so that a reader (e.g. one looking under another prefix) clones cheaply.
    file: Arc<TensorFile>,
    used: BTreeSet<String>,
    prefix: String,
}

impl WeightReader {
    /// Wrap the tensors of a checkpoint.
    pub fn new(file: impl Into<Arc<TensorFile>>) -> Self {
        Self { file: file.into(), used: BTreeSet::new(), prefix: String::new() }
    }

    /// Look every key up under `prefix` from now on (`"image."` while loading the image
    /// encoder of a whole-model checkpoint); errors and [`WeightReader::unused`] name full keys.
    pub fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Whether the checkpoint holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.file.tensors.contains_key(&self.full(key))
    }

    /// The shape stored under `key`.
    pub fn shape(&self, key: &str) -> Result<Vec<usize>, WeightError> {
        let key = self.full(key);
        self.file.tensors.get(&key).map(|t| t.shape.clone()).ok_or(WeightError::Missing(key))
    }

    /// The tensor under `key`, which must have shape `expected`; marks it used.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        device: &B::Device,
        key: &str,
        expected: &[usize],
    ) -> Result<Tensor<B, D>, WeightError> {
        let key = self.full(key);
        let t = self.file.tensors.get(&key).ok_or_else(|| WeightError::Missing(key.clone()))?;
        if t.shape != expected {
            return Err(WeightError::Shape { key, expected: expected.to_vec(), got: t.shape.clone() });
        }
        self.used.insert(key);
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
            self.used.insert(self.full(key));
        }
    }

    /// Keys of the checkpoint that no parameter took, sorted.
    pub fn unused(&self) -> Vec<String> {
        self.file.tensors.keys().filter(|k| !self.used.contains(*k)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::keymap::{Import, Layout};
    use super::torch::{Checkpoint, Format};
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::tensor_file::HostTensor;
    use crate::testing;
    use std::path::PathBuf;

    fn golden(name: &str) -> PathBuf {
        testing::golden(&format!("pytorch/checkpoints/{name}"))
    }

    fn fnv1a64(values: &[f32]) -> String {
        crate::tensor_file::fnv1a64(&values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
    }

    /// Read `file` through `layout` and check every tensor, bit for bit, against what
    /// PyTorch wrote (`expected.json`), and that nothing else came through.
    fn import(file: &str, layout: Layout, format: Format) -> Import {
        let checkpoint = Checkpoint::open(&golden(file)).unwrap();
        assert_eq!(checkpoint.format, format, "{file}");
        let import = layout.keymap().import(&checkpoint).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(golden("expected.json")).unwrap()).unwrap();
        let stem = file.split('.').next().unwrap();
        let want = expected[stem].as_object().unwrap();
        let got: Vec<&String> = import.tensors.tensors.keys().collect();
        let names: Vec<&String> = want.keys().collect();
        assert_eq!(got, names, "{file}: imported names");
        for (name, entry) in want {
            let t = &import.tensors.tensors[name];
            let shape: Vec<usize> = serde_json::from_value(entry[0].clone()).unwrap();
            assert_eq!(t.shape, shape, "{file}: {name}");
            assert_eq!(fnv1a64(&t.values), entry[1].as_str().unwrap(), "{file}: {name} values");
        }
        import
    }

    /// Every published-style checkpoint, read through its key table, gives exactly the tensors
    /// PyTorch wrote, under mgca-rs names, with the keys MGCA drops listed as ignored. (Loading
    /// them into modules is tested in `model::import`.)
    #[test]
    fn every_layout_reads_its_checkpoint_bit_for_bit() {
        let deit = import("deit_style.pth", Layout::Deit, Format::TorchZip);
        assert_eq!(deit.entry.as_deref(), Some("model"));
        assert_eq!(deit.ignored, vec!["head.weight", "head.bias"]);

        let bert = import("bio_clinicalbert_style.bin", Layout::BioClinicalBert, Format::TorchLegacy);
        assert_eq!(bert.entry, None);
        let layers_dropped = bert.ignored.iter().filter(|k| k.starts_with("bert.encoder.layer.")).count();
        assert_eq!(layers_dropped, 6 * 16, "layers 6–11, 16 tensors each");
        for k in
            ["bert.embeddings.token_type_embeddings.weight", "bert.pooler.dense.weight", "cls.seq_relationship.weight"]
        {
            assert!(bert.ignored.iter().any(|i| i == k), "{k} not ignored");
        }

        let resnet = import("torchvision_style.pth", Layout::TorchvisionResnet, Format::TorchZip);
        assert_eq!(resnet.ignored, vec!["fc.weight", "fc.bias"]);

        for file in ["mgca_vit_style.ckpt", "mgca_resnet_style.ckpt"] {
            let mgca = import(file, Layout::MgcaLightning, Format::TorchZip);
            assert_eq!(mgca.entry.as_deref(), Some("state_dict"));
            assert!(mgca.ignored.iter().any(|k| k.contains("crossattention")));
            assert!(mgca.ignored.iter().any(|k| k.starts_with("word_local_atten_layer.")));
            assert_eq!(mgca.source_of("prototypes"), "prototype_layer.weight");
        }
    }

    #[test]
    fn tied_weights_share_one_storage() {
        let checkpoint = Checkpoint::open(&golden("bio_clinicalbert_style.bin")).unwrap();
        let all = checkpoint.tensors(None, |_| true).unwrap();
        assert_eq!(
            all.tensors["cls.predictions.decoder.weight"],
            all.tensors["bert.embeddings.word_embeddings.weight"]
        );
    }

    /// The reader hands out tensors by key with their shapes checked, converts a torch
    /// `Linear`'s `[out, in]` to burn's `[in, out]`, and reports what nobody took.
    #[test]
    fn the_reader_checks_shapes_and_reports_unused_keys() {
        let mut file = TensorFile::default();
        file.tensors.insert("fc.weight".into(), HostTensor { shape: vec![3, 2], values: vec![1., 2., 3., 4., 5., 6.] });
        file.tensors.insert("fc.bias".into(), HostTensor { shape: vec![3], values: vec![0.; 3] });
        file.tensors.insert("extra".into(), HostTensor { shape: vec![1], values: vec![0.] });
        let mut weights = WeightReader::new(file);
        let dev = cpu_device();
        let err = weights.tensor::<Cpu, 2>(&dev, "fc.weight", &[2, 3]).unwrap_err();
        assert_eq!(err, WeightError::Shape { key: "fc.weight".into(), expected: vec![2, 3], got: vec![3, 2] });
        let mut linear = burn::nn::LinearConfig::new(2, 3).init::<Cpu>(&dev);
        weights.linear(&dev, "fc", 2, 3, &mut linear).unwrap();
        assert_eq!(linear.weight.val().dims(), [2, 3]);
        assert_eq!(linear.weight.val().into_data().to_vec::<f32>().unwrap(), vec![1., 3., 5., 2., 4., 6.]);
        assert_eq!(weights.unused(), vec!["extra".to_string()]);
        weights.set_prefix("missing.");
        assert_eq!(weights.shape("fc.weight").unwrap_err(), WeightError::Missing("missing.fc.weight".into()));
    }

    #[test]
    fn damaged_files_are_errors_that_name_the_file() {
        let dir = testing::scratch("damaged-checkpoints");
        for source in ["mgca_vit_style.ckpt", "bio_clinicalbert_style.bin"] {
            let bytes = std::fs::read(golden(source)).unwrap();
            let cut = dir.join(format!("cut-{source}"));
            std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let result = Checkpoint::open(&cut).and_then(|c| c.tensors(None, |_| true));
            let err = result.unwrap_err().to_string();
            assert!(err.contains(&format!("cut-{source}")), "{err}");
        }
        let garbage = dir.join("garbage.pth");
        std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
        let err = Checkpoint::open(&garbage).unwrap_err().to_string();
        assert!(err.contains("garbage.pth") && err.contains("not a PyTorch checkpoint"), "{err}");
        let checkpoint = Checkpoint::open(&golden("deit_style.pth")).unwrap();
        let err = checkpoint.state_dict(Some("state_dict")).unwrap_err().to_string();
        assert!(err.contains("no entry `state_dict`; the top level has model"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
