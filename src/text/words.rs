//! Merging word pieces into words, with the reference's one-position attention shift.
//!
//! Walking a report's tokens `j = 0 … L−2` (the reference zips three sequences, one of them
//! `L − 1` long): a piece starting with `##` joins the current word, any other token starts a
//! new one, `[SEP]` closes the last word, becomes a word of its own, and ends the walk. A
//! word's vector is the **sum** of its pieces' hidden states; its attention is the sum, over
//! its pieces `j`, of the [CLS] attention to token `j + 1`. Slots after the last word are
//! `[PAD]` (zero vector, zero attention). Then slot 0 ([CLS]) is the report feature and slots
//! `1 … L−1` the word features.
//!
//! Book: "Text encoder: BERT and the tokenizer" (merging word pieces, with a worked example).
//! Reference: `mgca/models/backbones/encoder.py`, `BertEncoder.aggregate_tokens`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** faithful by construction: the shifted attention, the `[SEP]` word (weight 0
//! when padding follows) and the loss of the last word and `[SEP]` of a truncated report are
//! the reference's. The grouping is computed on the host from the token strings and applied
//! on the device as one batched product with a `[N, L, L]` 0/1 matrix, not a loop per sample.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

/// Which tokens make up each word slot, for a batch of tokenised reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WordGrouping {
    /// Reports in the batch.
    pub samples: usize,
    /// Tokens per report, and word slots per report (the same, `L`).
    pub length: usize,
    /// `membership[b][w][t] = 1` when token `t` belongs to word slot `w` of report `b`.
    membership: Vec<f32>,
    /// The word strings per slot (`[PAD]` after the last word).
    pub words: Vec<Vec<String>>,
}

/// What MGCA takes from the text encoder, after merging.
#[derive(Debug, Clone)]
pub struct WordFeatures<B: Backend> {
    /// The [CLS] slot: the report feature. `[N, D]`
    pub report: Tensor<B, 2>,
    /// Word slots 1 … L−1, summed hidden states. `[N, L − 1, D]`
    pub words: Tensor<B, 3>,
    /// Their attention (the shifted [CLS] attention, summed per word). `[N, L − 1]`
    pub word_attention: Tensor<B, 2>,
    /// True where the word slot is `[PAD]` (the `[SEP]` word is not). `[N, L − 1]`
    pub word_pad: Tensor<B, 2, Bool>,
}

// ANCHOR: walk
impl WordGrouping {
    /// Group a batch of token strings (each report padded to the same length `L`).
    pub fn from_tokens<S: AsRef<str>>(batch: &[Vec<S>]) -> Self {
        let length = batch.first().map_or(0, |t| t.len());
        let mut membership = vec![0.0f32; batch.len() * length * length];
        let mut words = Vec::with_capacity(batch.len());
        for (b, tokens) in batch.iter().enumerate() {
            assert_eq!(tokens.len(), length, "every report is padded to the same length");
            let mut done: Vec<(Vec<usize>, String)> = Vec::new();
            let mut bank: Option<(Vec<usize>, String)> = None;
            // The reference zips the tokens with the L − 1 shifted attention values.
            for (j, token) in tokens.iter().take(length.saturating_sub(1)).enumerate() {
                let s = token.as_ref();
                if s == "[SEP]" {
                    done.extend(bank.take());
                    done.push((vec![j], s.to_string()));
                    break;
                } else if let Some(piece) = s.strip_prefix("##") {
                    let (pieces, word) = bank.get_or_insert_with(Default::default);
                    pieces.push(j);
                    word.push_str(piece);
                } else {
                    done.extend(bank.replace((vec![j], s.to_string())));
                }
            }
            // A bank still open here (no [SEP] within the walk: a truncated report) is dropped.
            let mut strings = vec!["[PAD]".to_string(); length];
            for (w, (pieces, word)) in done.into_iter().enumerate() {
                for t in pieces {
                    membership[(b * length + w) * length + t] = 1.0;
                }
                strings[w] = word;
            }
            words.push(strings);
        }
        Self { samples: batch.len(), length, membership, words }
    }
}
// ANCHOR_END: walk

impl WordGrouping {
    /// Merge the encoder's last hidden states `[N, L, D]` and the head-averaged [CLS] attention
    /// over all keys `[N, L]` (key 0 = [CLS]) into report and word features.
    pub fn apply<B: Backend>(&self, hidden: Tensor<B, 3>, cls_attention: Tensor<B, 2>) -> WordFeatures<B> {
        let (n, l) = (self.samples, self.length);
        let [_, _, d] = hidden.dims();
        let device = hidden.device();
        let m = Tensor::<B, 3>::from_data(TensorData::new(self.membership.clone(), [n, l, l]), &device); // [N, L words, L tokens]
        let summed = m.clone().matmul(hidden); // [N, L, D]
        // Token j is paired with the attention to token j + 1.
        let shifted = Tensor::cat(vec![cls_attention.narrow(1, 1, l - 1), Tensor::zeros([n, 1], &device)], 1); // [N, L]
        let attention = m.matmul(shifted.unsqueeze_dim::<3>(2)).reshape([n, l]); // [N, L]
        let pad: Vec<bool> = self.words.iter().flat_map(|w| w[1..].iter().map(|s| s == "[PAD]")).collect();
        WordFeatures {
            report: summed.clone().narrow(1, 0, 1).reshape([n, d]),
            words: summed.narrow(1, 1, l - 1),
            word_attention: attention.narrow(1, 1, l - 1),
            word_pad: Tensor::from_data(TensorData::new(pad, [n, l - 1]), &device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::HAND_WORKED_WEIGHTS;

    fn floats<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// The book's worked example ("Text encoder: BERT and the tokenizer"), padded to 8 tokens.
    #[test]
    fn worked_example() {
        let tokens = [["[CLS]", "pleural", "eff", "##usion", "small", "[SEP]", "[PAD]", "[PAD]"].to_vec()];
        let g = WordGrouping::from_tokens(&tokens);
        assert_eq!(g.words[0], ["[CLS]", "pleural", "effusion", "small", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]);

        let dev = cpu_device();
        // Hidden state of token t: [t, 10 t] (so sums are recognisable); CLS attention A_t.
        let hidden: Vec<f32> = (0..8).flat_map(|t| [t as f32, 10.0 * t as f32]).collect();
        let hidden = Tensor::<Cpu, 3>::from_data(TensorData::new(hidden, [1, 8, 2]), &dev);
        let attn = Tensor::<Cpu, 2>::from_floats([[0.0, 0.10, 0.20, 0.05, 0.15, 0.30, 0.0, 0.0]], &dev);
        let f = g.apply(hidden, attn);
        assert_eq!(floats(f.report), vec![0.0, 0.0]);
        let words = floats(f.words);
        assert_eq!(&words[..8], &[1.0, 10.0, 5.0, 50.0, 4.0, 40.0, 5.0, 50.0]); // h1, h2+h3, h4, h5
        assert!(words[8..].iter().all(|v| *v == 0.0));
        let w = floats(f.word_attention);
        let want = [0.20, 0.20, 0.30, 0.0, 0.0, 0.0, 0.0];
        assert!(w.iter().zip(want).all(|(a, b)| (a - b).abs() < HAND_WORKED_WEIGHTS as f32), "{w:?}");
        let pad = f.word_pad.into_data().to_vec::<bool>().unwrap();
        assert_eq!(pad, vec![false, false, false, false, true, true, true]);
    }

    /// A report that fills every slot (truncated): the walk never reaches [SEP], so its last
    /// word and [SEP] are lost; [CLS] is always alone in slot 0.
    #[test]
    fn a_truncated_report_loses_its_last_word_and_sep() {
        let tokens = [["[CLS]", "no", "pneumo", "##thorax", "left", "eff", "##usion", "[SEP]"].to_vec()];
        let g = WordGrouping::from_tokens(&tokens);
        assert_eq!(g.words[0], ["[CLS]", "no", "pneumothorax", "left", "[PAD]", "[PAD]", "[PAD]", "[PAD]"]);
    }

    /// Reports of different lengths in one batch are grouped independently.
    #[test]
    fn samples_are_independent() {
        let tokens = [["[CLS]", "a", "##b", "[SEP]", "[PAD]"].to_vec(), ["[CLS]", "x", "y", "##z", "[SEP]"].to_vec()];
        let g = WordGrouping::from_tokens(&tokens);
        assert_eq!(g.words[0], ["[CLS]", "ab", "[SEP]", "[PAD]", "[PAD]"]);
        // The second fills every slot: its walk stops before [SEP] and drops "yz".
        assert_eq!(g.words[1], ["[CLS]", "x", "[PAD]", "[PAD]", "[PAD]"]);
    }

    /// End to end on the real MiniLM, tokenised to 112 and encoded with the reference's
    /// positions: [CLS] is the report feature, the [SEP] word gets exactly zero weight, real
    /// words positive weight, and padding slots are zero vectors.
    #[test]
    fn merges_a_real_encoder_output() {
        use crate::assets;
        use crate::model::bert::{Bert, PositionIds, config_from_weights};
        use crate::tensor_file::TensorFile;
        use crate::text::tokenizer::{MAX_LENGTH, ReportTokenizer};
        use crate::weights::WeightReader;
        use burn::tensor::Int;

        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let tok = ReportTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), Some(MAX_LENGTH)).unwrap();
        let text = "Small left pleural effusion with adjacent basilar atelectasis.";
        let (enc, tokens) = (tok.encode(text).unwrap(), tok.tokens(text).unwrap());
        let mut weights = WeightReader::new(TensorFile::read_numeric(&dir.join("model.safetensors")).unwrap());
        let config = config_from_weights(&weights, 12, None).unwrap();
        let dev = cpu_device();
        let bert = Bert::<Cpu>::load(&config, &mut weights, &dev).unwrap();
        let ids: Vec<i64> = enc.ids.iter().map(|i| *i as i64).collect();
        let mask: Vec<f32> = enc.attention_mask.iter().map(|m| *m as f32).collect();
        let out = bert.forward(
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids, [1, MAX_LENGTH]), &dev),
            Tensor::<Cpu, 2>::from_data(TensorData::new(mask, [1, MAX_LENGTH]), &dev),
            PositionIds::Reference,
        );
        let g = WordGrouping::from_tokens(&[tokens]);
        let words = &g.words[0];
        let sep = words.iter().position(|w| w == "[SEP]").unwrap();
        assert_eq!(&words[1..4], ["small", "left", "pleural"]);
        let f = g.apply(out.hidden.clone(), out.cls_attention_mean_heads());
        let cls = floats(out.hidden.narrow(1, 0, 1).reshape([1, 384]));
        assert_eq!(floats(f.report), cls);
        let w = floats(f.word_attention);
        assert_eq!(w[sep - 1], 0.0, "the [SEP] word is paired with the attention to a [PAD] key");
        assert!(w[..sep - 1].iter().all(|a| *a > 0.0));
        let vectors = floats(f.words);
        assert!(vectors[sep * 384..].iter().all(|v| *v == 0.0));
    }
}
