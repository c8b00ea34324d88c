//! The report tokenizer: BERT WordPiece with `[CLS] … [SEP]`, truncated and padded to 112 tokens.
//!
//! `ids = [CLS] wordpieces(normalise(text))[..L−2] [SEP] [PAD]…`, `mask = 1` on the first `n`
//! positions. Bio_ClinicalBERT is cased (no lower-casing, no accent stripping); the reference
//! calls its tokenizer with `truncation=True, padding="max_length", max_length=112`.
//!
//! Book: "Text encoder: BERT and the tokenizer". Reference: `mgca/datasets/pretrain_dataset.py`,
//! `MultimodalPretrainingDataset.get_caption` (the `BertTokenizer` call: padding to 112, truncation),
//! at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. Built with the `tokenizers` crate, from a Hugging Face
//! `tokenizer.json` or from a BERT `vocab.txt`.

use std::fmt;
use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{Model, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The reference's report length in tokens, [CLS] and [SEP] included.
pub const MAX_LENGTH: usize = 112;

/// Why a tokenizer could not be built or used; names the file.
#[derive(Debug)]
pub struct TokenizerError {
    /// The tokenizer or vocabulary file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for TokenizerError {}

/// One tokenised report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token strings (`[CLS]`, word pieces, `[SEP]`, `[PAD]`), for the word grouping.
    pub tokens: Vec<String>,
    /// Token ids, `[CLS]` first, padded with `[PAD]` to the fixed length (if any).
    pub ids: Vec<u32>,
    /// 1 on real tokens (`[CLS]` and `[SEP]` included), 0 on padding.
    pub attention_mask: Vec<u32>,
}

/// A BERT WordPiece tokenizer set up as the reference calls it.
#[derive(Clone)]
pub struct ReportTokenizer {
    inner: Tokenizer,
    path: PathBuf,
}

impl ReportTokenizer {
    /// From a Hugging Face `tokenizer.json` (its own normaliser decides the casing). With
    /// `max_length`, truncate and pad to it; without, neither.
    pub fn from_tokenizer_json(path: &Path, max_length: Option<usize>) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(|e| err(path, e))?;
        Self { inner, path: path.into() }.with_length(max_length)
    }

    /// From a BERT `vocab.txt`: `lowercase` false for Bio_ClinicalBERT (cased, accents kept),
    /// true for uncased vocabularies (lower-cased, accents stripped).
    pub fn from_vocab(path: &Path, lowercase: bool, max_length: Option<usize>) -> Result<Self, TokenizerError> {
        let model = WordPiece::from_file(&path.to_string_lossy())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| err(path, e))?;
        let id = |token: &str| {
            model.get_vocab().get(token).copied().ok_or_else(|| err(path, format!("the vocabulary has no {token}")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .map_err(|e| err(path, e))?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(|e| err(path, e))?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, Some(lowercase), lowercase)))
            .map_err(|e| err(path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer)).with_post_processor(Some(template));
        Self { inner, path: path.into() }.with_length(max_length)
    }

    fn with_length(mut self, max_length: Option<usize>) -> Result<Self, TokenizerError> {
        let pad_id = self.inner.token_to_id("[PAD]").ok_or_else(|| err(&self.path, "the vocabulary has no [PAD]"))?;
        let truncation = max_length.map(|max_length| TruncationParams { max_length, ..Default::default() });
        self.inner.with_truncation(truncation).map_err(|e| err(&self.path, e))?;
        self.inner.with_padding(max_length.map(|n| PaddingParams {
            strategy: PaddingStrategy::Fixed(n),
            pad_id,
            pad_token: "[PAD]".into(),
            ..Default::default()
        }));
        Ok(self)
    }

    /// Tokenise one report.
    pub fn encode(&self, text: &str) -> Result<Encoded, TokenizerError> {
        let e = self.inner.encode(text, true).map_err(|e| err(&self.path, e))?;
        Ok(Encoded {
            tokens: e.get_tokens().to_vec(),
            ids: e.get_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
        })
    }

    /// The tokens (strings) of a report, for inspection.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        Ok(self.inner.encode(text, true).map_err(|e| err(&self.path, e))?.get_tokens().to_vec())
    }
}

fn err(path: &Path, e: impl fmt::Display) -> TokenizerError {
    TokenizerError { path: path.into(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    fn cases() -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/reference/encoders/tokenizer_cases.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn ids(v: &serde_json::Value) -> Vec<u32> {
        v["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    }

    /// The real all-MiniLM-L6-v2 tokenizer (uncased) against transformers' AutoTokenizer, on
    /// every case: reports, accents, whitespace, CJK, the empty string.
    #[test]
    fn uncased_tokenizer_json_matches_transformers() {
        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let tok = ReportTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), None).unwrap();
        let all = cases();
        let cases = all["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 13);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            assert_eq!(tok.encode(text).unwrap().ids, ids(&case["uncased"]), "{text:?}");
        }
    }

    /// The cased code path (Bio_ClinicalBERT's: no lower-casing, accents kept), built from a
    /// `vocab.txt`, against the `tokenizers` reference over the same vocabulary.
    #[test]
    fn cased_vocab_path_matches_the_reference() {
        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let tok = ReportTokenizer::from_vocab(&dir.join("vocab.txt"), false, None).unwrap();
        for case in cases()["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want = &case["cased_mode_same_vocab"];
            assert_eq!(tok.encode(text).unwrap().ids, ids(want), "{text:?}");
            let tokens: Vec<String> =
                want["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
            assert_eq!(tok.tokens(text).unwrap(), tokens, "{text:?}");
        }
    }

    /// As the reference calls it: exactly 112 ids, [SEP] kept last on truncation, [PAD] = 0 after.
    #[test]
    fn truncates_and_pads_to_112() {
        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let tok = ReportTokenizer::from_vocab(&dir.join("vocab.txt"), false, Some(MAX_LENGTH)).unwrap();
        let short = tok.encode("No acute cardiopulmonary process.").unwrap();
        assert_eq!(short.ids.len(), MAX_LENGTH);
        assert_eq!(short.attention_mask.iter().sum::<u32>(), 12);
        assert_eq!((short.ids[0], short.ids[11], short.ids[12]), (101, 102, 0));
        let long = tok.encode(&"left lower lobe opacity ".repeat(60)).unwrap();
        assert_eq!(long.ids.len(), MAX_LENGTH);
        assert!(long.attention_mask.iter().all(|m| *m == 1));
        assert_eq!((long.ids[0], long.ids[MAX_LENGTH - 1]), (101, 102));
    }

    #[test]
    fn a_missing_vocabulary_names_the_file() {
        let e = ReportTokenizer::from_vocab(Path::new("/nonexistent/vocab.txt"), false, None).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/vocab.txt"), "{e}");
    }
}
