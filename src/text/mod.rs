//! Reports as the text encoder sees them: tokenisation and the merging of word pieces.
//!
//! Book: "Text encoder: BERT and the tokenizer". Reference: `mgca/datasets/pretrain_dataset.py`
//! and `mgca/models/backbones/encoder.py`, `BertEncoder`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none at this level; each module states its own.

pub mod tokenizer;
pub mod vocab;
pub mod words;
