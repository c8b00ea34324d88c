//! The MGCA model: the image encoders ([`vit`] ViT-B/16, [`resnet`] ResNet-50), the text
//! encoder ([`bert`]), the projection [`heads`], the whole model with its prototypes
//! ([`mgca`]), and the one importer of published checkpoints ([`import`]); [`batchnorm`] and
//! [`dropout`] are the layers they share.
//!
//! Book: "Image encoder: ViT-B/16", "Image encoder: ResNet-50", "Text encoder: BERT and the
//! tokenizer", "Projection heads, prototypes and the whole model". Reference:
//! `mgca/models/backbones/encoder.py` (`ImageEncoder`, `BertEncoder`, `GlobalEmbedding`,
//! `LocalEmbedding`) and `mgca/models/mgca/mgca_module.py`, `MGCA.__init__`, at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; each module states its own.

pub mod batchnorm;
pub mod bert;
pub mod dropout;
pub mod heads;
pub mod import;
pub mod mgca;
pub mod resnet;
pub mod setr;
pub mod unet;
pub mod vit;
pub mod yolo;

use burn::tensor::{Tensor, backend::Backend};

/// The `[CLS]` query's row of attention probabilities `[N, heads, T, T]`, averaged over the
/// heads: how much `[CLS]` attends to each key. `[N, T]`
pub fn cls_row_mean_heads<B: Backend>(attention: &Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, _, t, _] = attention.dims();
    attention.clone().narrow(2, 0, 1).mean_dim(1).reshape([n, t])
}

/// The shape of `key`, which must have `pattern`'s rank and no zero dimension (a checkpoint
/// that describes an architecture must not panic the code that reads its sizes).
pub(crate) fn sizes(
    weights: &crate::weights::WeightReader,
    key: &str,
    pattern: &str,
    rank: usize,
) -> Result<Vec<usize>, crate::weights::WeightError> {
    let shape = weights.shape(key)?;
    if shape.len() != rank || shape.contains(&0) {
        return Err(crate::weights::WeightError::Architecture(format!(
            "`{key}` has shape {shape:?}, expected {pattern} with every size >= 1"
        )));
    }
    Ok(shape)
}

/// Refuse 0 attention heads and a width they do not divide.
pub(crate) fn check_heads(width: usize, heads: usize) -> Result<(), crate::weights::WeightError> {
    use crate::weights::WeightError::Architecture;
    if heads == 0 {
        return Err(Architecture("0 attention heads: at least 1 is needed".into()));
    }
    if !width.is_multiple_of(heads) {
        return Err(Architecture(format!("width {width} is not divisible by {heads} heads")));
    }
    Ok(())
}
