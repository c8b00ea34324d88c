//! # mgca — MGCA reproduced in Rust
//!
//! MGCA (Wang et al., "Multi-Granularity Cross-modal Alignment for Generalized Medical Visual
//! Representation Learning", NeurIPS 2022) aligns chest radiographs with their reports at three
//! granularities: instance (ITA), token (CTA) and prototype (CPA). This crate is a literate,
//! reference-checked reproduction: every module with a counterpart in the reference
//! implementation has a parity test against tensors that the reference produced.
//!
//! Book: the book in `book/` (`cargo xtask book`), starting at "Introduction". Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA`, and the modules it builds on, at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; each module states its own.
//!
//! Modules, from the ground floor up:
//! - [`tensor_file`] — safetensors files of float32 host tensors, and the FNV-1a hash of the
//!   golden files;
//! - [`backend`] — the backends this crate is built and tested on;
//! - [`kernels`] — fused CPU kernels (GELU, LayerNorm, softmax) with their backward passes;
//! - [`assets`] — real files from registry packages, cached outside the repository;
//! - [`text`] — the report tokenizer and the merging of word pieces into words;
//! - [`data`] — the datasets: splits, images, masks, augmentation, caches and batches;
//! - [`weights`] — reading checkpoints (torch.save, safetensors), key tables, a checked reader;
//! - [`loss`] — the MGCA objective: [`loss::ita`], [`loss::cta`], [`loss::cpa`],
//!   [`loss::sinkhorn`] and the combined [`loss::Objective`];
//! - [`config`] — one typed configuration for every hyperparameter, with named presets;
//! - [`model`] — the encoders ([`model::vit`], [`model::resnet`], [`model::bert`]), the
//!   [`model::heads`], the whole [`model::mgca`] model, and [`model::import`], the importer of
//!   published checkpoints;
//! - [`metrics`] — AUROC, accuracy, bootstrap intervals and DeLong's test;
//! - [`parity`] — running our components on the reference's cases and measuring the agreement
//!   (losses, encoders, metrics), with the named tolerances;
//! - [`train`] — generic training: optimiser, schedule, crash-safe checkpoints, early stopping,
//!   run folders, logs and progress;
//! - [`pretrain`] — the MGCA pretraining loop;
//! - [`downstream`] — fine-tuning on labelled data: the shared loop, the encoder's source,
//!   linear probing;
//! - [`experiment`] — experiment files: what a run is, read and checked;
//! - [`report`] — the statistics a run is judged by and the Markdown report written from the
//!   run folders.

pub mod assets;
pub mod backend;
pub mod config;
pub mod data;
pub mod downstream;
pub mod experiment;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod parity;
pub mod pretrain;
pub mod report;
pub mod tensor_file;
#[cfg(test)]
pub(crate) mod testing;
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
