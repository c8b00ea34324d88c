//! Reports as the text encoder sees them: tokenisation (and, next, the word-piece grouping).
//!
//! Spec: `architecture.md` §4, `data.md` (tokenisation).
//! **Deviation:** none at this level; each module states its own.

pub mod tokenizer;
