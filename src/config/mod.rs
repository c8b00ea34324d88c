//! One typed configuration for every MGCA hyperparameter, with named presets.
//!
//! Each field's documentation names the paper's symbol and the reference's value. Presets:
//! [`MgcaConfig::reference`] (the reference implementation, quirks included: faithful mode),
//! [`MgcaConfig::paper`] (the paper's stated choices where the code differs, marked
//! in the book's "where the code and the paper differ" lists) and [`MgcaConfig::smoke`] (tiny sizes for tests and CI).
//!
//! [`MgcaConfig::validate`] checks every field's range and the fields' consistency (heads divide
//! widths, the Sinkhorn ε keeps `exp(1/ε)` finite, the crop fits the cache) and lists every bad
//! field with its path, value and allowed range ([`ConfigError`]); the book's appendix on bad
//! input states the policy.
//!
//! Book: "Pretraining" and "The objective at a glance". Reference: `mgca/models/mgca/mgca_module.py`,
//! `MGCA.__init__` and `MGCA.add_model_specific_args` (the defaults), and the pretraining command
//! in the reference's README, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none: `reference()` is the code's behaviour; the paper's choices are options.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::loss::{
    CpaConfig, CtaConfig, ItaConfig, ObjectiveConfig, PatchWeighting, QuantileRange, SinkhornConfig, SinkhornScope,
};

pub mod encoders;

pub use encoders::{BertConfig, ImagenetWeights, PositionIds, ResNetConfig, VitConfig};

/// The image encoder, which also decides CTA's patch branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageEncoderKind {
    /// ViT-B/16 from DeiT-B (196 patch tokens, [CLS]-attention patch weights).
    VitBase,
    /// ResNet-50 (361 layer-3 tokens at 299 px, uniform patch weights).
    Resnet50,
}

impl ImageEncoderKind {
    /// Parse the reference's names (`vit_base`, `resnet_50`).
    pub fn from_reference_name(name: &str) -> Option<Self> {
        match name {
            "vit_base" => Some(Self::VitBase),
            "resnet_50" => Some(Self::Resnet50),
            _ => None,
        }
    }
}

/// Every hyperparameter of an MGCA run (the objective's part for now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MgcaConfig {
    /// Which image encoder produces `v` and the local tokens `P`.
    pub image_encoder: ImageEncoderKind,
    /// The ViT's shape (ViT-B/16: width 768, 12 blocks, 12 heads), used when `image_encoder`
    /// is `vit_base`.
    pub vit: VitConfig,
    /// The ResNet's shape (ResNet-50, input up-sampled to 299 px), used when `image_encoder`
    /// is `resnet_50`.
    pub resnet: ResNetConfig,
    /// Which ImageNet weights initialise ResNet-50: V1 (the paper's era) by default; V2 is what
    /// the reference's HEAD downloads.
    pub resnet_weights: ImagenetWeights,
    /// The text encoder's shape (Bio_ClinicalBERT widths, 6 layers).
    pub bert: BertConfig,
    /// The text encoder's dropout probability in training (Bio_ClinicalBERT's hidden and
    /// attention dropout: 0.1). The image encoders have none (DeiT's rates are 0).
    pub text_dropout: f64,
    /// H, the hidden width of the projection heads (reference: 2048).
    pub projection_hidden: usize,
    /// d, the width of the shared embedding space (reference and paper: 128).
    pub embed_dim: usize,
    /// K, the number of prototypes (reference and paper: 500).
    pub num_prototypes: usize,
    /// The objective: λ₁, λ₂, λ₃, τ₁, τ₂, τ₃, ε and the reference's quirks.
    pub objective: ObjectiveConfig,
    /// Pretraining: optimiser, schedule, shards, epochs, checkpoints.
    pub train: TrainConfig,
}

/// Every pretraining hyperparameter (reference: `MGCA.add_model_specific_args`, `MGCA.configure_optimizers`
/// and `MGCA.on_after_backward`; book: "Pretraining").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Maximum epochs (reference: 50).
    pub epochs: usize,
    /// Stop after this many optimiser steps in all (none in the reference; smoke runs).
    pub max_steps: Option<usize>,
    /// Pairs per shard, i.e. per GPU in the reference (72).
    pub shard_batch: usize,
    /// Shards per step: the reference's 2 GPUs. Each shard has its own BatchNorm statistics,
    /// ITA negatives and Sinkhorn; their gradients are averaged.
    pub shards: usize,
    /// η, the peak learning rate (2e-5).
    pub learning_rate: f64,
    /// η_min, the learning rate at step 0 and at the end of the cosine (1e-8).
    pub min_learning_rate: f64,
    /// The warm-up's share of the planned steps (0.4: 20 of 50 epochs).
    pub warmup_fraction: f64,
    /// AdamW β₁ (0.9).
    pub beta1: f32,
    /// AdamW β₂ (0.999).
    pub beta2: f32,
    /// AdamW ε (1e-8).
    pub adam_epsilon: f32,
    /// AdamW decoupled weight decay, on every parameter (0.05).
    pub weight_decay: f32,
    /// Epochs during which the prototypes get no update (1: epoch 0 only).
    pub freeze_prototype_epochs: usize,
    /// Early stopping: epochs without a lower validation loss before stopping (5).
    pub patience: usize,
    /// Checkpoints kept by lowest validation loss, besides the last (5).
    pub keep_best: usize,
    /// Seed of initialisation, shuffling and crops (42).
    pub seed: u32,
    /// Tokens per report, [CLS] and [SEP] included (112).
    pub max_tokens: usize,
    /// Side of the cached, padded images (256; the crop is the encoder's input side).
    pub cache_side: usize,
    /// Save the resumable `last` checkpoint every this many steps (and at every epoch end).
    pub checkpoint_every: usize,
}

impl TrainConfig {
    /// The reference's published run: 50 epochs of 2 × 72 pairs.
    pub fn reference() -> Self {
        Self {
            epochs: 50,
            max_steps: None,
            shard_batch: 72,
            shards: 2,
            learning_rate: 2e-5,
            min_learning_rate: 1e-8,
            warmup_fraction: 0.4,
            beta1: 0.9,
            beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.05,
            freeze_prototype_epochs: 1,
            patience: 5,
            keep_best: 5,
            seed: 42,
            max_tokens: 112,
            cache_side: 256,
            checkpoint_every: 500,
        }
    }

    /// A CPU run of a few minutes on the tiny synthetic data: 2 shards of 8, a higher
    /// learning rate so that a tiny model learns in a few hundred steps.
    pub fn smoke() -> Self {
        Self {
            epochs: 6,
            shard_batch: 8,
            learning_rate: 2e-3,
            max_tokens: 32,
            cache_side: 36,
            checkpoint_every: 20,
            ..Self::reference()
        }
    }
}

/// One configuration field outside its allowed range.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field's path, e.g. `train.shard_batch`.
    pub path: String,
    /// Its value as written.
    pub value: String,
    /// What is allowed, e.g. `>= 1`.
    pub allowed: String,
}

/// Every invalid field of a configuration, in the order the fields are declared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigError {
    /// The bad fields (never empty in an `Err`).
    pub fields: Vec<FieldError>,
}

impl ConfigError {
    /// The same errors with `prefix` in front of every path (`config.` for an experiment file).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for f in &mut self.fields {
            f.path.insert_str(0, prefix);
        }
        self
    }

    /// Whether `path` is among the bad fields.
    pub fn names(&self, path: &str) -> bool {
        self.fields.iter().any(|f| f.path == path)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fields.len() > 1 {
            write!(f, "{} invalid configuration fields: ", self.fields.len())?;
        } else {
            write!(f, "invalid configuration field: ")?;
        }
        for (i, e) in self.fields.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}`{}` = {} (allowed: {})", e.path, e.value, e.allowed)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

/// Collects range violations field by field.
#[derive(Default)]
struct Checks {
    errors: Vec<FieldError>,
}

impl Checks {
    fn push(&mut self, path: &str, value: impl fmt::Display, allowed: impl Into<String>) {
        self.errors.push(FieldError { path: path.into(), value: value.to_string(), allowed: allowed.into() });
    }

    fn check(&mut self, ok: bool, path: &str, value: impl fmt::Display, allowed: impl Into<String>) {
        if !ok {
            self.push(path, value, allowed);
        }
    }

    /// A count where 0 is meaningless.
    fn at_least_one(&mut self, path: &str, v: usize) {
        self.check(v >= 1, path, v, ">= 1");
    }

    /// `part` (at `path`) divides `whole` (at `whole_path`); skipped while either is 0, which
    /// `at_least_one` reports.
    fn divides(&mut self, path: &str, part: usize, whole_path: &str, whole: usize) {
        if part >= 1 && whole >= 1 {
            self.check(whole.is_multiple_of(part), path, part, format!("a divisor of {whole_path} ({whole})"));
        }
    }

    /// A rate, temperature or ε: finite and > 0.
    fn positive<F: Copy + Into<f64> + fmt::Display>(&mut self, path: &str, v: F) {
        let x = v.into();
        self.check(x.is_finite() && x > 0.0, path, v, "finite and > 0");
    }

    /// A weight or decay: finite and >= 0.
    fn non_negative<F: Copy + Into<f64> + fmt::Display>(&mut self, path: &str, v: F) {
        let x = v.into();
        self.check(x.is_finite() && x >= 0.0, path, v, "finite and >= 0");
    }

    /// A fraction or quantile level in [0, 1].
    fn fraction<F: Copy + Into<f64> + fmt::Display>(&mut self, path: &str, v: F) {
        let x = v.into();
        self.check((0.0..=1.0).contains(&x), path, v, "in [0, 1]");
    }

    /// A dropout probability or an Adam β in [0, 1).
    fn dropout<F: Copy + Into<f64> + fmt::Display>(&mut self, path: &str, v: F) {
        let x = v.into();
        self.check((0.0..1.0).contains(&x), path, v, "in [0, 1)");
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() { Ok(()) } else { Err(ConfigError { fields: self.errors }) }
    }
}

/// Tokens per report below which no word slot is left besides [CLS] and [SEP].
pub const MIN_MAX_TOKENS: usize = 3;

impl VitConfig {
    fn check(&self, c: &mut Checks, p: &str) {
        let f = |name: &str| format!("{p}{name}");
        c.at_least_one(&f("image_size"), self.image_size);
        c.at_least_one(&f("patch_size"), self.patch_size);
        c.divides(&f("patch_size"), self.patch_size, &f("image_size"), self.image_size);
        c.at_least_one(&f("dim"), self.dim);
        c.at_least_one(&f("depth"), self.depth);
        c.at_least_one(&f("heads"), self.heads);
        c.divides(&f("heads"), self.heads, &f("dim"), self.dim);
        c.at_least_one(&f("mlp_dim"), self.mlp_dim);
    }
}

impl ResNetConfig {
    fn check(&self, c: &mut Checks, p: &str) {
        c.at_least_one(&format!("{p}width"), self.width);
        for (i, &b) in self.blocks.iter().enumerate() {
            c.at_least_one(&format!("{p}blocks[{i}]"), b);
        }
        c.at_least_one(&format!("{p}expansion"), self.expansion);
        if let Some(side) = self.upsample_to {
            c.at_least_one(&format!("{p}upsample_to"), side);
        }
    }
}

impl BertConfig {
    fn check(&self, c: &mut Checks, p: &str) {
        let f = |name: &str| format!("{p}{name}");
        c.at_least_one(&f("vocab_size"), self.vocab_size);
        c.at_least_one(&f("hidden"), self.hidden);
        c.at_least_one(&f("layers"), self.layers);
        c.at_least_one(&f("heads"), self.heads);
        c.divides(&f("heads"), self.heads, &f("hidden"), self.hidden);
        c.at_least_one(&f("intermediate"), self.intermediate);
        c.at_least_one(&f("max_positions"), self.max_positions);
    }
}

impl TrainConfig {
    fn check(&self, c: &mut Checks) {
        c.at_least_one("train.epochs", self.epochs);
        if let Some(m) = self.max_steps {
            c.check(m >= 1, "train.max_steps", m, ">= 1, or absent for no limit");
        }
        c.at_least_one("train.shard_batch", self.shard_batch);
        c.at_least_one("train.shards", self.shards);
        c.positive("train.learning_rate", self.learning_rate);
        c.non_negative("train.min_learning_rate", self.min_learning_rate);
        if self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.min_learning_rate > self.learning_rate {
            let allowed = format!("<= train.learning_rate ({})", self.learning_rate);
            c.push("train.min_learning_rate", self.min_learning_rate, allowed);
        }
        c.fraction("train.warmup_fraction", self.warmup_fraction);
        c.dropout("train.beta1", self.beta1);
        c.dropout("train.beta2", self.beta2);
        c.positive("train.adam_epsilon", self.adam_epsilon);
        c.non_negative("train.weight_decay", self.weight_decay);
        c.at_least_one("train.patience", self.patience);
        c.at_least_one("train.keep_best", self.keep_best);
        c.check(self.max_tokens >= MIN_MAX_TOKENS, "train.max_tokens", self.max_tokens, format!(">= {MIN_MAX_TOKENS}"));
        c.at_least_one("train.cache_side", self.cache_side);
        c.at_least_one("train.checkpoint_every", self.checkpoint_every);
    }
}

impl ObjectiveConfig {
    /// Check the objective's own fields (paths relative to it: `cta.temperature`): temperatures
    /// and ε finite and > 0, at least one Sinkhorn iteration, quantile levels `0 <= lo <= hi
    /// <= 1`, λ finite and >= 0 with at least one > 0. The ε bound that depends on the batch
    /// is [`SinkhornConfig::min_epsilon`], checked by [`MgcaConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checks::default();
        c.positive("ita.temperature", self.ita.temperature);
        c.positive("cta.temperature", self.cta.temperature);
        for (name, clip) in
            [("word_weight_clip", self.cta.word_weight_clip), ("patch_weight_clip", self.cta.patch_weight_clip)]
        {
            if let Some(QuantileRange { lo, hi }) = clip {
                c.fraction(&format!("cta.{name}.lo"), lo);
                c.fraction(&format!("cta.{name}.hi"), hi);
                if lo <= 1.0 && hi >= 0.0 && lo > hi {
                    c.push(&format!("cta.{name}.hi"), hi, format!(">= cta.{name}.lo ({lo})"));
                }
            }
        }
        c.positive("cpa.temperature", self.cpa.temperature);
        c.positive("cpa.sinkhorn.epsilon", self.cpa.sinkhorn.epsilon);
        c.at_least_one("cpa.sinkhorn.iterations", self.cpa.sinkhorn.iterations);
        let lambdas =
            [("lambda_ita", self.lambda_ita), ("lambda_cta", self.lambda_cta), ("lambda_cpa", self.lambda_cpa)];
        for (name, v) in lambdas {
            c.non_negative(name, v);
        }
        if lambdas.iter().all(|(_, v)| *v == 0.0) {
            c.push("lambda_cpa", self.lambda_cpa, "> 0 for at least one of lambda_ita, lambda_cta, lambda_cpa");
        }
        c.finish()
    }
}

// ANCHOR: presets
impl ObjectiveConfig {
    /// The reference implementation's objective for an image encoder (faithful mode).
    pub fn reference(encoder: ImageEncoderKind) -> Self {
        Self {
            ita: ItaConfig::reference(),
            cta: match encoder {
                ImageEncoderKind::VitBase => CtaConfig::reference_vit(),
                ImageEncoderKind::Resnet50 => CtaConfig::reference_resnet(),
            },
            cpa: CpaConfig::reference(),
            lambda_ita: 1.0,
            lambda_cta: 1.0,
            lambda_cpa: 1.0,
        }
    }

    /// The objective as the paper states it: τ₁ = 0.1,
    /// τ₂ = 0.07, averaged directions and sides, raw [CLS]-attention weights, every attended
    /// context normalised, Sinkhorn over the global batch.
    pub fn paper(encoder: ImageEncoderKind) -> Self {
        let mut cpa = CpaConfig::reference();
        cpa.sinkhorn.scope = SinkhornScope::Global;
        Self {
            ita: ItaConfig::paper(),
            cta: CtaConfig::paper(match encoder {
                ImageEncoderKind::VitBase => PatchWeighting::ClsAttention,
                ImageEncoderKind::Resnet50 => PatchWeighting::Uniform,
            }),
            cpa,
            lambda_ita: 1.0,
            lambda_cta: 1.0,
            lambda_cpa: 1.0,
        }
    }
}

impl MgcaConfig {
    /// Check every field's range and consistency; the error lists each bad field by its path
    /// (`train.shard_batch`) with its value and the allowed range. Called wherever a
    /// configuration enters a run, before anything is written.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checks::default();
        self.vit.check(&mut c, "vit.");
        self.resnet.check(&mut c, "resnet.");
        self.bert.check(&mut c, "bert.");
        c.dropout("text_dropout", self.text_dropout);
        c.at_least_one("projection_hidden", self.projection_hidden);
        c.at_least_one("embed_dim", self.embed_dim);
        c.at_least_one("num_prototypes", self.num_prototypes);
        if let Err(e) = self.objective.validate() {
            c.errors.extend(e.prefixed("objective.").fields);
        }
        self.train.check(&mut c);
        // Consistency between sections.
        let cta = &self.objective.cta;
        if cta.patch_weighting == PatchWeighting::ClsAttention && self.image_encoder != ImageEncoderKind::VitBase {
            c.push(
                "objective.cta.patch_weighting",
                "cls_attention",
                format!("`uniform` for image_encoder = {:?} (only the ViT has [CLS] attention)", self.image_encoder),
            );
        }
        let t = &self.train;
        // No bound of max_tokens by bert.max_positions: MGCA's BERT puts every token at
        // position 0 (PositionIds::Reference), so the table's length does not limit a report.
        c.check(
            t.cache_side >= self.image_size(),
            "train.cache_side",
            t.cache_side,
            format!(">= the crop side vit.image_size ({})", self.image_size()),
        );
        let sinkhorn = &self.objective.cpa.sinkhorn;
        let samples = match sinkhorn.scope {
            SinkhornScope::PerDevice => t.shard_batch,
            SinkhornScope::Global => t.shard_batch.saturating_mul(t.shards),
        };
        let floor = SinkhornConfig::min_epsilon(self.num_prototypes.saturating_mul(samples));
        if sinkhorn.epsilon.is_finite() && sinkhorn.epsilon > 0.0 && (sinkhorn.epsilon as f64) < floor {
            c.push(
                "objective.cpa.sinkhorn.epsilon",
                sinkhorn.epsilon,
                format!(
                    ">= {floor:.4}: below it exp(1/epsilon) summed over num_prototypes x samples = {} x {samples} \
                     scores overflows f32",
                    self.num_prototypes
                ),
            );
        }
        c.finish()
    }

    /// The input side in pixels the data pipeline must produce (224 for both encoders; the
    /// ResNet up-samples internally).
    pub fn image_size(&self) -> usize {
        self.vit.image_size
    }

    /// The reference implementation's published ViT-B/16 run (faithful mode).
    pub fn reference() -> Self {
        Self::reference_for(ImageEncoderKind::VitBase)
    }

    /// The reference's configuration for either image encoder.
    pub fn reference_for(image_encoder: ImageEncoderKind) -> Self {
        Self {
            image_encoder,
            vit: VitConfig::base(),
            resnet: ResNetConfig::resnet50(),
            resnet_weights: ImagenetWeights::V1,
            bert: BertConfig::mgca(),
            text_dropout: 0.1,
            projection_hidden: 2048,
            embed_dim: 128,
            num_prototypes: 500,
            objective: ObjectiveConfig::reference(image_encoder),
            train: TrainConfig::reference(),
        }
    }

    /// The paper's stated choices where they differ from the code.
    pub fn paper() -> Self {
        let image_encoder = ImageEncoderKind::VitBase;
        Self { objective: ObjectiveConfig::paper(image_encoder), ..Self::reference_for(image_encoder) }
    }

    /// Tiny sizes with the reference's behaviour, for tests and CPU smoke runs (ViT).
    pub fn smoke() -> Self {
        Self::smoke_for(ImageEncoderKind::VitBase)
    }

    /// Tiny sizes with the reference's behaviour for either image encoder. The tiny ResNet
    /// up-samples its 32 px input to 40 px, as the real one takes 224 to 299.
    pub fn smoke_for(image_encoder: ImageEncoderKind) -> Self {
        Self {
            vit: VitConfig { image_size: 32, patch_size: 8, dim: 32, depth: 2, heads: 2, mlp_dim: 64 },
            resnet: ResNetConfig { width: 4, blocks: [1, 1, 1, 1], expansion: 4, upsample_to: Some(40) },
            bert: BertConfig { vocab_size: 128, hidden: 32, layers: 2, heads: 2, intermediate: 64, max_positions: 32 },
            projection_hidden: 64,
            embed_dim: 32,
            num_prototypes: 16,
            train: TrainConfig::smoke(),
            ..Self::reference_for(image_encoder)
        }
    }
}
// ANCHOR_END: presets

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Reduction;

    #[test]
    fn reference_values_are_the_codes() {
        let c = MgcaConfig::reference();
        let o = &c.objective;
        assert_eq!((c.embed_dim, c.num_prototypes), (128, 500));
        assert_eq!((o.ita.temperature, o.cta.temperature, o.cpa.temperature), (0.07, 0.1, 0.2));
        assert_eq!((o.cpa.sinkhorn.epsilon, o.cpa.sinkhorn.iterations), (0.05, 3));
        assert_eq!((o.lambda_ita, o.lambda_cta, o.lambda_cpa), (1.0, 1.0, 1.0));
        assert_eq!(o.ita.reduction, Reduction::Sum);
        assert!(!o.cta.normalize_patch_context);
        let r = MgcaConfig::reference_for(ImageEncoderKind::Resnet50);
        assert!(r.objective.cta.normalize_patch_context);
        assert_eq!(r.objective.cta.patch_weighting, PatchWeighting::Uniform);
    }

    #[test]
    fn paper_differs_where_the_code_and_paper_differ() {
        let (p, r) = (MgcaConfig::paper().objective, MgcaConfig::reference().objective);
        assert_eq!((p.ita.temperature, p.cta.temperature), (0.1, 0.07));
        assert_eq!(p.ita.reduction, Reduction::Mean);
        assert_eq!(p.cta.side_reduction, Reduction::Mean);
        assert!(p.cta.normalize_patch_context && p.cta.word_weight_clip.is_none());
        assert_eq!(p.cpa.sinkhorn.scope, SinkhornScope::Global);
        assert_eq!(p.cpa.temperature, r.cpa.temperature);
    }

    /// Every preset, for both encoders, passes its own checks.
    #[test]
    fn every_preset_validates() {
        for encoder in [ImageEncoderKind::VitBase, ImageEncoderKind::Resnet50] {
            let paper = MgcaConfig { objective: ObjectiveConfig::paper(encoder), ..MgcaConfig::reference_for(encoder) };
            for (name, c) in [
                ("reference", MgcaConfig::reference_for(encoder)),
                ("paper", paper),
                ("smoke", MgcaConfig::smoke_for(encoder)),
            ] {
                assert_eq!(c.validate(), Ok(()), "{name} {encoder:?}");
            }
        }
        assert_eq!(MgcaConfig::paper().validate(), Ok(()));
    }

    type Edit = fn(&mut MgcaConfig);

    /// One bad value per rule: the error names exactly that field.
    const BAD: &[(&str, Edit)] = &[
        ("vit.image_size", |c| c.vit.image_size = 0),
        ("vit.patch_size", |c| c.vit.patch_size = 0),
        ("vit.patch_size", |c| c.vit.patch_size = 5),
        ("vit.dim", |c| c.vit.dim = 0),
        ("vit.depth", |c| c.vit.depth = 0),
        ("vit.heads", |c| c.vit.heads = 0),
        ("vit.heads", |c| c.vit.heads = 5),
        ("vit.mlp_dim", |c| c.vit.mlp_dim = 0),
        ("resnet.width", |c| c.resnet.width = 0),
        ("resnet.blocks[2]", |c| c.resnet.blocks[2] = 0),
        ("resnet.expansion", |c| c.resnet.expansion = 0),
        ("resnet.upsample_to", |c| c.resnet.upsample_to = Some(0)),
        ("bert.vocab_size", |c| c.bert.vocab_size = 0),
        ("bert.hidden", |c| c.bert.hidden = 0),
        ("bert.layers", |c| c.bert.layers = 0),
        ("bert.heads", |c| c.bert.heads = 0),
        ("bert.heads", |c| c.bert.heads = 7),
        ("bert.intermediate", |c| c.bert.intermediate = 0),
        ("bert.max_positions", |c| c.bert.max_positions = 0),
        ("text_dropout", |c| c.text_dropout = 1.5),
        ("text_dropout", |c| c.text_dropout = 1.0),
        ("text_dropout", |c| c.text_dropout = -0.1),
        ("text_dropout", |c| c.text_dropout = f64::NAN),
        ("projection_hidden", |c| c.projection_hidden = 0),
        ("embed_dim", |c| c.embed_dim = 0),
        ("num_prototypes", |c| c.num_prototypes = 0),
        ("objective.ita.temperature", |c| c.objective.ita.temperature = 0.0),
        ("objective.ita.temperature", |c| c.objective.ita.temperature = f32::INFINITY),
        ("objective.cta.temperature", |c| c.objective.cta.temperature = -0.1),
        ("objective.cta.word_weight_clip.lo", |c| {
            c.objective.cta.word_weight_clip = Some(QuantileRange { lo: -0.1, hi: 0.9 })
        }),
        ("objective.cta.patch_weight_clip.hi", |c| {
            c.objective.cta.patch_weight_clip = Some(QuantileRange { lo: 0.1, hi: 1.5 })
        }),
        ("objective.cta.word_weight_clip.hi", |c| {
            c.objective.cta.word_weight_clip = Some(QuantileRange { lo: 0.9, hi: 0.1 })
        }),
        ("objective.cta.patch_weighting", |c| {
            c.image_encoder = ImageEncoderKind::Resnet50;
            c.objective.cta.patch_weighting = PatchWeighting::ClsAttention;
        }),
        ("objective.cpa.temperature", |c| c.objective.cpa.temperature = f32::NAN),
        ("objective.cpa.sinkhorn.epsilon", |c| c.objective.cpa.sinkhorn.epsilon = 0.0),
        ("objective.cpa.sinkhorn.epsilon", |c| c.objective.cpa.sinkhorn.epsilon = 0.01),
        ("objective.cpa.sinkhorn.iterations", |c| c.objective.cpa.sinkhorn.iterations = 0),
        ("objective.lambda_ita", |c| c.objective.lambda_ita = -1.0),
        ("objective.lambda_cta", |c| c.objective.lambda_cta = f32::NAN),
        ("objective.lambda_cpa", |c| {
            (c.objective.lambda_ita, c.objective.lambda_cta, c.objective.lambda_cpa) = (0.0, 0.0, 0.0)
        }),
        ("train.epochs", |c| c.train.epochs = 0),
        ("train.max_steps", |c| c.train.max_steps = Some(0)),
        ("train.shard_batch", |c| c.train.shard_batch = 0),
        ("train.shards", |c| c.train.shards = 0),
        ("train.learning_rate", |c| c.train.learning_rate = -2e-5),
        ("train.learning_rate", |c| c.train.learning_rate = 0.0),
        ("train.learning_rate", |c| c.train.learning_rate = f64::NAN),
        ("train.min_learning_rate", |c| c.train.min_learning_rate = -1e-8),
        ("train.min_learning_rate", |c| c.train.min_learning_rate = 1.0),
        ("train.warmup_fraction", |c| c.train.warmup_fraction = 2.0),
        ("train.warmup_fraction", |c| c.train.warmup_fraction = -0.5),
        ("train.beta1", |c| c.train.beta1 = 1.0),
        ("train.beta2", |c| c.train.beta2 = -0.1),
        ("train.adam_epsilon", |c| c.train.adam_epsilon = 0.0),
        ("train.weight_decay", |c| c.train.weight_decay = -0.05),
        ("train.patience", |c| c.train.patience = 0),
        ("train.keep_best", |c| c.train.keep_best = 0),
        ("train.max_tokens", |c| c.train.max_tokens = 2),
        ("train.cache_side", |c| c.train.cache_side = 16),
        ("train.checkpoint_every", |c| c.train.checkpoint_every = 0),
    ];

    #[test]
    fn each_rule_names_its_field_value_and_range() {
        for (i, (path, edit)) in BAD.iter().enumerate() {
            for base in [MgcaConfig::reference(), MgcaConfig::smoke()] {
                let mut c = base;
                edit(&mut c);
                let e = c.validate().expect_err(path);
                assert_eq!(e.fields.len(), 1, "case {i} ({path}): {e}");
                assert!(e.names(path), "case {i} ({path}): {e}");
                let text = e.to_string();
                assert!(text.contains(&format!("`{path}` = ")) && text.contains("allowed: "), "{text}");
            }
        }
    }

    #[test]
    fn every_bad_field_is_listed_with_its_value() {
        let mut c = MgcaConfig::smoke();
        c.train.learning_rate = f64::NAN;
        c.train.shard_batch = 0;
        c.train.warmup_fraction = 2.0;
        let e = c.validate().unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("3 invalid configuration fields"), "{text}");
        for part in [
            "`train.learning_rate` = NaN (allowed: finite and > 0)",
            "`train.shard_batch` = 0 (allowed: >= 1)",
            "`train.warmup_fraction` = 2 (allowed: in [0, 1])",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        let s: String = e.prefixed("config.").into();
        assert!(s.contains("`config.train.shard_batch`"), "{s}");
    }

    /// The ε floor grows with the scores Sinkhorn sums: the global scope sums over every shard.
    #[test]
    fn sinkhorn_epsilon_floor_depends_on_the_summed_scores() {
        let mut c = MgcaConfig::reference();
        let floor = SinkhornConfig::min_epsilon(500 * 72);
        assert!((0.0127..0.0128).contains(&floor), "{floor}");
        c.objective.cpa.sinkhorn.epsilon = (floor * 1.001) as f32;
        assert_eq!(c.validate(), Ok(()));
        c.objective.cpa.sinkhorn.scope = SinkhornScope::Global;
        assert!(c.validate().unwrap_err().names("objective.cpa.sinkhorn.epsilon"));
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = MgcaConfig::smoke();
        let json = serde_json::to_string_pretty(&c).unwrap();
        assert!(json.contains("\"image_encoder\": \"vit_base\""));
        let back: MgcaConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
