//! The encoders' shapes: ViT-B/16, ResNet-50 and the 6-layer BERT, as plain data.
//!
//! These are the architecture hyperparameters that [`super::MgcaConfig`] holds; the modules they
//! build live in [`crate::model`] (`VitConfig::init` in `model/vit.rs`, `ResNetConfig::init` in
//! `model/resnet.rs`, `BertConfig::init` in `model/bert.rs`), which re-exports these types. Keeping
//! the data here lets the configuration sit below the model: `model → config`, never back.
//!
//! Book: "Image encoder: ViT-B/16", "Image encoder: ResNet-50" and "Text encoder: BERT and the
//! tokenizer". Reference: `mgca/models/backbones/vits.py`, `create_vit`; `cnn_backbones.py`,
//! `resnet_50`; `encoder.py`, `BertEncoder.__init__`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none here; the position-id quirk is described in `model/bert.rs`.

use serde::{Deserialize, Serialize};

/// The shape of a ViT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Input side in pixels (224).
    pub image_size: usize,
    /// Patch side in pixels (16).
    pub patch_size: usize,
    /// Token width D (768 for ViT-B).
    pub dim: usize,
    /// Number of blocks (12).
    pub depth: usize,
    /// Attention heads (12).
    pub heads: usize,
    /// Hidden width of each MLP (3072 = 4·D).
    pub mlp_dim: usize,
}

impl VitConfig {
    /// ViT-B/16 at 224 px, as DeiT-B and MGCA.
    pub fn base() -> Self {
        Self { image_size: 224, patch_size: 16, dim: 768, depth: 12, heads: 12, mlp_dim: 3072 }
    }

    /// Number of patch tokens (196 for 224/16).
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// Which torchvision ImageNet weights initialise ResNet-50 (book: "Image encoder: ResNet-50").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImagenetWeights {
    /// `IMAGENET1K_V1` (`pretrained=True`), what MGCA's first public commit, closest to the
    /// paper, asked for: the default for reproducing the paper.
    V1,
    /// `IMAGENET1K_V2` (`ResNet50_Weights.DEFAULT`), what the reference's HEAD asks for.
    V2,
}

impl ImagenetWeights {
    /// torchvision's file name for these weights.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::V1 => "resnet50-0676ba61.pth",
            Self::V2 => "resnet50-11ad3fa6.pth",
        }
    }
}

/// The shape of a torchvision bottleneck ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Channels of the stem and of the first stage's bottleneck (64); stage `s` uses `64·2ˢ`.
    pub width: usize,
    /// Bottlenecks per stage (`[3, 4, 6, 3]` for ResNet-50).
    pub blocks: [usize; 4],
    /// Output channels of a bottleneck per inner channel (4).
    pub expansion: usize,
    /// The side the input is bilinearly (align-corners) resized to before the stem: 299 in
    /// MGCA pretraining and linear probing, `None` for detection and segmentation.
    pub upsample_to: Option<usize>,
}

impl ResNetConfig {
    /// torchvision's `resnet50` as MGCA pretrains it (input up-sampled to 299 px).
    pub fn resnet50() -> Self {
        Self { width: 64, blocks: [3, 4, 6, 3], expansion: 4, upsample_to: Some(299) }
    }

    /// Channels of the pooled global feature (2048).
    pub fn global_dim(&self) -> usize {
        self.width * 8 * self.expansion
    }

    /// Channels of the layer-3 local tokens (1024).
    pub fn local_dim(&self) -> usize {
        self.width * 4 * self.expansion
    }

    /// Number of local tokens for an `image_size` input (361 for 224 up-sampled to 299).
    pub fn local_tokens(&self, image_size: usize) -> usize {
        // conv1 /2, maxpool /2, layer2 /2, layer3 /2, each `⌊(s − 1)/2⌋ + 1`.
        let half = |s: usize| (s - 1) / 2 + 1;
        let side = (0..4).fold(self.upsample_to.unwrap_or(image_size), |s, _| half(s));
        side * side
    }
}

/// Which position (and token-type) embeddings each token receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionIds {
    /// The reference: every token at position 0, no token-type embedding.
    Reference,
    /// Standard BERT: positions 0, 1, 2, …, and token type 0 when the checkpoint has the table.
    Standard,
}

/// The shape of a BERT encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size (28996 for Bio_ClinicalBERT).
    pub vocab_size: usize,
    /// Hidden width (768).
    pub hidden: usize,
    /// Layers run (6 of the checkpoint's 12 in MGCA).
    pub layers: usize,
    /// Attention heads (12).
    pub heads: usize,
    /// Feed-forward width (3072).
    pub intermediate: usize,
    /// Rows of the position-embedding table (512).
    pub max_positions: usize,
}

impl BertConfig {
    /// MGCA's text encoder: Bio_ClinicalBERT's widths, 6 layers.
    pub fn mgca() -> Self {
        Self { vocab_size: 28996, hidden: 768, layers: 6, heads: 12, intermediate: 3072, max_positions: 512 }
    }
}
