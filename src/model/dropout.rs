//! Dropout whose masks come from a counter-based generator keyed by (run seed, step, shard,
//! site): `y = x ⊙ m / (1 − p)` with `m ~ Bernoulli(1 − p)` element-wise, as
//! `torch.nn.functional.dropout` in training mode.
//!
//! The key makes a mask a function of where it is used, not of what ran before, so a run
//! draws the same masks whether its shards run one after another or on several devices, and
//! a resumed run draws what the uninterrupted one drew. On the CPU backend the masks are
//! computed where the tensors live, on the host: splitmix64 of the key and the element's index,
//! on rayon's threads. On any other backend (CUDA) they are drawn on the device with burn's
//! random tensors, the generator seeded with the key under a lock (seeding and drawing are one
//! step, so concurrent shards cannot interleave): the same key draws the same mask there too,
//! and no mask crosses the bus. That holds while nothing else draws from burn's generator at
//! the same moment; a training step draws nothing else (`tests/dropout_device.rs`).
//!
//! Book: "Text encoder: BERT and the tokenizer" (Bio_ClinicalBERT: hidden and attention dropout
//! 0.1; the word weights are taken from the attention *before* dropout). Reference:
//! `mgca/models/backbones/med.py`, `BertSelfAttention.forward`, and `encoder.py`,
//! `BertEncoder.forward`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the masks differ from torch's generator by chance (same distribution).

use burn::tensor::{Bool, Distribution, Tensor, TensorData, backend::Backend};
use rayon::prelude::*;

/// Where a dropout mask is used: one key per (run seed, step, shard), one site per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropoutKey {
    key: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl DropoutKey {
    /// The key of one shard of one optimiser step.
    pub fn new(seed: u64, step: usize, shard: usize) -> Self {
        Self { key: splitmix(splitmix(splitmix(seed) ^ step as u64) ^ (shard as u64).wrapping_mul(0x2545_f491)) }
    }

    /// The key of a site (a numbered call) under this key.
    pub fn site(self, site: u64) -> Self {
        Self { key: splitmix(self.key ^ site.wrapping_mul(0x9e37_79b9_7f4a_7c15)) }
    }

    /// Which of `n` elements survive dropout with probability `p`.
    pub fn keep_mask(self, n: usize, p: f64) -> Vec<bool> {
        let threshold = (p * 9_007_199_254_740_992.0) as u64; // p · 2⁵³
        let mut mask = vec![false; n];
        mask.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
            let base = (c as u64) << 16;
            for (i, m) in chunk.iter_mut().enumerate() {
                *m = splitmix(self.key ^ (base + i as u64)) >> 11 >= threshold;
            }
        });
        mask
    }
}

/// The keep mask (1 kept, 0 dropped) of `dims` drawn on `device` by burn's generator seeded
/// with `key`: one lock around seeding and drawing, so the mask depends on the key alone.
pub fn device_keep_mask<B: Backend, const D: usize>(
    key: DropoutKey,
    dims: [usize; D],
    p: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    static DRAW: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _draw = DRAW.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, key.key);
    Tensor::random(dims, Distribution::Bernoulli(1.0 - p), device)
}

// ANCHOR: dropout
/// Dropout of `x` with probability `p` under `key`; the identity without a key or with p = 0.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64, key: Option<DropoutKey>) -> Tensor<B, D> {
    match key {
        Some(key) if p > 0.0 => {
            let dims = x.dims();
            let keep = if crate::kernels::on_cpu::<B>() {
                let mask = key.keep_mask(dims.iter().product(), p);
                Tensor::<B, D, Bool>::from_data(TensorData::new(mask, dims), &x.device()).float()
            } else {
                device_keep_mask::<B, D>(key, dims, p, &x.device())
            };
            x * keep.mul_scalar(1.0 / (1.0 - p))
        }
        _ => x,
    }
}
// ANCHOR_END: dropout

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};

    #[test]
    fn masks_are_keyed_bernoulli_and_scale_the_survivors() {
        let key = DropoutKey::new(42, 7, 1);
        let mask = key.keep_mask(200_000, 0.1);
        let kept = mask.iter().filter(|&&m| m).count() as f64 / 2e5;
        assert!((kept - 0.9).abs() < 0.003, "{kept}");
        assert_eq!(mask, key.keep_mask(200_000, 0.1), "same key, same mask");
        assert_ne!(mask, key.site(1).keep_mask(200_000, 0.1));
        assert_ne!(mask, DropoutKey::new(42, 7, 0).keep_mask(200_000, 0.1), "shards differ");
        assert_ne!(mask, DropoutKey::new(42, 8, 1).keep_mask(200_000, 0.1), "steps differ");
        let x = Tensor::<Cpu, 2>::ones([100, 50], &cpu_device());
        let y: Vec<f32> = dropout(x.clone(), 0.1, Some(key)).into_data().to_vec().unwrap();
        let survivors = key.keep_mask(5000, 0.1);
        for (v, m) in y.iter().zip(&survivors) {
            assert_eq!(*v, if *m { 1.0 / 0.9 } else { 0.0 });
        }
        assert_eq!(dropout(x.clone(), 0.1, None).into_data(), x.clone().into_data());
        assert_eq!(dropout(x.clone(), 0.0, Some(key)).into_data(), x.into_data());
    }

    /// The text encoder applies it in training only: with a key the hidden states change, the
    /// same key gives the same output, and without one it is the plain forward pass.
    #[test]
    fn the_text_encoder_drops_out_with_a_key() {
        use crate::model::bert::{BertConfig, PositionIds};
        use burn::tensor::Int;
        let dev = cpu_device();
        let config = BertConfig { vocab_size: 50, hidden: 16, layers: 2, heads: 2, intermediate: 32, max_positions: 8 };
        let bert = config.init::<Cpu>(&dev);
        let ids = Tensor::<Cpu, 2, Int>::from_data(
            TensorData::new((0..16).map(|i| 1 + i % 40).collect::<Vec<i64>>(), [2, 8]),
            &dev,
        );
        let mask = Tensor::<Cpu, 2>::ones([2, 8], &dev);
        let plain = bert.forward(ids.clone(), mask.clone(), PositionIds::Reference).hidden.into_data();
        let key = DropoutKey::new(1, 2, 3);
        let run =
            |k| bert.forward_with_dropout(ids.clone(), mask.clone(), PositionIds::Reference, k).hidden.into_data();
        assert_eq!(run(None), plain);
        assert_ne!(run(Some((0.1, key))), plain);
        assert_eq!(run(Some((0.1, key))), run(Some((0.1, key))));
        assert_ne!(run(Some((0.1, key))), run(Some((0.1, DropoutKey::new(1, 2, 4)))));
    }
}
