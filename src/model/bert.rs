//! The text encoder: BERT (Hugging Face names), the first 6 layers of Bio_ClinicalBERT.
//!
//! `E = LN(WordEmb[ids] + PosEmb[pos] (+ TypeEmb[0]))`; per layer
//! `x ← LN₁(x + Dense(Attn(x)))`, `x ← LN₂(x + Out(GELU(Inter(x))))` (post-norm), with
//! `Attn = softmax(q kᵀ/√d_h − 10000·(1 − mask)) v` over the heads. Returns the last hidden
//! states and the last layer's attention probabilities (MGCA's word weights come from its
//! `[CLS]` row).
//!
//! Book: "Text encoder: BERT and the tokenizer". Reference: `mgca/models/backbones/encoder.py`,
//! `BertEncoder.__init__` and `BertEncoder.forward` (with `med.py`, `BertModel`), at
//! HKU-MedAI/MGCA `680fe4a6ee0c`; key names as Hugging Face's `BertModel`.
//!
//! **Deviation:** faithful mode reproduces the reference's position-id bug
//! ([`PositionIds::Reference`]: the token-type ids, all 0, are consumed as position ids, so
//! every token gets position embedding 0, and the BLIP embedding has no token-type table);
//! [`PositionIds::Standard`] (0, 1, 2, … plus token type 0, as Hugging Face's `BertModel`) is the
//! option, and what checks against Hugging Face models use.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::dropout::{DropoutKey, dropout};
use crate::kernels::gelu::gelu;
use crate::kernels::layer_norm::layer_norm;
use crate::kernels::softmax::softmax_last;
use crate::weights::{WeightError, WeightReader};

pub use crate::config::encoders::{BertConfig, PositionIds};

/// LayerNorm's ε in BERT (`layer_norm_eps` of Bio_ClinicalBERT's config).
pub const LAYER_NORM_EPS: f64 = 1e-12;

impl BertConfig {
    /// A randomly initialised encoder (with a token-type table of 2 rows).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Bert<B> {
        let h = self.hidden;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || LayerNormConfig::new(h).with_epsilon(LAYER_NORM_EPS).init(device);
        Bert {
            word: EmbeddingConfig::new(self.vocab_size, h).init(device),
            position: EmbeddingConfig::new(self.max_positions, h).init(device),
            token_type: Some(EmbeddingConfig::new(2, h).init(device)),
            embedding_norm: norm(),
            layers: (0..self.layers)
                .map(|_| BertLayer {
                    query: linear(h, h),
                    key: linear(h, h),
                    value: linear(h, h),
                    attention_output: linear(h, h),
                    attention_norm: norm(),
                    intermediate: linear(h, self.intermediate),
                    output: linear(self.intermediate, h),
                    output_norm: norm(),
                    heads: self.heads,
                })
                .collect(),
        }
    }
}

/// One post-norm BERT layer.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    attention_output: Linear<B>,
    attention_norm: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
    output_norm: LayerNorm<B>,
    heads: usize,
}

/// The BERT text encoder.
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    word: Embedding<B>,
    position: Embedding<B>,
    token_type: Option<Embedding<B>>,
    embedding_norm: LayerNorm<B>,
    layers: Vec<BertLayer<B>>,
}

/// What the text encoder hands to MGCA.
#[derive(Debug, Clone)]
pub struct BertOutput<B: Backend> {
    /// The last layer's hidden states. `[N, L, H]`
    pub hidden: Tensor<B, 3>,
    /// The last layer's attention probabilities `[batch, head, query, key]`. `[N, heads, L, L]`
    pub last_attention: Tensor<B, 4>,
}

impl<B: Backend> Bert<B> {
    /// The word-embedding table (`embeddings.word_embeddings.weight`).
    pub fn word_embedding(&self) -> Tensor<B, 2> {
        self.word.weight.val()
    }
}

impl<B: Backend> BertOutput<B> {
    /// The head-averaged `[CLS]` row of the last layer's attention, over all keys. `[N, L]`
    pub fn cls_attention_mean_heads(&self) -> Tensor<B, 2> {
        super::cls_row_mean_heads(&self.last_attention)
    }
}

// ANCHOR: forward
impl<B: Backend> BertLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        key_bias: Tensor<B, 4>,
        drop: Option<(f64, DropoutKey)>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [n, l, h] = x.dims();
        let hd = h / self.heads;
        let p = drop.map_or(0.0, |d| d.0);
        let site = |s: u64| drop.map(|d| d.1.site(s));
        let split = |t: Tensor<B, 3>| t.reshape([n, l, self.heads, hd]).swap_dims(1, 2); // [N, heads, L, hd]
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f32).sqrt()) + key_bias; // [N, heads, L, L]
        let attn = softmax_last(scores);
        // The returned attention is the one before dropout (the word weights use it).
        let mixed = dropout(attn.clone(), p, site(0)).matmul(v).swap_dims(1, 2).reshape([n, l, h]);
        let x = layer_norm(
            &self.attention_norm,
            x + dropout(self.attention_output.forward(mixed), p, site(1)),
            LAYER_NORM_EPS,
        );
        let ff = self.output.forward(gelu(self.intermediate.forward(x.clone())));
        (layer_norm(&self.output_norm, x + dropout(ff, p, site(2)), LAYER_NORM_EPS), attn)
    }
}

impl<B: Backend> Bert<B> {
    /// Encode token ids `[N, L]` with their attention mask (1 on real tokens, 0 on padding).
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, positions: PositionIds) -> BertOutput<B> {
        self.forward_with_dropout(ids, mask, positions, None)
    }

    /// [`Bert::forward`] in training mode: dropout with probability `p` after the embedding,
    /// on the attention probabilities (not on the returned ones), and on both sub-layers'
    /// outputs before their residual sums, each mask keyed by `key` and its site.
    pub fn forward_with_dropout(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
        positions: PositionIds,
        drop: Option<(f64, DropoutKey)>,
    ) -> BertOutput<B> {
        let [n, l] = ids.dims();
        let device = ids.device();
        let position_ids = match positions {
            PositionIds::Reference => Tensor::<B, 2, Int>::zeros([n, l], &device),
            PositionIds::Standard => Tensor::<B, 1, Int>::arange(0..l as i64, &device).unsqueeze::<2>().expand([n, l]),
        };
        let mut e = self.word.forward(ids) + self.position.forward(position_ids); // [N, L, H]
        if let (PositionIds::Standard, Some(types)) = (positions, &self.token_type) {
            e = e + types.forward(Tensor::<B, 2, Int>::zeros([n, l], &device));
        }
        let mut x = dropout(
            layer_norm(&self.embedding_norm, e, LAYER_NORM_EPS),
            drop.map_or(0.0, |d| d.0),
            drop.map(|d| d.1.site(0)),
        );
        // Padded keys: −10000 on the scaled logits, which underflows to exactly 0 after softmax.
        let key_bias = mask.neg().add_scalar(1.0).mul_scalar(-10_000.0).reshape([n, 1, 1, l]);
        let mut last_attention = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_drop = drop.map(|(p, key)| (p, key.site(1 + i as u64)));
            let (y, attn) = layer.forward(x, key_bias.clone(), layer_drop);
            x = y;
            last_attention = Some(attn);
        }
        BertOutput { hidden: x, last_attention: last_attention.expect("at least one layer") }
    }
}
// ANCHOR_END: forward

/// The encoder that a Hugging Face BERT state dict describes, keeping its first `layers`
/// layers (all when `None`). An optional `bert.` prefix is accepted.
pub fn config_from_weights(
    weights: &WeightReader,
    heads: usize,
    layers: Option<usize>,
) -> Result<BertConfig, WeightError> {
    let word = super::sizes(weights, "embeddings.word_embeddings.weight", "[vocab, hidden]", 2)?;
    let position = super::sizes(weights, "embeddings.position_embeddings.weight", "[positions, hidden]", 2)?;
    let inter = super::sizes(weights, "encoder.layer.0.intermediate.dense.weight", "[intermediate, hidden]", 2)?;
    let available = (0..).take_while(|i| weights.contains(&format!("encoder.layer.{i}.output.dense.weight"))).count();
    let layers = layers.unwrap_or(available);
    if layers == 0 || layers > available {
        return Err(WeightError::Architecture(format!("{layers} layers requested, the checkpoint has {available}")));
    }
    super::check_heads(word[1], heads)?;
    Ok(BertConfig {
        vocab_size: word[0],
        hidden: word[1],
        layers,
        heads,
        intermediate: inter[0],
        max_positions: position[0],
    })
}

impl<B: Backend> Bert<B> {
    /// Load a Hugging Face `BertModel` state dict (its first `config.layers` layers). The
    /// token-type table is taken when present; the pooler, the position-id buffer and later
    /// layers are left unused (see [`WeightReader::unused`]).
    pub fn load(config: &BertConfig, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        let mut bert = config.init::<B>(device);
        let h = config.hidden;
        bert.word.weight = weights.param(device, "embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        bert.position.weight =
            weights.param(device, "embeddings.position_embeddings.weight", &[config.max_positions, h])?;
        bert.token_type = match weights.shape("embeddings.token_type_embeddings.weight") {
            Ok(shape) => {
                let mut table = EmbeddingConfig::new(shape[0], h).init(device);
                table.weight = weights.param(device, "embeddings.token_type_embeddings.weight", &[shape[0], h])?;
                Some(table)
            }
            Err(_) => None,
        };
        weights.layer_norm(device, "embeddings.LayerNorm", h, &mut bert.embedding_norm)?;
        for (i, layer) in bert.layers.iter_mut().enumerate() {
            let key = |name: &str| format!("encoder.layer.{i}.{name}");
            weights.linear(device, &key("attention.self.query"), h, h, &mut layer.query)?;
            weights.linear(device, &key("attention.self.key"), h, h, &mut layer.key)?;
            weights.linear(device, &key("attention.self.value"), h, h, &mut layer.value)?;
            weights.linear(device, &key("attention.output.dense"), h, h, &mut layer.attention_output)?;
            weights.layer_norm(device, &key("attention.output.LayerNorm"), h, &mut layer.attention_norm)?;
            weights.linear(device, &key("intermediate.dense"), h, config.intermediate, &mut layer.intermediate)?;
            weights.linear(device, &key("output.dense"), config.intermediate, h, &mut layer.output)?;
            weights.layer_norm(device, &key("output.LayerNorm"), h, &mut layer.output_norm)?;
        }
        Ok(bert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{ATTENTION, Agreement, HIDDEN_STATES, SAME_COMPUTATION};

    /// How far apart two tokens' vectors must be for the encoder to have seen their order:
    /// a thousand times [`SAME_COMPUTATION`].
    const ORDER_SEEN: f32 = 1e-2;
    use crate::tensor_file::{HostTensor, TensorFile};
    use crate::testing;
    use burn::tensor::TensorData;

    fn minilm() -> (BertConfig, Bert<Cpu>, Vec<String>) {
        let dir = assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
        let mut weights = WeightReader::new(TensorFile::read_numeric(&dir.join("model.safetensors")).unwrap());
        let config = config_from_weights(&weights, 12, None).unwrap();
        let bert = Bert::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
        (config, bert, weights.unused())
    }

    /// Only the real positions of padded batches mean anything: keep `[n, t, …]` where the mask is 1.
    fn masked(t: &HostTensor, mask: &[f32], inner: usize) -> Vec<f32> {
        t.values.chunks_exact(inner).zip(mask).filter(|(_, m)| **m == 1.0).flat_map(|(c, _)| c.to_vec()).collect()
    }

    /// The real all-MiniLM-L6-v2 (6 layers, width 384) on three reports, padded in a batch,
    /// with standard positions: last hidden states within [`HIDDEN_STATES`] and the `[CLS]`
    /// attention within [`ATTENTION`] of transformers' `BertModel`.
    #[test]
    fn minilm_matches_transformers() {
        let (config, bert, unused) = minilm();
        assert_eq!((config.hidden, config.layers, config.intermediate, config.vocab_size), (384, 6, 1536, 30522));
        assert_eq!(unused, vec!["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]);
        let want =
            TensorFile::read_numeric(&testing::golden("reference/encoders/minilm_reference.safetensors")).unwrap();
        let ids = &want.tensors["input_ids"];
        let mask = &want.tensors["attention_mask"];
        let [n, l] = [ids.shape[0], ids.shape[1]];
        let dev = cpu_device();
        let ids_t = Tensor::<Cpu, 2, Int>::from_data(
            TensorData::new(ids.values.iter().map(|v| *v as i64).collect::<Vec<_>>(), [n, l]),
            &dev,
        );
        let mask_t = Tensor::<Cpu, 2>::from_data(TensorData::new(mask.values.clone(), [n, l]), &dev);
        let out = bert.forward(ids_t, mask_t, PositionIds::Standard);

        let hidden = HostTensor::from_tensor(out.hidden.clone());
        let (ours, reference) = (
            HostTensor { shape: vec![], values: masked(&hidden, &mask.values, 384) },
            HostTensor { shape: vec![], values: masked(&want.tensors["last_hidden_state"], &mask.values, 384) },
        );
        let a = Agreement::measure("last_hidden_state", &ours, &reference, HIDDEN_STATES);
        eprintln!("{a}");
        assert!(a.ok, "{a}");
        let cls = HostTensor::from_tensor(out.cls_attention_mean_heads());
        let a = Agreement::measure(
            "last_layer_attention_cls_mean_heads",
            &cls,
            &want.tensors["last_layer_attention_cls_mean_heads"],
            ATTENTION,
        );
        eprintln!("{a}");
        assert!(a.ok, "{a}");
    }

    /// The reference's position-id bug: all tokens at position 0 makes the encoder blind to
    /// word order (a permutation of the real tokens permutes the outputs), unlike standard
    /// positions.
    #[test]
    fn reference_positions_ignore_word_order() {
        let (_, bert, _) = minilm();
        let dev = cpu_device();
        let run = |ids: [i64; 6], positions| {
            let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, 6]), &dev);
            let out = bert.forward(ids, Tensor::ones([1, 6], &dev), positions);
            out.hidden.into_data().to_vec::<f32>().unwrap()
        };
        let (a, b) = ([101, 2053, 11325, 2832, 1012, 102], [101, 2832, 11325, 2053, 1012, 102]);
        let (ra, rb) = (run(a, PositionIds::Reference), run(b, PositionIds::Reference));
        // Token 1 of `a` is token 3 of `b` ("no"): identical vectors under reference positions.
        let row = |v: &[f32], t: usize| v[t * 384..(t + 1) * 384].to_vec();
        let worst = row(&ra, 1).iter().zip(row(&rb, 3)).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < SAME_COMPUTATION.abs as f32, "{worst}");
        let (sa, sb) = (run(a, PositionIds::Standard), run(b, PositionIds::Standard));
        let worst = row(&sa, 1).iter().zip(row(&sb, 3)).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst > ORDER_SEEN, "standard positions see the order");
    }
}
