//! The MGCA objective: `L = λ₁·L_ITA + λ₂·L_CTA + λ₃·L_CPA`.
//!
//! Book: "The objective at a glance". Reference: `mgca/models/mgca/mgca_module.py`, `MGCA.forward`
//! and `MGCA.training_step` (total objective, logging, order of operations), at HKU-MedAI/MGCA `680fe4a6ee0c`. The inputs are
//! the projection heads' outputs *before* L2 normalisation, exactly what the reference's loss
//! block receives; this module normalises them (`x / max(‖x‖₂, 1e-12)`, as `F.normalize`), then
//! runs ITA ([`ita`]), CTA ([`cta`]) and CPA ([`cpa`], with [`sinkhorn`]).
//!
//! **Deviation:** the reference computes the word-side similarity `Sw` twice with identical
//! inputs; it is computed once here (same value, same gradient).

pub mod cpa;
pub mod cta;
pub mod cta_cpu;
pub mod ita;
pub mod segmentation;
pub mod sinkhorn;
pub mod yolo;

use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::backend::GradientLink;
use serde::{Deserialize, Serialize};

pub use cpa::{CpaConfig, normalize_prototypes};
pub use cta::{CtaConfig, PatchWeighting, QuantileRange};
pub use ita::{ItaConfig, ItaOutput};
pub use sinkhorn::{AllReduce, LocalReduce, SinkhornConfig, SinkhornScope};

/// How two directions (or two sides) of a symmetric loss are combined.
///
/// The reference sums ITA's two directions and CTA's two sides, where the paper's formulation
/// averages them (book: "The objective at a glance", where the code and the paper differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// `a + b` (the reference).
    Sum,
    /// `(a + b) / 2` (the paper).
    Mean,
}

impl Reduction {
    /// Combine two terms.
    pub fn combine<B: Backend>(self, a: Tensor<B, 1>, b: Tensor<B, 1>) -> Tensor<B, 1> {
        match self {
            Reduction::Sum => a + b,
            Reduction::Mean => (a + b).div_scalar(2.0),
        }
    }
}

/// Configuration of the whole objective; see [`crate::config::MgcaConfig`] for the presets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveConfig {
    /// Instance-level image–report alignment.
    pub ita: ItaConfig,
    /// Token-level cross-modal alignment.
    pub cta: CtaConfig,
    /// Cross-modal prototype alignment.
    pub cpa: CpaConfig,
    /// λ₁, the weight of `L_ITA` (reference and paper: 1).
    pub lambda_ita: f32,
    /// λ₂, the weight of `L_CTA` (reference CLI and paper: 1; the module default 0.7 is dead).
    pub lambda_cta: f32,
    /// λ₃, the weight of `L_CPA` (reference CLI and paper: 1; the module default 0.5 is dead).
    pub lambda_cpa: f32,
}

/// What the objective consumes: the projection heads' outputs of one device's batch.
///
/// Shapes: `N` samples, `D` embedding width, `M` image tokens (196 ViT, 361 ResNet), `W` word
/// slots (111, padding included), `H` attention heads, `K` prototypes.
#[derive(Debug, Clone)]
pub struct ObjectiveInputs<B: Backend> {
    /// Global image embedding, not yet normalised. `[N, D]`
    pub img_emb: Tensor<B, 2>,
    /// Global report embedding, not yet normalised. `[N, D]`
    pub report_emb: Tensor<B, 2>,
    /// Local image-token (patch) embeddings, not yet normalised. `[N, M, D]`
    pub patch_emb: Tensor<B, 3>,
    /// Local word embeddings, padding slots included, not yet normalised. `[N, W, D]`
    pub word_emb: Tensor<B, 3>,
    /// Merged-word [CLS] attention as the text encoder hands it over (0 on padding). `[N, W]`
    pub word_attn: Tensor<B, 2>,
    /// True where the word slot is "[PAD]". `[N, W]`
    pub word_pad: Tensor<B, 2, Bool>,
    /// The last ViT block's [CLS]→patch attention per head; `None` for ResNet. `[N, H, M]`
    pub patch_attn: Option<Tensor<B, 3>>,
    /// Prototype rows, already re-normalised by [`normalize_prototypes`]. `[K, D]`
    pub prototypes: Tensor<B, 2>,
}

/// The sizes of one device's batch, as the objective sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// N, samples on this device (reference: 72).
    pub samples: usize,
    /// D, the embedding width (reference: 128).
    pub dim: usize,
    /// M, image tokens (196 ViT, 361 ResNet).
    pub patches: usize,
    /// W, word slots (111).
    pub words: usize,
    /// H, ViT attention heads (12).
    pub heads: usize,
    /// K, prototypes (500).
    pub prototypes: usize,
}

impl<B: Backend> ObjectiveInputs<B> {
    /// Random inputs with the statistics of real ones, for benchmarks and property tests:
    /// Gaussian embeddings; caption lengths drawn in `[W/10, W]` (one full-length caption);
    /// word attention positive on real slots except the last (the [SEP] slot), 0 on padding;
    /// a per-head softmax over patches as ViT attention. Deterministic for a given `seed`.
    pub fn random(shape: BatchShape, with_patch_attn: bool, seed: u64, device: &B::Device) -> Self {
        use burn::tensor::{Distribution, Int, activation::softmax};
        B::seed(device, seed);
        let BatchShape { samples: n, dim: d, patches: m, words: w, heads: h, prototypes: k } = shape;
        let normal = Distribution::Normal(0.0, 1.0);
        let lo = (w / 10).max(1);
        let drawn = Tensor::<B, 1, Int>::random([n], Distribution::Uniform(lo as f64, (w + 1) as f64), device);
        let full = Tensor::<B, 1, Int>::from_ints([w as i64], device);
        let lengths =
            if n > 1 { Tensor::cat(vec![full, drawn.narrow(0, 1, n - 1)], 0) } else { full }.unsqueeze_dim::<2>(1); // [N, 1]
        let slot = Tensor::<B, 1, Int>::arange(0..w as i64, device).unsqueeze::<2>(); // [1, W]
        let word_pad = slot.clone().greater_equal(lengths.clone().expand([n, w])); // [N, W]
        let sep = slot.equal(lengths.sub_scalar(1).expand([n, w]));
        let word_attn = Tensor::<B, 2>::random([n, w], Distribution::Uniform(1e-3, 1.0), device)
            .mask_fill(word_pad.clone().bool_or(sep), 0.0);
        let patch_attn = with_patch_attn.then(|| softmax(Tensor::<B, 3>::random([n, h, m], normal, device), 2));
        Self {
            img_emb: Tensor::random([n, d], normal, device),
            report_emb: Tensor::random([n, d], normal, device),
            patch_emb: Tensor::random([n, m, d], normal, device),
            word_emb: Tensor::random([n, w, d], normal, device),
            word_attn,
            word_pad,
            patch_attn,
            prototypes: normalize_prototypes(Tensor::random([k, d], normal, device)),
        }
    }
}

/// The objective's value and its logged parts (each part already multiplied by its λ).
#[derive(Debug, Clone)]
pub struct ObjectiveOutput<B: Backend> {
    /// `L`, the value that is minimised. `[1]`
    pub total: Tensor<B, 1>,
    /// `λ₁·L_ITA`. `[1]`
    pub ita: Tensor<B, 1>,
    /// `λ₂·L_CTA` (logged as `loss_local`). `[1]`
    pub local: Tensor<B, 1>,
    /// `λ₃·L_CPA` (logged as `loss_proto`). `[1]`
    pub proto: Tensor<B, 1>,
    /// Retrieval accuracy @1 in percent, mean of both directions (no gradient). `[1]`
    pub acc1: Tensor<B, 1>,
    /// Retrieval accuracy @5 in percent, mean of both directions (no gradient). `[1]`
    pub acc5: Tensor<B, 1>,
}

// ANCHOR: objective
/// How CTA, the objective's expensive part, is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CtaEngine {
    /// Tensor operations differentiated by burn's autodiff: any backend (GPU included).
    #[default]
    Graph,
    /// The fused CPU kernel with hand-written gradients ([`cta_cpu`]): CPU backends only.
    FusedCpu,
}

/// The MGCA objective of one device's batch.
#[derive(Debug, Clone)]
pub struct Objective {
    config: ObjectiveConfig,
    engine: CtaEngine,
}

impl Objective {
    /// Build the objective from its configuration (CTA as a tensor graph).
    pub fn new(config: ObjectiveConfig) -> Self {
        Self { config, engine: CtaEngine::Graph }
    }

    /// Choose how CTA is computed; the value and gradients are the same either way.
    pub fn with_engine(mut self, engine: CtaEngine) -> Self {
        self.engine = engine;
        self
    }

    /// The configuration this objective was built with.
    pub fn config(&self) -> &ObjectiveConfig {
        &self.config
    }

    /// `L` on one device's batch, with a per-device Sinkhorn (the reference).
    pub fn forward<B: GradientLink>(&self, inputs: ObjectiveInputs<B>) -> ObjectiveOutput<B> {
        self.forward_with(inputs, &LocalReduce)
    }

    /// `L` with the Sinkhorn sums all-reduced by `reduce` (the paper's global-batch Sinkhorn
    /// when [`SinkhornScope::Global`] is configured; a [`LocalReduce`] gives the reference).
    pub fn forward_with<B: GradientLink>(
        &self,
        inputs: ObjectiveInputs<B>,
        reduce: &dyn AllReduce<B>,
    ) -> ObjectiveOutput<B> {
        let c = &self.config;
        let v = l2_normalize(inputs.img_emb); // [N, D]
        let t = l2_normalize(inputs.report_emb); // [N, D]
        let ita = c.ita.forward(v.clone(), t.clone());
        let [n, m, _] = inputs.patch_emb.dims();
        let word_weights = c.cta.word_weights(inputs.word_attn); // ω [N, W]
        let patch_weights = c.cta.patch_weights(inputs.patch_attn, [n, m], &inputs.patch_emb.device()); // π [N, M]
        let (pad, patches, words) = (inputs.word_pad, inputs.patch_emb, inputs.word_emb);
        let local = match self.engine {
            CtaEngine::Graph => {
                let (patches, words) = (l2_normalize(patches), l2_normalize(words)); // P, Wd
                c.cta.forward(patches, words, pad, word_weights, patch_weights)
            }
            CtaEngine::FusedCpu => c.cta.forward_fused(patches, words, pad, word_weights, patch_weights),
        };
        let proto = c.cpa.forward(v, t, inputs.prototypes, reduce);

        let ita_term = ita.loss.mul_scalar(c.lambda_ita);
        let local_term = local.mul_scalar(c.lambda_cta);
        let proto_term = proto.mul_scalar(c.lambda_cpa);
        ObjectiveOutput {
            total: ita_term.clone() + local_term.clone() + proto_term.clone(),
            ita: ita_term,
            local: local_term,
            proto: proto_term,
            acc1: ita.acc1,
            acc5: ita.acc5,
        }
    }
}
// ANCHOR_END: objective

// ANCHOR: helpers
/// `x / max(‖x‖₂, 1e-12)` along the last dimension (PyTorch's `F.normalize`).
pub fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

/// `log Σ exp(x)` along `dim`, stabilised by the (detached) maximum; keeps the dimension.
pub fn log_sum_exp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    (x - max.clone()).exp().sum_dim(dim).log() + max
}

/// The diagonal of a batch of square matrices. `[N, T, T] -> [N, T]`
///
/// Extracted by masking rather than recomputed, so that the value is bit-equal to the
/// matrix entry (retrieval accuracy compares the two).
pub fn batch_diagonal<B: Backend>(s: Tensor<B, 3>) -> Tensor<B, 2> {
    let [_, t, _] = s.dims();
    let eye = Tensor::<B, 2>::eye(t, &s.device()).unsqueeze::<3>(); // [1, T, T]
    (s * eye).sum_dim(2).squeeze_dim(2)
}

/// Weighted two-way token cross-entropy of CTA, for one batch of similarity matrices.
///
/// `s[n, i, k]` scores token `i` against context `k` of sample `n`; the target of row `i` is
/// column `i`. Returns `(Σ_n Σ_i w[n,i]·CE(s[n,i,:], i), Σ_n Σ_k w[n,k]·CE(s[n,:,k], k))`, each
/// divided by the batch size `N`. Weights carry no gradient.
pub fn token_cross_entropy<B: Backend>(
    s: Tensor<B, 3>,       // [N, T, T]
    weights: Tensor<B, 2>, // [N, T]
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let n = s.dims()[0] as f32;
    let diag = batch_diagonal(s.clone()); // [N, T]
    let rows = log_sum_exp(s.clone(), 2).squeeze_dim::<2>(2) - diag.clone(); // [N, T]
    let cols = log_sum_exp(s, 1).squeeze_dim::<2>(1) - diag; // [N, T]
    let by_row = (rows * weights.clone()).sum().div_scalar(n);
    let by_col = (cols * weights).sum().div_scalar(n);
    (by_row, by_col)
}
// ANCHOR_END: helpers

#[cfg(test)]
mod tests;
