//! Experiment files: what `reproductions/configs/**.toml` hold and how they resolve to a full
//! [`MgcaConfig`].
//!
//! A file names a preset (`reference`, `paper` or `smoke`) for an image encoder and overrides
//! any of its fields in a `[config]` table, deep-merged over the preset; it also says where the
//! data and the encoders' initial weights come from and which devices it expects. The resolved
//! configuration is what a run saves as `config.toml`.
//!
//! Spec: `hyperparameters.md` §1 (the values the presets hold).
//!
//! **Deviation:** none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::data::synth::Scale;

/// Which preset an experiment starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The reference code's behaviour (faithful mode).
    Reference,
    /// The paper's stated choices where the code differs.
    Paper,
    /// Tiny sizes for CPU runs.
    Smoke,
}

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Minutes on a CPU, synthetic data.
    Smoke,
    /// The published configuration on the real data and GPUs.
    Paper,
}

/// Where a pretraining run's pairs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Synthetic MIMIC-CXR (generated when absent): scale and seed.
    pub synthetic: Option<SyntheticSpec>,
    /// The MIMIC-CXR-JPG 2.0.0 folder (overridden by `--data`).
    pub mimic_root: Option<PathBuf>,
}

/// The synthetic generator's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    pub scale: Scale,
    pub seed: u32,
}

/// Initial weights of the encoders (paper tier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WeightsSpec {
    /// DeiT-B/16 (`deit_base_patch16_224-b5f2ef4d.pth`) or torchvision ResNet-50 weights.
    pub image: Option<PathBuf>,
    /// Bio_ClinicalBERT's folder (`pytorch_model.bin` and `vocab.txt`).
    pub text: Option<PathBuf>,
}

/// One experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The run folder's name.
    pub name: String,
    /// What it reproduces, in a sentence.
    pub reproduces: String,
    pub tier: Tier,
    pub preset: Preset,
    pub image_encoder: ImageEncoderKind,
    /// Device indices it expects (`[0, 1]`: two GPUs; `[0]`: one device).
    #[serde(default = "one_device")]
    pub devices: Vec<usize>,
    #[serde(default)]
    pub data: DataSpec,
    #[serde(default)]
    pub weights: WeightsSpec,
    /// Overrides of the preset's fields, e.g. `[config.train] epochs = 30`.
    #[serde(default)]
    pub config: toml::Table,
}

fn one_device() -> Vec<usize> {
    vec![0]
}

/// Merge `over` into `base`, table by table; anything else in `over` replaces. Keys `base`
/// lacks (an unset optional field, or a typo) are inserted and listed in `added`.
fn merge(base: &mut toml::Value, over: &toml::Value, path: &str, added: &mut Vec<String>) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v, &here, added),
                    None => {
                        b.insert(k.clone(), v.clone());
                        added.push(here);
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn lookup<'a>(value: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(value, |v, k| v.get(k))
}

impl Experiment {
    /// Read and check an experiment file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let experiment: Experiment = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        experiment.resolve().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(experiment)
    }

    /// The preset with the overrides applied.
    pub fn resolve(&self) -> Result<MgcaConfig, String> {
        let base = match self.preset {
            Preset::Reference => MgcaConfig::reference_for(self.image_encoder),
            Preset::Paper => MgcaConfig {
                objective: crate::loss::ObjectiveConfig::paper(self.image_encoder),
                ..MgcaConfig::reference_for(self.image_encoder)
            },
            Preset::Smoke => MgcaConfig::smoke_for(self.image_encoder),
        };
        let mut value = toml::Value::try_from(&base).map_err(|e| e.to_string())?;
        let mut added = Vec::new();
        merge(&mut value, &toml::Value::Table(self.config.clone()), "", &mut added);
        let config: MgcaConfig = value.try_into().map_err(|e: toml::de::Error| e.to_string())?;
        // A key the configuration does not know is dropped by deserialisation: refuse it.
        let back = toml::Value::try_from(&config).map_err(|e| e.to_string())?;
        if let Some(unknown) = added.iter().find(|p| lookup(&back, p).is_none()) {
            return Err(format!("`config.{unknown}` is not a configuration field"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/pretrain")
    }

    /// Every shipped pretraining config parses and resolves; the paper ones are the reference's
    /// published runs.
    #[test]
    fn shipped_configs_resolve() {
        let vit = Experiment::read(&configs().join("paper_vit.toml")).unwrap();
        let c = vit.resolve().unwrap();
        assert_eq!(c, MgcaConfig::reference_for(ImageEncoderKind::VitBase));
        assert_eq!((vit.tier, vit.devices.clone()), (Tier::Paper, vec![0, 1]));
        let resnet = Experiment::read(&configs().join("paper_resnet.toml")).unwrap();
        assert_eq!(resnet.resolve().unwrap().image_encoder, ImageEncoderKind::Resnet50);
        let smoke = Experiment::read(&configs().join("smoke.toml")).unwrap();
        assert_eq!(smoke.tier, Tier::Smoke);
        assert!(smoke.data.synthetic.is_some());
        let c = smoke.resolve().unwrap();
        assert_eq!(c.bert, MgcaConfig::smoke().bert);
    }

    #[test]
    fn overrides_merge_and_unknown_fields_fail() {
        let text = r#"
name = "x"
reproduces = "y"
tier = "smoke"
preset = "smoke"
image_encoder = "resnet50"
[config.train]
epochs = 3
max_steps = 7
"#;
        let e: Experiment = toml::from_str(text).unwrap();
        let c = e.resolve().unwrap();
        assert_eq!((c.train.epochs, c.train.shard_batch), (3, MgcaConfig::smoke().train.shard_batch));
        assert_eq!(c.train.max_steps, Some(7));
        let bad: Experiment = toml::from_str(&text.replace("epochs = 3", "epoch = 3")).unwrap();
        assert!(bad.resolve().unwrap_err().contains("config.train.epoch"));
    }
}
