//! Importing a published checkpoint: read it ([`super::torch`]), rename its keys through a
//! key table ([`super::keymap`]), and load the result into the module it initialises, so that
//! every key is accounted for: loaded, ignored by a named rule, or reported as unexpected.
//! A key the module needs and the checkpoint lacks, or a shape mismatch, is an error that
//! names the key (with the checkpoint's own name for it).
//!
//! Spec: `architecture.md` §1–§4 (which checkpoint initialises what, and how).
//!
//! **Deviation:** none. Like the reference's non-strict loads, unexpected keys are not an
//! error; unlike them, they are always listed.

use std::path::Path;
use std::sync::Arc;

use super::keymap::{Import, KeyMap, Layout};
use super::torch::{Checkpoint, Format};
use super::{WeightError, WeightReader};
use crate::backend::{Cpu, cpu_device};
use crate::config::MgcaConfig;
use crate::model::{bert, mgca::Mgca, resnet, vit};

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

/// Import `path` with `layout`'s table (or `keymap`, a custom table for the same layout);
/// attention-head counts and the ResNet up-sampling, which no tensor records, come from
/// `preset`.
pub fn import(
    path: &Path,
    layout: Layout,
    keymap: Option<KeyMap>,
    preset: &MgcaConfig,
) -> Result<ImportReport, String> {
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
    let device = cpu_device();
    let (loaded_into, config) = match layout {
        Layout::Deit => {
            weights.set_prefix("image.");
            let c = vit::config_from_weights(&weights, preset.vit.heads).map_err(named)?;
            vit::Vit::<Cpu>::load(&c, &mut weights, &device).map_err(named)?;
            (
                format!(
                    "ViT: {} blocks, width {}, {} heads, patch {}, {} px",
                    c.depth, c.dim, c.heads, c.patch_size, c.image_size
                ),
                None,
            )
        }
        Layout::TorchvisionResnet => {
            weights.set_prefix("image.");
            let c = resnet::config_from_weights(&weights, preset.resnet.upsample_to).map_err(named)?;
            resnet::ResNet::<Cpu>::load(&c, &mut weights, &device).map_err(named)?;
            (
                format!(
                    "ResNet: width {}, blocks {:?}, global {}, local {}",
                    c.width,
                    c.blocks,
                    c.global_dim(),
                    c.local_dim()
                ),
                None,
            )
        }
        Layout::BioClinicalBert => {
            weights.set_prefix("text.");
            let c = bert::config_from_weights(&weights, preset.bert.heads, None).map_err(named)?;
            bert::Bert::<Cpu>::load(&c, &mut weights, &device).map_err(named)?;
            (
                format!(
                    "BERT: {} layers, width {}, {} heads, vocabulary {}",
                    c.layers, c.hidden, c.heads, c.vocab_size
                ),
                None,
            )
        }
        Layout::MgcaLightning => {
            let c = preset.from_weights(&weights).map_err(named)?;
            Mgca::<Cpu>::load(&c, &mut weights, &device).map_err(named)?;
            let encoder = match c.image_encoder {
                crate::config::ImageEncoderKind::VitBase => {
                    format!("ViT ({} blocks, width {})", c.vit.depth, c.vit.dim)
                }
                crate::config::ImageEncoderKind::Resnet50 => {
                    format!("ResNet (width {}, blocks {:?})", c.resnet.width, c.resnet.blocks)
                }
            };
            let text = format!("BERT ({} layers, width {})", c.bert.layers, c.bert.hidden);
            let heads = format!("heads → {} → {}, {} prototypes", c.projection_hidden, c.embed_dim, c.num_prototypes);
            (format!("MGCA: {encoder}, {text}, {heads}"), Some(c))
        }
    };
    let unused = weights.unused();
    drop(weights);
    import.tensors = Arc::try_unwrap(tensors).unwrap_or_else(|shared| (*shared).clone());
    Ok(ImportReport { format: checkpoint.format, table: table.name.clone(), import, loaded_into, unused, config })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ImageEncoderKind;
    use std::path::PathBuf;

    fn golden(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/pytorch/checkpoints").join(name)
    }

    #[test]
    fn every_layout_imports_its_checkpoint_cleanly() {
        let smoke = MgcaConfig::smoke();
        let two_heads =
            MgcaConfig { vit: crate::model::vit::VitConfig { heads: 2, ..smoke.vit }, ..MgcaConfig::reference() };
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
}
