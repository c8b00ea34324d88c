//! The MGCA model: image encoders (ViT-B/16 so far; ResNet-50 next), the text encoder (BERT),
//! and, next, the projection heads and the prototypes.
//!
//! Spec: `architecture.md`.
//! **Deviation:** none at this level; each module states its own.

pub mod bert;
pub mod vit;
