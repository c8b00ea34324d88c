//! The MGCA model: image encoders (ViT-B/16 so far; ResNet-50 next), the text encoder (BERT),
//! the projection heads, and, next, the prototypes and the whole model.
//!
//! Spec: `architecture.md`.
//! **Deviation:** none at this level; each module states its own.

pub mod bert;
pub mod heads;
pub mod mgca;
pub mod vit;
