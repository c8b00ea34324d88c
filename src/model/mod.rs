//! The MGCA model: image encoders (ViT-B/16 so far; ResNet-50 next), the text encoder (BERT),
//! the projection heads, and, next, the prototypes and the whole model.
//!
//! Spec: `architecture.md`.
//! **Deviation:** none at this level; each module states its own.

pub mod batchnorm;
pub mod bert;
pub mod dropout;
pub mod heads;
pub mod mgca;
pub mod resnet;
pub mod vit;

use burn::tensor::{Tensor, backend::Backend};

/// The [CLS] query's row of attention probabilities `[N, heads, T, T]`, averaged over the
/// heads: how much [CLS] attends to each key. `[N, T]`
pub fn cls_row_mean_heads<B: Backend>(attention: &Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, _, t, _] = attention.dims();
    attention.clone().narrow(2, 0, 1).mean_dim(1).reshape([n, t])
}
