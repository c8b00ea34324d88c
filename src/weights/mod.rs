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
use std::sync::Arc;

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::parity::TensorFile;

pub mod import;
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
    use super::pickle::Value;
    use super::torch::{Checkpoint, Format};
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::config::{ImageEncoderKind, MgcaConfig};
    use crate::model::{bert, mgca::Mgca, resnet, vit};
    use std::path::PathBuf;

    fn golden(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/pytorch/checkpoints").join(name)
    }

    fn fnv1a64(values: &[f32]) -> String {
        crate::parity::fnv1a64(&values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
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

    #[test]
    fn deit_style_zip_checkpoint_loads_into_the_vit() {
        let import = import("deit_style.pth", Layout::Deit, Format::TorchZip);
        assert_eq!(import.entry.as_deref(), Some("model"));
        assert_eq!(import.ignored, vec!["head.weight", "head.bias"]);
        let mut weights = WeightReader::new(import.tensors);
        weights.set_prefix("image.");
        let config = vit::config_from_weights(&weights, 2).unwrap();
        assert_eq!((config.dim, config.depth, config.image_size, config.patch_size), (8, 2, 224, 16));
        vit::Vit::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
        assert!(weights.unused().is_empty(), "{:?}", weights.unused());
    }

    #[test]
    fn bio_clinicalbert_style_legacy_checkpoint_loads_six_layers() {
        let import = import("bio_clinicalbert_style.bin", Layout::BioClinicalBert, Format::TorchLegacy);
        assert_eq!(import.entry, None);
        let layers_dropped = import.ignored.iter().filter(|k| k.starts_with("bert.encoder.layer.")).count();
        assert_eq!(layers_dropped, 6 * 16, "layers 6–11, 16 tensors each");
        for k in
            ["bert.embeddings.token_type_embeddings.weight", "bert.pooler.dense.weight", "cls.seq_relationship.weight"]
        {
            assert!(import.ignored.iter().any(|i| i == k), "{k} not ignored");
        }
        let mut weights = WeightReader::new(import.tensors);
        weights.set_prefix("text.");
        let config = bert::config_from_weights(&weights, 2, None).unwrap();
        assert_eq!((config.layers, config.hidden, config.vocab_size), (6, 8, 40));
        bert::Bert::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
        assert!(weights.unused().is_empty(), "{:?}", weights.unused());
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

    #[test]
    fn torchvision_style_checkpoint_loads_into_the_resnet() {
        let import = import("torchvision_style.pth", Layout::TorchvisionResnet, Format::TorchZip);
        assert_eq!(import.ignored, vec!["fc.weight", "fc.bias"]);
        let mut weights = WeightReader::new(import.tensors);
        weights.set_prefix("image.");
        let config = resnet::config_from_weights(&weights, Some(299)).unwrap();
        assert_eq!((config.width, config.blocks), (4, [1, 1, 1, 1]));
        resnet::ResNet::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
        // num_batches_tracked (int64 in the file) was read and set aside, not left over.
        assert!(weights.unused().is_empty(), "{:?}", weights.unused());
    }

    /// The released-checkpoint path end to end: a Lightning file with optimizer state,
    /// callbacks and an unknown hyper-parameter class; the architecture is recovered from the
    /// shapes alone (it equals the smoke preset it was made with) and the model loads with
    /// nothing missing and nothing left over.
    #[test]
    fn mgca_lightning_style_checkpoints_load_the_whole_model() {
        for (file, kind) in
            [("mgca_vit_style.ckpt", ImageEncoderKind::VitBase), ("mgca_resnet_style.ckpt", ImageEncoderKind::Resnet50)]
        {
            let import = import(file, Layout::MgcaLightning, Format::TorchZip);
            assert_eq!(import.entry.as_deref(), Some("state_dict"));
            assert!(import.ignored.iter().any(|k| k.contains("crossattention")));
            assert!(import.ignored.iter().any(|k| k.starts_with("word_local_atten_layer.")));
            assert_eq!(import.source_of("prototypes"), "prototype_layer.weight");
            let mut weights = WeightReader::new(import.tensors);
            // Start from the other encoder's preset: the checkpoint decides.
            let other =
                if kind == ImageEncoderKind::VitBase { ImageEncoderKind::Resnet50 } else { ImageEncoderKind::VitBase };
            let config = MgcaConfig::smoke_for(other).from_weights(&weights).unwrap();
            assert_eq!(config, MgcaConfig::smoke_for(kind), "{file}");
            Mgca::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
            assert!(weights.unused().is_empty(), "{file}: {:?}", weights.unused());

            let checkpoint = Checkpoint::open(&golden(file)).unwrap();
            assert_eq!(checkpoint.root.get("epoch"), Some(&Value::Int(3)));
            let hp = checkpoint.root.get("hyper_parameters").unwrap();
            assert_eq!(hp.get("img_encoder"), Some(&Value::Str("vit_base".into())));
        }
    }

    #[test]
    fn a_model_that_needs_more_than_the_checkpoint_has_names_the_key() {
        let checkpoint = Checkpoint::open(&golden("mgca_vit_style.ckpt")).unwrap();
        let mut import = Layout::MgcaLightning.keymap().import(&checkpoint).unwrap();
        import.tensors.tensors.remove("text_local.4.running_var");
        let mut weights = WeightReader::new(import.tensors);
        let err = Mgca::<Cpu>::load(&MgcaConfig::smoke(), &mut weights, &cpu_device()).unwrap_err();
        assert_eq!(err, WeightError::Missing("text_local.4.running_var".into()));
        // A checkpoint of another size: the shape error names the key.
        let mut config = MgcaConfig::smoke();
        config.num_prototypes = 17;
        let mut weights = WeightReader::new(Layout::MgcaLightning.keymap().import(&checkpoint).unwrap().tensors);
        let err = Mgca::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("`prototypes` has shape [16, 32], the model needs [17, 32]"), "{err}");
    }

    #[test]
    fn damaged_files_are_errors_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("mgca-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
