//! Importing a published checkpoint into the module it initialises: read it
//! ([`crate::weights::torch`]), rename its keys through a key table
//! ([`crate::weights::keymap`]), and load the result, so that every key is accounted for:
//! loaded, ignored by a named rule, or reported as unexpected. A key the module needs and the
//! checkpoint lacks, or a shape mismatch, is an error that names the key (with the
//! checkpoint's own name for it).
//!
//! The one importer: `mgca weights import` and [`Mgca::with_encoders`] (a run's pretrained
//! encoders) both load through [`import`].
//!
//! Book: "Checkpoints and weight loading". Reference: `mgca/models/backbones/encoder.py`,
//! `ImageEncoder.__init__` and `BertEncoder.__init__` (the DeiT, torchvision and
//! Bio_ClinicalBERT initial weights), and `mgca/models/mgca/mgca_module.py`, `MGCA` (the
//! Lightning checkpoint's `state_dict`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Like the reference's non-strict loads, unexpected keys are not an
//! error; unlike them, they are always listed.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;

use super::bert::{self, Bert};
use super::mgca::Mgca;
use super::resnet::{self, ResNet};
use super::unet::Unet;
use super::vit::{self, Vit};
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::weights::keymap::{Import, KeyMap, Layout};
use crate::weights::torch::{Checkpoint, Format};
use crate::weights::{WeightError, WeightReader};

/// Where the architecture of the module being loaded comes from.
#[derive(Debug, Clone, Copy)]
pub enum Architecture<'a> {
    /// From the tensors' shapes; attention-head counts and the ResNet up-sampling, which no
    /// tensor records, from this preset (`mgca weights import`).
    FromWeights(&'a MgcaConfig),
    /// Exactly this configuration: every tensor must have its shapes (a run's encoders).
    Exactly(&'a MgcaConfig),
}

/// The module a checkpoint initialised.
#[derive(Debug)]
pub enum Loaded<B: Backend> {
    /// A ViT (`deit`).
    Vit(Vit<B>),
    /// A ResNet (`torchvision-resnet`).
    ResNet(ResNet<B>),
    /// A BERT (`bio-clinicalbert`).
    Bert(Bert<B>),
    /// The whole model (`mgca-lightning`).
    Mgca(Box<Mgca<B>>),
    /// The segmentation U-Net (`smp-unet`).
    Unet(Box<Unet<B>>),
}

/// What an import did with every key.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The container of the file.
    pub format: Format,
    /// The key table used.
    pub table: String,
    /// The checkpoint's tensors, renamed (what `--output` writes).
    pub import: Import,
    /// What the tensors were loaded into, in words.
    pub loaded_into: String,
    /// Renamed tensors no parameter took (unexpected keys).
    pub unused: Vec<String>,
    /// The whole-model configuration the checkpoint describes (MGCA checkpoints only).
    pub config: Option<MgcaConfig>,
}

/// Import `path` with `layout`'s table (or `keymap`, a custom table for the same layout) into
/// the module `layout` initialises, on `device`, its architecture as `architecture` says.
pub fn import<B: Backend>(
    path: &Path,
    layout: Layout,
    keymap: Option<KeyMap>,
    architecture: Architecture<'_>,
    device: &B::Device,
) -> Result<(Loaded<B>, ImportReport), String> {
    let checkpoint = Checkpoint::open(path).map_err(|e| e.to_string())?;
    let table = keymap.unwrap_or_else(|| layout.keymap());
    let mut import = table.import(&checkpoint).map_err(|e| e.to_string())?;
    // The reader shares the tensors; they go back into the report once it is done.
    let tensors = Arc::new(std::mem::take(&mut import.tensors));
    let mut weights = WeightReader::new(tensors.clone());
    let named = |e: WeightError| -> String {
        let key = match &e {
            WeightError::Missing(k) | WeightError::Shape { key: k, .. } => Some(k.clone()),
            WeightError::Architecture(_) => None,
        };
        match key {
            Some(k) if import.sources.contains_key(&k) => {
                format!("{}: {e} (checkpoint key `{}`)", path.display(), import.sources[&k])
            }
            Some(_) => {
                format!("{}: {e} (no checkpoint key maps to it under key table `{}`)", path.display(), table.name)
            }
            None => format!("{}: {e}", path.display()),
        }
    };
    let (module, loaded_into, config) = load(layout, &mut weights, architecture, device).map_err(named)?;
    let unused = weights.unused();
    drop(weights);
    import.tensors = Arc::try_unwrap(tensors).unwrap_or_else(|shared| (*shared).clone());
    let report =
        ImportReport { format: checkpoint.format, table: table.name.clone(), import, loaded_into, unused, config };
    Ok((module, report))
}

/// Load the module `layout` initialises from `weights` (under mgca-rs names): the module, a
/// description of it, and the whole-model configuration (MGCA checkpoints only).
fn load<B: Backend>(
    layout: Layout,
    weights: &mut WeightReader,
    architecture: Architecture<'_>,
    device: &B::Device,
) -> Result<(Loaded<B>, String, Option<MgcaConfig>), WeightError> {
    let (Architecture::FromWeights(preset) | Architecture::Exactly(preset)) = architecture;
    let exact = matches!(architecture, Architecture::Exactly(_));
    Ok(match layout {
        Layout::Deit => {
            weights.set_prefix("image.");
            let c = if exact { preset.vit } else { vit::config_from_weights(weights, preset.vit.heads)? };
            let module = Vit::load(&c, weights, device)?;
            let words = format!(
                "ViT: {} blocks, width {}, {} heads, patch {}, {} px",
                c.depth, c.dim, c.heads, c.patch_size, c.image_size
            );
            (Loaded::Vit(module), words, None)
        }
        Layout::TorchvisionResnet => {
            weights.set_prefix("image.");
            let c =
                if exact { preset.resnet } else { resnet::config_from_weights(weights, preset.resnet.upsample_to)? };
            let module = ResNet::load(&c, weights, device)?;
            let words = format!(
                "ResNet: width {}, blocks {:?}, global {}, local {}",
                c.width,
                c.blocks,
                c.global_dim(),
                c.local_dim()
            );
            (Loaded::ResNet(module), words, None)
        }
        Layout::BioClinicalBert => {
            weights.set_prefix("text.");
            let c = if exact { preset.bert } else { bert::config_from_weights(weights, preset.bert.heads, None)? };
            let module = Bert::load(&c, weights, device)?;
            let words = format!(
                "BERT: {} layers, width {}, {} heads, vocabulary {}",
                c.layers, c.hidden, c.heads, c.vocab_size
            );
            (Loaded::Bert(module), words, None)
        }
        Layout::MgcaLightning => {
            let c = if exact { preset.clone() } else { preset.from_weights(weights)? };
            let module = Mgca::load(&c, weights, device)?;
            let encoder = match c.image_encoder {
                ImageEncoderKind::VitBase => format!("ViT ({} blocks, width {})", c.vit.depth, c.vit.dim),
                ImageEncoderKind::Resnet50 => {
                    format!("ResNet (width {}, blocks {:?})", c.resnet.width, c.resnet.blocks)
                }
            };
            let text = format!("BERT ({} layers, width {})", c.bert.layers, c.bert.hidden);
            let heads = format!("heads → {} → {}, {} prototypes", c.projection_hidden, c.embed_dim, c.num_prototypes);
            (Loaded::Mgca(Box::new(module)), format!("MGCA: {encoder}, {text}, {heads}"), Some(c))
        }
        Layout::SmpUnet => {
            let (module, c) = Unet::load("unet.", weights, device)?;
            let words =
                format!("U-Net: encoder features {:?}, decoder widths {:?}", c.encoder_channels, c.decoder_channels);
            (Loaded::Unet(Box::new(module)), words, None)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::testing;
    use crate::weights::pickle::Value;
    use std::path::PathBuf;

    fn golden(name: &str) -> PathBuf {
        testing::golden(&format!("pytorch/checkpoints/{name}"))
    }

    /// What `mgca weights import` does: the architecture from the weights, on the CPU.
    fn import(
        path: &Path,
        layout: Layout,
        keymap: Option<KeyMap>,
        preset: &MgcaConfig,
    ) -> Result<ImportReport, String> {
        super::import::<Cpu>(path, layout, keymap, Architecture::FromWeights(preset), &cpu_device()).map(|(_, r)| r)
    }

    #[test]
    fn every_layout_imports_its_checkpoint_cleanly() {
        let smoke = MgcaConfig::smoke();
        let two_heads = MgcaConfig { vit: vit::VitConfig { heads: 2, ..smoke.vit }, ..MgcaConfig::reference() };
        for (file, layout, preset) in [
            ("deit_style.pth", Layout::Deit, &two_heads),
            ("torchvision_style.pth", Layout::TorchvisionResnet, &smoke),
            (
                "bio_clinicalbert_style.bin",
                Layout::BioClinicalBert,
                &MgcaConfig { bert: smoke.bert, ..MgcaConfig::reference() },
            ),
            ("mgca_vit_style.ckpt", Layout::MgcaLightning, &smoke),
            ("mgca_resnet_style.ckpt", Layout::MgcaLightning, &smoke),
        ] {
            let report = import(&golden(file), layout, None, preset).unwrap_or_else(|e| panic!("{e}"));
            assert!(report.unused.is_empty(), "{file}: {:?}", report.unused);
            assert!(!report.import.ignored.is_empty(), "{file}");
        }
        let report = import(&golden("mgca_resnet_style.ckpt"), Layout::MgcaLightning, None, &smoke).unwrap();
        assert_eq!(report.config.as_ref().unwrap().image_encoder, ImageEncoderKind::Resnet50);
        let rules = &report.import.ignored_by_rule;
        assert!(rules.contains(&("text_encoder_q.model.encoder.layer.*.crossattention".into(), 20)), "{rules:?}");
    }

    #[test]
    fn the_wrong_table_fails_and_names_the_checkpoint_key() {
        // A DeiT file read as a torchvision ResNet: nothing it needs is there.
        let err = import(&golden("deit_style.pth"), Layout::TorchvisionResnet, None, &MgcaConfig::smoke()).unwrap_err();
        assert!(err.contains("deit_style.pth") && err.contains("image.conv1.weight"), "{err}");
        // A bias standing where a weight should be: the shape error gives the checkpoint's own key.
        let rules = "entry -\nignore bert.encoder.layer.0.output.dense.weight\n\
            rename bert.encoder.layer.0.output.dense.bias text.encoder.layer.0.output.dense.weight\n\
            rename bert. text.\nignore cls\nignore bert.pooler\nignore bert.embeddings.token_type_embeddings\n";
        let preset = MgcaConfig { bert: MgcaConfig::smoke().bert, ..MgcaConfig::reference() };
        let odd = KeyMap::parse("odd", rules).unwrap();
        let err =
            import(&golden("bio_clinicalbert_style.bin"), Layout::BioClinicalBert, Some(odd), &preset).unwrap_err();
        assert!(
            err.contains("has shape [8]") && err.contains("checkpoint key `bert.encoder.layer.0.output.dense.bias`"),
            "{err}"
        );
        // Two checkpoint keys onto one name is refused, not silently overwritten.
        let clash =
            KeyMap::parse("clash", &rules.replace("ignore bert.encoder.layer.0.output.dense.weight\n", "")).unwrap();
        let err =
            import(&golden("bio_clinicalbert_style.bin"), Layout::BioClinicalBert, Some(clash), &preset).unwrap_err();
        assert!(err.contains("maps to `text.encoder.layer.0.output.dense.weight`, as"), "{err}");
    }

    /// Each published-style checkpoint loads into its module with nothing left over, and the
    /// architecture read from the shapes is the one it was made with.
    #[test]
    fn each_layout_loads_its_module_and_recovers_its_architecture() {
        let two_heads = |c: MgcaConfig| MgcaConfig { vit: vit::VitConfig { heads: 2, ..c.vit }, ..c };
        let (module, report) = super::import::<Cpu>(
            &golden("deit_style.pth"),
            Layout::Deit,
            None,
            Architecture::FromWeights(&two_heads(MgcaConfig::reference())),
            &cpu_device(),
        )
        .unwrap();
        assert!(matches!(module, Loaded::Vit(_)));
        assert_eq!(report.import.entry.as_deref(), Some("model"));
        assert_eq!(report.import.ignored, vec!["head.weight", "head.bias"]);
        assert!(report.loaded_into.contains("2 blocks, width 8, 2 heads, patch 16, 224 px"), "{}", report.loaded_into);

        let bert_preset =
            MgcaConfig { bert: bert::BertConfig { heads: 2, ..MgcaConfig::smoke().bert }, ..MgcaConfig::reference() };
        let report =
            import(&golden("bio_clinicalbert_style.bin"), Layout::BioClinicalBert, None, &bert_preset).unwrap();
        assert!(report.loaded_into.contains("6 layers, width 8") && report.loaded_into.contains("vocabulary 40"));
        let layers_dropped = report.import.ignored.iter().filter(|k| k.starts_with("bert.encoder.layer.")).count();
        assert_eq!(layers_dropped, 6 * 16, "layers 6–11, 16 tensors each");

        let report =
            import(&golden("torchvision_style.pth"), Layout::TorchvisionResnet, None, &MgcaConfig::smoke()).unwrap();
        assert_eq!(report.import.ignored, vec!["fc.weight", "fc.bias"]);
        // num_batches_tracked (int64 in the file) was read and set aside, not left over.
        assert!(report.unused.is_empty(), "{:?}", report.unused);
        assert!(report.loaded_into.contains("width 4, blocks [1, 1, 1, 1]"), "{}", report.loaded_into);
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
            // Start from the other encoder's preset: the checkpoint decides.
            let other =
                if kind == ImageEncoderKind::VitBase { ImageEncoderKind::Resnet50 } else { ImageEncoderKind::VitBase };
            let report = import(&golden(file), Layout::MgcaLightning, None, &MgcaConfig::smoke_for(other)).unwrap();
            assert_eq!(report.import.entry.as_deref(), Some("state_dict"));
            assert!(report.import.ignored.iter().any(|k| k.starts_with("word_local_atten_layer.")));
            assert_eq!(report.import.source_of("prototypes"), "prototype_layer.weight");
            assert_eq!(report.config, Some(MgcaConfig::smoke_for(kind)), "{file}");
            assert!(report.unused.is_empty(), "{file}: {:?}", report.unused);

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
        // A checkpoint of another size: the shape error names the key, here and through the
        // importer with an exact architecture (as a run's encoders are loaded).
        let mut config = MgcaConfig::smoke();
        config.num_prototypes = 17;
        let mut weights = WeightReader::new(Layout::MgcaLightning.keymap().import(&checkpoint).unwrap().tensors);
        let err = Mgca::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("`prototypes` has shape [16, 32], the model needs [17, 32]"), "{err}");
        let err = super::import::<Cpu>(
            &golden("mgca_vit_style.ckpt"),
            Layout::MgcaLightning,
            None,
            Architecture::Exactly(&config),
            &cpu_device(),
        )
        .unwrap_err();
        assert!(
            err.contains("mgca_vit_style.ckpt") && err.contains("checkpoint key `prototype_layer.weight`"),
            "{err}"
        );
    }
}
