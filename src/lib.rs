//! # mgca — MGCA reproduced in Rust
//!
//! MGCA (Wang et al., "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual
//! Representation Learning", NeurIPS 2022) aligns chest radiographs with their reports at three
//! granularities: instance (ITA), token (CTA) and prototype (CPA). This crate is a literate,
//! reference-checked reproduction: every module with a counterpart in the reference
//! implementation has a parity test against tensors that the reference produced.
//!
//! Spec: `shared/spec/README.md` (the behaviour of the reference, quirks included).
//! **Deviation:** none at this level; each module states its own.
//!
//! Modules:
//! - [`loss`] — the MGCA objective: [`loss::ita`], [`loss::cta`], [`loss::cpa`],
//!   [`loss::sinkhorn`] and the combined [`loss::Objective`];
//! - [`config`] — one typed configuration for every hyperparameter, with named presets;
//! - [`model`] — the encoders ([`model::vit`], [`model::bert`]) and [`model::heads`];
//! - [`metrics`] — AUROC, accuracy, bootstrap intervals and DeLong's test;
//! - [`text`] — the report tokenizer;
//! - [`weights`] — loading checkpoints into modules, with key and shape checks;
//! - [`assets`] — real files from registry packages, cached outside the repository;
//! - [`parity`] — reading and writing the reference's safetensors cases;
//! - [`backend`] — the backends this crate is built and tested on.

pub mod assets;
pub mod backend;
pub mod config;
pub mod data;
pub mod downstream;
pub mod experiment;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod parity;
pub mod pretrain;
pub mod report;
pub mod text;
pub mod train;
pub mod weights;

/// The book's chapters, compiled as doctests so that a code block in prose that calls the
/// crate keeps compiling (blocks pulled in with `{{#include}}` are marked `ignore`: the code
/// they show is compiled and tested where it lives).
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../book/src/introduction.md")]
    struct Introduction;
    #[doc = include_str!("../book/src/objective.md")]
    struct Objective;
    #[doc = include_str!("../book/src/ita.md")]
    struct Ita;
    #[doc = include_str!("../book/src/cta.md")]
    struct Cta;
    #[doc = include_str!("../book/src/cpa.md")]
    struct Cpa;
    #[doc = include_str!("../book/src/parity.md")]
    struct Parity;
    #[doc = include_str!("../book/src/vit.md")]
    struct VitChapter;
    #[doc = include_str!("../book/src/bert.md")]
    struct BertChapter;
    #[doc = include_str!("../book/src/heads.md")]
    struct HeadsChapter;
    #[doc = include_str!("../book/src/build.md")]
    struct Build;
}
