//! Reports as the text encoder sees them: tokenisation and the merging of word pieces.
//!
//! Spec: `architecture.md` §4, `data.md` (tokenisation).
//! **Deviation:** none at this level; each module states its own.

pub mod tokenizer;
pub mod vocab;
pub mod words;
