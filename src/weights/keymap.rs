//! Key-mapping tables: how the names in a published checkpoint become mgca-rs names.
//!
//! Each table is a data file in `src/weights/keymaps/` with one rule per line:
//!
//! - `entry NAME` — the top-level entry holding the tensors (`-`: the top level itself);
//! - `ignore PATTERN` — drop matching checkpoint keys (listed as ignored, never silently);
//!   a pattern is dotted segments matched from the start of the key, `*` matching any one
//!   segment and `{a-b}` an integer in that range (inclusive);
//! - `rename FROM TO` — replace the prefix `FROM` (`-`: empty) by `TO`; the first match wins;
//! - `suffix FROM TO` — then replace the suffix `FROM` by `TO`.
//!
//! mgca-rs names are the module paths of the whole model (`model::mgca::Mgca`): `image.*` (timm or
//! torchvision names), `text.*` (Hugging Face BERT names), `image_global.*`, `image_local.*`,
//! `text_global.*`, `text_local.*` (head indices `0, 1, 3, 4`) and `prototypes`.
//!
//! Book: "Checkpoints and weight loading" (the key tables). Reference:
//! `mgca/models/backbones/encoder.py`, `ImageEncoder.__init__` and `BertEncoder.__init__` (the
//! initial weights and the modules never run), and `mgca/models/mgca/mgca_module.py`, `MGCA`
//! (the Lightning checkpoint's prefixes), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::torch::{Checkpoint, CheckpointError};
use crate::tensor_file::TensorFile;

/// The published checkpoint layouts MGCA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// DeiT-B/16 ImageNet weights (`{"model": state_dict}`), the ViT's initialisation.
    Deit,
    /// A torchvision ResNet-50 state dict, the ResNet's initialisation.
    TorchvisionResnet,
    /// Bio_ClinicalBERT, the text encoder's initialisation (first 6 layers).
    BioClinicalBert,
    /// A released MGCA Lightning checkpoint (the whole pretrained model).
    MgcaLightning,
    /// A segmentation-models-pytorch U-Net on ResNet-50 (the segmentation model).
    SmpUnet,
}

impl Layout {
    /// Every layout.
    pub const ALL: [Layout; 5] =
        [Self::Deit, Self::TorchvisionResnet, Self::BioClinicalBert, Self::MgcaLightning, Self::SmpUnet];

    /// The layout's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deit => "deit",
            Self::TorchvisionResnet => "torchvision-resnet",
            Self::BioClinicalBert => "bio-clinicalbert",
            Self::MgcaLightning => "mgca-lightning",
            Self::SmpUnet => "smp-unet",
        }
    }

    /// The layout's key table.
    pub fn keymap(self) -> KeyMap {
        let text = match self {
            Self::Deit => include_str!("keymaps/deit.keymap"),
            Self::TorchvisionResnet => include_str!("keymaps/torchvision_resnet.keymap"),
            Self::BioClinicalBert => include_str!("keymaps/bio_clinicalbert.keymap"),
            Self::MgcaLightning => include_str!("keymaps/mgca_lightning.keymap"),
            Self::SmpUnet => include_str!("keymaps/smp_unet.keymap"),
        };
        KeyMap::parse(self.name(), text).expect("the built-in key tables parse")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Any,
    Range(u64, u64),
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    Ignore(Vec<Segment>, String),
    Rename(String, String),
    Suffix(String, String),
}

/// A parsed key table.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMap {
    /// Its name (the layout's).
    pub name: String,
    /// `Some(None)`: the top level; `Some(Some(e))`: entry `e`; `None`: found automatically.
    pub entry: Option<Option<String>>,
    rules: Vec<Rule>,
}

/// A malformed key table line.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyMapError {
    /// Table name.
    pub table: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for KeyMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key table `{}` line {}: {}", self.table, self.line, self.message)
    }
}

impl std::error::Error for KeyMapError {}

fn segment(s: &str) -> Result<Segment, String> {
    if s == "*" {
        return Ok(Segment::Any);
    }
    if let Some(range) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        let (a, b) = range.split_once('-').ok_or_else(|| format!("range `{s}` is not {{a-b}}"))?;
        let (a, b) = (a.parse().map_err(|_| format!("range `{s}`"))?, b.parse().map_err(|_| format!("range `{s}`"))?);
        return Ok(Segment::Range(a, b));
    }
    Ok(Segment::Literal(s.to_string()))
}

/// What a table does with one checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// Dropped by the `ignore` rule with this pattern.
    Ignored(String),
    /// Kept under this mgca-rs name.
    Name(String),
}

impl KeyMap {
    /// Parse a table (see the module documentation for the syntax).
    pub fn parse(name: &str, text: &str) -> Result<Self, KeyMapError> {
        let mut map = KeyMap { name: name.into(), entry: None, rules: Vec::new() };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| KeyMapError { table: name.into(), line: i + 1, message };
            let words: Vec<&str> = line.split_whitespace().collect();
            let dash = |s: &str| if s == "-" { String::new() } else { s.to_string() };
            match words.as_slice() {
                ["entry", e] => map.entry = Some((*e != "-").then(|| e.to_string())),
                ["ignore", pattern] => {
                    let segments = pattern.split('.').map(segment).collect::<Result<_, _>>().map_err(err)?;
                    map.rules.push(Rule::Ignore(segments, pattern.to_string()));
                }
                ["rename", from, to] => map.rules.push(Rule::Rename(dash(from), dash(to))),
                ["suffix", from, to] => map.rules.push(Rule::Suffix(from.to_string(), to.to_string())),
                _ => return Err(err(format!("cannot read `{line}`"))),
            }
        }
        Ok(map)
    }

    /// Read a table from a file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())
    }

    // ANCHOR: map
    /// Map one checkpoint key.
    pub fn map(&self, key: &str) -> Mapped {
        let parts: Vec<&str> = key.split('.').collect();
        let ignored = self.rules.iter().find_map(|r| match r {
            Rule::Ignore(pattern, text)
                if pattern.len() <= parts.len()
                    && pattern.iter().zip(&parts).all(|(p, k)| match p {
                        Segment::Literal(l) => l == k,
                        Segment::Any => true,
                        Segment::Range(a, b) => k.parse::<u64>().is_ok_and(|n| (*a..=*b).contains(&n)),
                    }) =>
            {
                Some(text.clone())
            }
            _ => None,
        });
        if let Some(rule) = ignored {
            return Mapped::Ignored(rule);
        }
        let mut name = key.to_string();
        if let Some((from, to)) = self.rules.iter().find_map(|r| match r {
            Rule::Rename(from, to) if key.starts_with(from.as_str()) => Some((from, to)),
            _ => None,
        }) {
            name = format!("{to}{}", &key[from.len()..]);
        }
        for rule in &self.rules {
            if let Rule::Suffix(from, to) = rule
                && let Some(stem) = name.strip_suffix(from.as_str())
            {
                name = format!("{stem}{to}");
            }
        }
        Mapped::Name(name)
    }
    // ANCHOR_END: map

    /// Read `checkpoint` through this table: the kept tensors under mgca-rs names, and every
    /// checkpoint key that was ignored. Two keys mapping to one name is an error.
    pub fn import(&self, checkpoint: &Checkpoint) -> Result<Import, CheckpointError> {
        let entry = match &self.entry {
            Some(Some(e)) => Some(e.as_str()),
            _ => None,
        };
        let (entry, refs) = checkpoint.state_dict(entry)?;
        let mut out = Import {
            entry,
            tensors: TensorFile::default(),
            ignored: Vec::new(),
            ignored_by_rule: Vec::new(),
            sources: BTreeMap::new(),
        };
        for (key, t) in &refs {
            match self.map(key) {
                Mapped::Ignored(rule) => {
                    out.ignored.push(key.clone());
                    match out.ignored_by_rule.iter_mut().find(|(r, _)| *r == rule) {
                        Some((_, n)) => *n += 1,
                        None => out.ignored_by_rule.push((rule, 1)),
                    }
                }
                Mapped::Name(name) => {
                    if let Some(first) = out.sources.get(&name) {
                        return Err(CheckpointError::Tensor {
                            path: checkpoint.path().into(),
                            key: key.clone(),
                            message: format!("maps to `{name}`, as `{first}` does (key table `{}`)", self.name),
                        });
                    }
                    out.tensors.tensors.insert(name.clone(), checkpoint.read_tensor(key, t)?);
                    out.sources.insert(name, key.clone());
                }
            }
        }
        Ok(out)
    }
}

/// A checkpoint read through a key table.
#[derive(Debug, Clone)]
pub struct Import {
    /// The top-level entry the tensors came from (`None`: the top level).
    pub entry: Option<String>,
    /// The kept tensors, under mgca-rs names.
    pub tensors: TensorFile,
    /// Checkpoint keys an `ignore` rule dropped, in file order.
    pub ignored: Vec<String>,
    /// Each `ignore` rule that dropped keys, with how many.
    pub ignored_by_rule: Vec<(String, usize)>,
    /// mgca-rs name → the checkpoint key it came from.
    pub sources: BTreeMap<String, String>,
}

impl Import {
    /// The checkpoint key behind an mgca-rs name, for error messages (the name itself if it
    /// came from nowhere, e.g. a key the model needs and the checkpoint lacks).
    pub fn source_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.sources.get(name).map(String::as_str).unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tables_parse_and_map_every_prefix() {
        let m = Layout::MgcaLightning.keymap();
        assert_eq!(m.entry, Some(Some("state_dict".into())));
        let name = |k: &str| m.map(k);
        assert_eq!(
            name("img_encoder_q.model.blocks.3.attn.qkv.weight"),
            Mapped::Name("image.blocks.3.attn.qkv.weight".into())
        );
        assert_eq!(
            name("img_encoder_q.global_embed.head.4.running_var"),
            Mapped::Name("image_global.4.running_var".into())
        );
        assert_eq!(name("text_encoder_q.local_embed.head.0.weight"), Mapped::Name("text_local.0.weight".into()));
        assert_eq!(name("prototype_layer.weight"), Mapped::Name("prototypes".into()));
        assert_eq!(name("patch_local_atten_layer.in_proj_weight"), Mapped::Ignored("patch_local_atten_layer".into()));
        assert!(matches!(
            name("text_encoder_q.model.encoder.layer.4.crossattention.self.query.bias"),
            Mapped::Ignored(_)
        ));
        // A pattern matches whole segments, not string prefixes.
        assert_eq!(name("patch_local_atten_layer_x.w"), Mapped::Name("patch_local_atten_layer_x.w".into()));

        let b = Layout::BioClinicalBert.keymap();
        assert_eq!(
            b.map("bert.encoder.layer.5.output.LayerNorm.gamma"),
            Mapped::Name("text.encoder.layer.5.output.LayerNorm.weight".into())
        );
        assert_eq!(
            b.map("bert.encoder.layer.6.output.dense.bias"),
            Mapped::Ignored("bert.encoder.layer.{6-23}".into())
        );
        assert_eq!(
            b.map("bert.encoder.layer.11.output.dense.bias"),
            Mapped::Ignored("bert.encoder.layer.{6-23}".into())
        );
        assert_eq!(
            b.map("encoder.layer.0.output.dense.bias"),
            Mapped::Name("text.encoder.layer.0.output.dense.bias".into())
        );
        assert!(matches!(b.map("cls.predictions.decoder.weight"), Mapped::Ignored(_)));
        for layout in Layout::ALL {
            assert_eq!(layout.keymap().name, layout.name());
        }
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = KeyMap::parse("t", "entry model\n\nrename a\n").unwrap_err();
        assert_eq!((err.line, err.table.as_str()), (3, "t"));
        let err = KeyMap::parse("t", "ignore a.{1-x}\n").unwrap_err();
        assert!(err.message.contains("range"), "{err}");
    }
}
