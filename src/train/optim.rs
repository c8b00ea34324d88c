//! The optimiser side of any training loop: AdamW as the reference's tasks configure it, and
//! the mean of several shards' gradients (the DDP all-reduce done on one device).
//!
//! AdamW: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `θ ← θ − η(m̂/(√v̂ + ε) + λθ)` with
//! per-parameter step counts; a parameter without a gradient is skipped, as in PyTorch.
//! Gradient mean: `ḡ = (g₁ + … + g_S) / S`, a missing gradient counting as 0.
//!
//! Book: "Pretraining" (the optimiser, data parallelism) and "Linear probing" (the head's
//! optimiser). Reference: `mgca/models/mgca/mgca_module.py`, `MGCA.configure_optimizers`, and
//! `mgca/models/ssl_finetuner.py`, `SSLFineTuner.configure_optimizers`, at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// AdamW's constants (the paper's β₁, β₂, ε and weight decay λ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl AdamW {
    /// burn's AdamW with these constants: one group, decoupled weight decay on every parameter
    /// that has a gradient, per-parameter step counts.
    pub fn config(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
    }
}

/// The float parameters of a module: id and rank.
struct FloatParams(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for FloatParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

fn mean_one<B: Backend, const D: usize>(parts: &mut [GradientsParams], id: ParamId, out: &mut GradientsParams) {
    let n = parts.len();
    let mut sum: Option<Tensor<B, D>> = None;
    for part in parts.iter_mut() {
        if let Some(g) = part.remove::<B, D>(id) {
            sum = Some(match sum {
                None => g,
                Some(s) => s + g,
            });
        }
    }
    if let Some(s) = sum {
        // Sum, then divide by the shard count: the collective mean's arithmetic.
        out.register::<B, D>(id, s.div_scalar(n as f32));
    }
}

// ANCHOR: mean_gradients
/// The mean of the shards' gradients, parameter by parameter (a missing gradient counts as 0,
/// as in DDP).
pub fn mean_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut parts: Vec<GradientsParams>,
) -> GradientsParams {
    let mut params = FloatParams(Vec::new());
    model.visit(&mut params);
    let mut out = GradientsParams::new();
    for (id, rank) in params.0 {
        match rank {
            1 => mean_one::<B::InnerBackend, 1>(&mut parts, id, &mut out),
            2 => mean_one::<B::InnerBackend, 2>(&mut parts, id, &mut out),
            3 => mean_one::<B::InnerBackend, 3>(&mut parts, id, &mut out),
            4 => mean_one::<B::InnerBackend, 4>(&mut parts, id, &mut out),
            r => panic!("a rank-{r} parameter"),
        }
    }
    out
}
// ANCHOR_END: mean_gradients
