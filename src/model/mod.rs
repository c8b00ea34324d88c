//! The MGCA model: image encoders (ViT-B/16 so far; ResNet-50 next), the text encoder, the
//! projection heads and the prototypes.
//!
//! Spec: `architecture.md`.
//! **Deviation:** none at this level; each module states its own.

pub mod vit;
