//! Experiment files: what `reproductions/configs/**.toml` hold and how they resolve to a full
//! [`MgcaConfig`].
//!
//! A file names a preset (`reference`, `paper` or `smoke`) for an image encoder and overrides
//! any of its fields in a `[config]` table, deep-merged over the preset; it also says where the
//! data and the encoders' initial weights come from and which devices it expects. The resolved
//! configuration is what a run saves as `config.toml`. Resolving validates it
//! ([`MgcaConfig::validate`], paths prefixed `config.`) and the file's own fields: the run
//! `name` is one plain folder name, so `OUT/<name>` stays inside `--out`; devices are distinct
//! and fit the shards; paths are not empty.
//!
//! Book: "Pretraining" (running it). Reference: `mgca/models/mgca/mgca_module.py`, `cli_main` and
//! `MGCA.add_model_specific_args` (the values the presets hold), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, FieldError, ImageEncoderKind, MgcaConfig};
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
        let mut errors = self.check(&config);
        if let Err(e) = config.validate() {
            errors.fields.extend(e.prefixed("config.").fields);
        }
        if errors.fields.is_empty() { Ok(config) } else { Err(errors.to_string()) }
    }

    /// The experiment's own fields: a run name that stays inside `--out`, devices that fit the
    /// shards, paths that are not empty.
    fn check(&self, config: &MgcaConfig) -> ConfigError {
        let mut fields = Vec::new();
        let mut bad = |path: &str, value: String, allowed: &str| {
            fields.push(FieldError { path: path.into(), value, allowed: allowed.into() })
        };
        if let Err(why) = check_run_name(&self.name) {
            bad("name", format!("{:?}", self.name), why);
        }
        let devices = &self.devices;
        let mut unique = devices.clone();
        unique.sort_unstable();
        unique.dedup();
        let shards = config.train.shards;
        if devices.is_empty() || unique.len() != devices.len() {
            bad("devices", format!("{devices:?}"), "distinct device indices, at least one");
        } else if devices.len() != 1 && devices.len() != shards {
            let allowed = format!("one device (virtual shards) or one per shard (config.train.shards = {shards})");
            bad("devices", format!("{devices:?}"), &allowed);
        }
        let paths = [
            ("data.mimic_root", &self.data.mimic_root),
            ("weights.image", &self.weights.image),
            ("weights.text", &self.weights.text),
        ];
        for (path, value) in paths {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                bad(path, "\"\"".into(), "a non-empty path, or the key left out");
            }
        }
        ConfigError { fields }
    }
}

/// Folder names under `--out` that are not runs (`pretrain` keeps prepared data in `data/`).
pub const RESERVED_NAMES: [&str; 1] = ["data"];

/// A run name is one plain path component, so that `OUT/<name>` stays inside `OUT`: not
/// empty, not `.` or `..`, no separator, not absolute, not a reserved folder.
pub fn check_run_name(name: &str) -> Result<(), &'static str> {
    use std::path::Component;
    let mut parts = Path::new(name).components();
    let plain = matches!((parts.next(), parts.next()), (Some(Component::Normal(p)), None) if p == name);
    if name.is_empty() || name.trim() != name {
        Err("a non-empty folder name without leading or trailing spaces")
    } else if !plain || name.contains(['/', '\\', '\0']) {
        Err("a single folder name inside --out: no `/` or `\\`, not `.`, `..` or an absolute path")
    } else if RESERVED_NAMES.contains(&name) {
        Err("not `data` (pretrain keeps prepared data in OUT/data)")
    } else {
        Ok(())
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

    /// Every `*.toml` under `dir`, recursively.
    fn tomls(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                tomls(&path, found);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }

    /// Every pretraining experiment file shipped under `reproductions/configs/pretrain/` passes
    /// validation (the linear cells are checked in `downstream::linear::experiment`).
    #[test]
    fn every_shipped_config_validates() {
        let mut found = Vec::new();
        tomls(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reproductions/configs/pretrain"), &mut found);
        assert!(found.len() >= 4, "{found:?}");
        for path in found {
            let e = Experiment::read(&path).unwrap_or_else(|e| panic!("{e}"));
            e.resolve().unwrap().validate().unwrap();
        }
    }

    const SMOKE: &str = r#"
name = "x"
reproduces = "y"
tier = "smoke"
preset = "smoke"
image_encoder = "vit_base"
"#;

    fn with(extra: &str) -> Result<MgcaConfig, String> {
        let e: Experiment = toml::from_str(&format!("{SMOKE}{extra}")).unwrap();
        e.resolve()
    }

    /// The issue's bad experiment files: each fails at load, naming the field and its value.
    #[test]
    fn bad_fields_fail_at_load_naming_the_field() {
        let cases = [
            ("[config.train]\nshard_batch = 0", "`config.train.shard_batch` = 0"),
            ("[config.train]\nshards = 0", "`config.train.shards` = 0"),
            ("[config.train]\ncheckpoint_every = 0", "`config.train.checkpoint_every` = 0"),
            ("[config.train]\nepochs = 0", "`config.train.epochs` = 0"),
            ("[config.train]\nlearning_rate = -1e-3", "`config.train.learning_rate` = -0.001"),
            ("[config.train]\nlearning_rate = nan", "`config.train.learning_rate` = NaN"),
            ("[config.train]\nwarmup_fraction = 2.0", "`config.train.warmup_fraction` = 2"),
            ("[config.train]\nmax_steps = 0", "`config.train.max_steps` = 0"),
            ("[config]\ntext_dropout = 1.5", "`config.text_dropout` = 1.5"),
            ("[config.vit]\nheads = 0", "`config.vit.heads` = 0"),
            ("[config.objective.cta]\ntemperature = 0.0", "`config.objective.cta.temperature` = 0"),
        ];
        for (extra, words) in cases {
            let e = with(extra).unwrap_err();
            assert!(e.contains(words) && e.contains("allowed: "), "{extra}: {e}");
        }
        assert!(with("").is_ok());
    }

    #[test]
    fn run_names_stay_inside_out() {
        for good in ["pretrain-smoke", "run 1", "a.b", "ünïcode"] {
            assert_eq!(check_run_name(good), Ok(()), "{good}");
        }
        for bad in ["", " ", " x", "/tmp/escape", "..", ".", "a/b", "a\\b", "../x", "x/", "a\0b", "data"] {
            assert!(check_run_name(bad).is_err(), "{bad:?}");
        }
        let e: Experiment = toml::from_str(&SMOKE.replace("name = \"x\"", "name = \"/tmp/escape\"")).unwrap();
        let err = e.resolve().unwrap_err();
        assert!(err.contains("`name` = \"/tmp/escape\"") && err.contains("--out"), "{err}");
    }

    #[test]
    fn devices_and_paths_are_checked() {
        let devices = |d: &str| format!("{}devices = {d}\n", SMOKE.trim_start());
        let e: Experiment = toml::from_str(&devices("[]")).unwrap();
        assert!(e.resolve().unwrap_err().contains("`devices` = []"));
        let e: Experiment = toml::from_str(&devices("[0, 0]")).unwrap();
        assert!(e.resolve().unwrap_err().contains("`devices` = [0, 0]"));
        let e: Experiment = toml::from_str(&devices("[0, 1, 2]")).unwrap();
        assert!(e.resolve().unwrap_err().contains("config.train.shards = 2"));
        let e: Experiment = toml::from_str(&devices("[0, 1]")).unwrap();
        assert!(e.resolve().is_ok());
        let err = with("[weights]\ntext = \"\"").unwrap_err();
        assert!(err.contains("`weights.text`"), "{err}");
    }

    /// `read` prefixes the file's path to every message.
    #[test]
    fn read_names_the_file() {
        let dir = std::env::temp_dir().join(format!("mgca-experiment-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, format!("{SMOKE}[config.train]\nshard_batch = 0\n")).unwrap();
        let err = Experiment::read(&path).unwrap_err();
        assert!(err.starts_with(&path.display().to_string()) && err.contains("config.train.shard_batch"), "{err}");
        std::fs::remove_dir_all(dir).ok();
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
