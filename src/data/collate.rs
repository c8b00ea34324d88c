//! A pretraining batch's text side, as the reference collates it: each caption tokenised to
//! 112 tokens (`[CLS] … [SEP]`, truncated, padded), its length the number of non-zero ids, the
//! batch sorted by that length (longest first), and the word-piece grouping computed from the
//! token strings on the data side.
//!
//! Book: "Data: splits, images and masks" and "Text encoder: BERT and the tokenizer". Reference:
//! `mgca/datasets/pretrain_dataset.py`, `multimodal_collate_fn`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the reference sorts with PyTorch's default (unstable) sort, whose order among
//! captions of equal length depends on the PyTorch build; ours is stable (ties keep batch
//! order). The objective is invariant to a joint permutation of a batch's images and reports,
//! so only float summation order can differ.

use crate::text::tokenizer::{ReportTokenizer, TokenizerError};
use crate::text::words::WordGrouping;

/// The text side of a batch, in collated (length-sorted) order.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// For each collated position, the position in the input batch.
    pub order: Vec<usize>,
    /// Token ids, row-major `[N, L]`.
    pub ids: Vec<i64>,
    /// 1 on real tokens, `[N, L]`.
    pub mask: Vec<f32>,
    /// Real tokens per caption (`[CLS]` and `[SEP]` included), descending.
    pub lengths: Vec<usize>,
    /// Which tokens form each word.
    pub words: WordGrouping,
    /// `L` (112).
    pub length: usize,
}

/// The collate order: positions sorted by length, longest first, ties in batch order.
pub fn collate_order(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    order
}

/// Tokenise and collate captions (the tokenizer pads and truncates to its maximum length).
pub fn collate_text(tokenizer: &ReportTokenizer, captions: &[String]) -> Result<TextBatch, TokenizerError> {
    let encoded = captions.iter().map(|c| tokenizer.encode(c)).collect::<Result<Vec<_>, _>>()?;
    let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.iter().filter(|&&i| i != 0).count()).collect();
    let order = collate_order(&lengths);
    let length = encoded.first().map_or(0, |e| e.ids.len());
    let mut ids = Vec::with_capacity(order.len() * length);
    let mut mask = Vec::with_capacity(order.len() * length);
    let mut tokens = Vec::with_capacity(order.len());
    for &i in &order {
        ids.extend(encoded[i].ids.iter().map(|&v| v as i64));
        mask.extend(encoded[i].attention_mask.iter().map(|&v| v as f32));
        tokens.push(encoded[i].tokens.clone());
    }
    let lengths = order.iter().map(|&i| lengths[i]).collect();
    Ok(TextBatch { words: WordGrouping::from_tokens(&tokens), order, ids, mask, lengths, length })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    #[test]
    fn order_is_longest_first_and_stable() {
        assert_eq!(collate_order(&[5, 9, 5, 12, 9]), vec![3, 1, 4, 0, 2]);
    }

    /// Real tokenizer (all-MiniLM-L6-v2's, from `cargo xtask assets`): captions come out
    /// padded to 112, sorted by their number of real tokens, with the word grouping of the
    /// sorted order.
    #[test]
    fn captions_collate_like_the_reference() {
        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let tokenizer = ReportTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), Some(112)).unwrap();
        let captions = ["no acute process", "small left pleural effusion with adjacent atelectasis", "cardiomegaly"]
            .map(String::from);
        let batch = collate_text(&tokenizer, &captions).unwrap();
        assert_eq!(batch.order[0], 1, "the longest caption first");
        assert_eq!(batch.length, 112);
        assert_eq!(batch.ids.len(), 3 * 112);
        assert!(batch.lengths.windows(2).all(|w| w[0] >= w[1]));
        let real: Vec<usize> = batch.mask.chunks(112).map(|m| m.iter().filter(|&&v| v == 1.0).count()).collect();
        assert_eq!(real, batch.lengths);
        assert_eq!(batch.words.samples, 3);
    }
}
