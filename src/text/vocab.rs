//! A whole-word vocabulary built from captions, for runs without a pretrained text encoder
//! (the smoke tier on synthetic reports): BERT's special tokens, then every lower-cased word
//! and punctuation mark of the captions, most frequent first (ties alphabetical). Written as a
//! BERT `vocab.txt`, it tokenises those captions with no `[UNK]`.
//!
//! Book: "Text encoder: BERT and the tokenizer". Reference: none (the reference always uses
//! Bio_ClinicalBERT's vocabulary).
//!
//! **Deviation:** not a reference component; the paper tier uses the real vocabulary.

use std::collections::HashMap;
use std::path::Path;

/// BERT's special tokens, in `vocab.txt` order (`[PAD]` is id 0).
pub const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// BERT's basic split: whitespace separates, each punctuation character is its own token.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() || c.is_ascii_punctuation() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            if c.is_ascii_punctuation() {
                out.push(c.to_string());
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The vocabulary of `captions`, at most `size` entries (special tokens included).
pub fn word_vocabulary(captions: &[String], size: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for caption in captions {
        for w in words(caption) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    SPECIAL.iter().map(|s| s.to_string()).chain(ranked.into_iter().map(|(w, _)| w)).take(size).collect()
}

/// Write `vocab` as a `vocab.txt` (one token per line), under a temporary name then renamed,
/// so that a reader never sees half a file.
pub fn write_vocab(vocab: &[String], path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("part{}", std::process::id()));
    std::fs::write(&tmp, vocab.join("\n") + "\n")?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::ReportTokenizer;

    #[test]
    fn captions_tokenise_without_unknowns() {
        let captions = vec!["The heart is enlarged. Cardiomegaly.".to_string(), "The lungs are clear.".to_string()];
        let vocab = word_vocabulary(&captions, 64);
        assert_eq!(&vocab[..6], &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."]);
        assert_eq!(vocab[6], "the");
        let path = std::env::temp_dir().join(format!("mgca-vocab-{}.txt", std::process::id()));
        write_vocab(&vocab, &path).unwrap();
        let tokenizer = ReportTokenizer::from_vocab(&path, true, Some(12)).unwrap();
        let encoded = tokenizer.encode(&captions[0]).unwrap();
        assert!(!encoded.ids.contains(&1), "{:?}", encoded.tokens);
        assert_eq!(encoded.tokens[..4], ["[CLS]", "the", "heart", "is"]);
        // A truncated vocabulary keeps the most frequent words.
        assert_eq!(word_vocabulary(&captions, 7).len(), 7);
        std::fs::remove_file(path).ok();
    }
}
