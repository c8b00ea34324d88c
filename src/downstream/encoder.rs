//! Where a downstream task's image encoder comes from: our own pretraining run (its
//! lowest-`val_loss` checkpoint, as the reference's fine-tuners load), a released MGCA Lightning
//! checkpoint, ImageNet weights (DeiT-B/16 or torchvision ResNet-50: the paper's "ImageNet"
//! baseline rows), or random initialisation (the "Random Init" rows).
//!
//! Book: "Linear probing" (evaluating the released checkpoints). Reference:
//! `mgca/models/mgca/mgca_finetuner.py`, `cli()` (`MGCA.load_from_checkpoint(args.path,
//! strict=False)`, then `model.img_encoder_q` becomes the backbone), at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none. The pretraining checkpoint the reference's default path names
//! (`epoch=20-step=33137.ckpt`) is one of the five best by `val_loss`; ours is the best one.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::model::import::{Architecture, Loaded, import};
use crate::model::mgca::{EncoderWeights, ImageEncoder};
use crate::train::checkpoint;
use crate::weights::keymap::Layout;

/// The experiment file's `[encoder]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderSource {
    /// Our pretraining run's folder (relative paths are under the run's `--out`).
    Pretrained { run: PathBuf },
    /// A released MGCA checkpoint (`vit_base.ckpt`, `resnet_50.ckpt`: Lightning `.ckpt`).
    Released { checkpoint: PathBuf },
    /// ImageNet weights: DeiT-B/16's `.pth` (ViT) or torchvision's ResNet-50 (ResNet).
    Imagenet { weights: PathBuf },
    /// Random initialisation with this seed (the model's own initialisers).
    Random { seed: u64 },
}

impl EncoderSource {
    /// Parse the command line's `--encoder-from`: `pretrained:RUN`, `released:FILE`,
    /// `imagenet:FILE` or `random[:SEED]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, arg) = text.split_once(':').map_or((text, None), |(k, a)| (k, Some(a)));
        let path = |what: &str| -> Result<PathBuf, String> {
            arg.filter(|a| !a.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| format!("`--encoder-from {kind}:…` needs {what}"))
        };
        match kind {
            "pretrained" => Ok(Self::Pretrained { run: path("the pretraining run's folder")? }),
            "released" => Ok(Self::Released { checkpoint: path("the checkpoint file")? }),
            "imagenet" => Ok(Self::Imagenet { weights: path("the weights file")? }),
            "random" => {
                let seed =
                    arg.map_or(Ok(42), |a| a.parse().map_err(|_| format!("`random:{a}`: the seed is not a number")))?;
                Ok(Self::Random { seed })
            }
            _ => Err(format!("`{text}`: use pretrained:RUN, released:FILE, imagenet:FILE or random[:SEED]")),
        }
    }

    /// The source in a few words, for reports (`pretrained`, `released`, `imagenet`, `random`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pretrained { .. } => "pretrained",
            Self::Released { .. } => "released",
            Self::Imagenet { .. } => "imagenet",
            Self::Random { .. } => "random",
        }
    }

    /// Relative paths resolved against `base` (the output folder for runs, the working
    /// directory for files).
    pub fn resolved(&self, runs: &Path) -> Self {
        match self {
            Self::Pretrained { run } if run.is_relative() => Self::Pretrained { run: runs.join(run) },
            other => other.clone(),
        }
    }
}

/// A loaded encoder and the model configuration it belongs to.
pub struct LoadedEncoder<B: Backend> {
    pub encoder: ImageEncoder<B>,
    pub config: MgcaConfig,
    /// Where it came from, in words (file and checkpoint folder).
    pub provenance: String,
}

/// The best checkpoint of a pretraining run (lowest `val_loss`, as recorded by `last`).
pub fn best_pretraining_checkpoint(run: &Path) -> Result<PathBuf, String> {
    let dir = run.join("checkpoints");
    let state = checkpoint::load_state(&dir.join(checkpoint::LAST))
        .map_err(|e| format!("{}: not a finished pretraining run ({e})", run.display()))?;
    let best = state.best.first().ok_or_else(|| {
        format!("{}: the run kept no best checkpoint (it has no validation split, or no epoch ended)", run.display())
    })?;
    Ok(dir.join(&best.2))
}

/// Load the image encoder `source` names; `preset` gives the architecture for ImageNet and
/// random encoders and the fields no tensor records (head counts, up-sampling) for released
/// checkpoints. The encoder kind must be `kind`.
pub fn load_encoder<B: Backend>(
    source: &EncoderSource,
    kind: ImageEncoderKind,
    preset: &MgcaConfig,
    device: &B::Device,
) -> Result<LoadedEncoder<B>, String> {
    let loaded = match source {
        EncoderSource::Pretrained { run } => {
            let path = run.join("config.toml");
            if !path.exists() {
                return Err(format!(
                    "{}: no pretraining run here (run `cargo xtask reproduce pretrain` first, or choose the encoder with --encoder-from)",
                    run.display()
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let config: MgcaConfig = toml::from_str(&text)
                .map_err(|e| format!("{}: not a pretraining configuration: {e}", path.display()))?;
            let best = best_pretraining_checkpoint(run)?;
            let model =
                checkpoint::load_model(&best, config.init_model::<B>(device), device).map_err(|e| e.to_string())?;
            LoadedEncoder { encoder: model.into_image_encoder(), config, provenance: best.display().to_string() }
        }
        EncoderSource::Released { checkpoint } => {
            // The one importer `mgca weights import` and `Mgca::with_encoders` use.
            let (module, report) =
                import::<B>(checkpoint, Layout::MgcaLightning, None, Architecture::FromWeights(preset), device)?;
            let (Loaded::Mgca(model), Some(config)) = (module, report.config) else {
                return Err(format!("{}: not a whole MGCA checkpoint", checkpoint.display()));
            };
            LoadedEncoder { encoder: model.into_image_encoder(), config, provenance: checkpoint.display().to_string() }
        }
        EncoderSource::Imagenet { weights } => {
            let from = EncoderWeights { image: Some(weights.clone()), text: None };
            let model = preset.init_model::<B>(device).with_encoders(preset, &from, device)?;
            LoadedEncoder {
                encoder: model.into_image_encoder(),
                config: preset.clone(),
                provenance: weights.display().to_string(),
            }
        }
        EncoderSource::Random { seed } => {
            let model = preset.init_model_seeded::<B>(*seed, device);
            LoadedEncoder {
                encoder: model.into_image_encoder(),
                config: preset.clone(),
                provenance: format!("random initialisation, seed {seed}"),
            }
        }
    };
    if loaded.config.image_encoder != kind {
        return Err(format!(
            "{}: holds a {:?} image encoder, the experiment asks for {kind:?}",
            loaded.provenance, loaded.config.image_encoder
        ));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_sources() {
        assert_eq!(EncoderSource::parse("random").unwrap(), EncoderSource::Random { seed: 42 });
        assert_eq!(EncoderSource::parse("random:7").unwrap(), EncoderSource::Random { seed: 7 });
        assert_eq!(
            EncoderSource::parse("released:ckpt/vit_base.ckpt").unwrap(),
            EncoderSource::Released { checkpoint: "ckpt/vit_base.ckpt".into() }
        );
        assert!(EncoderSource::parse("imagenet:").unwrap_err().contains("needs the weights file"));
        assert!(EncoderSource::parse("moco").unwrap_err().contains("use pretrained:RUN"));
        let runs = Path::new("/runs");
        assert_eq!(
            EncoderSource::Pretrained { run: "pretrain-smoke".into() }.resolved(runs),
            EncoderSource::Pretrained { run: "/runs/pretrain-smoke".into() }
        );
    }
}
