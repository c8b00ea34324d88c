//! Sinkhorn–Knopp: balanced soft assignments of samples to prototypes.
//!
//! `Q = exp(s / ε)ᵀ ∈ R^{K×N}`, `Q ← Q / Σ Q`; repeat `n` times: rows `Q[k,:] ← Q[k,:]·(1/K)/Σ_b Q[k,b]`,
//! columns `Q[:,b] ← Q[:,b]·(1/N)/Σ_k Q[k,b]`; output the column-normalised `Q`, transposed to
//! `[N, K]` (each sample's code sums to 1).
//!
//! Book: "CPA and Sinkhorn–Knopp: prototype-level alignment". Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA.sinkhorn` (single device) and `MGCA.distributed_sinkhorn`
//! (the variant the reference never calls), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the reference always runs the single-device version, even on 2 GPUs (its
//! distributed branch is dead code); that is [`SinkhornScope::PerDevice`]. The distributed
//! algorithm is implemented once, with the all-reduce supplied by the caller ([`AllReduce`]):
//! [`LocalReduce`] (a no-op over one device) turns it into exactly the single-device version.

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// Over which samples the Sinkhorn marginals are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkhornScope {
    /// Each device's own batch (the reference, 72 samples per GPU).
    PerDevice,
    /// The global batch across devices, sums all-reduced (SwAV's intent, the paper's reading).
    Global,
}

/// Configuration of Sinkhorn–Knopp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkhornConfig {
    /// ε, the entropic temperature: `Q = exp(s / ε)` (reference 0.05).
    pub epsilon: f32,
    /// Number of row-and-column normalisation rounds (reference 3).
    pub iterations: usize,
    /// Whether the marginals span one device's batch or the global batch.
    pub scope: SinkhornScope,
}

impl SinkhornConfig {
    /// The reference's Sinkhorn: ε = 0.05, 3 iterations, per device.
    pub fn reference() -> Self {
        Self { epsilon: 0.05, iterations: 3, scope: SinkhornScope::PerDevice }
    }

    /// The smallest ε for which `Σ exp(s / ε)` over `scores` cosine scores (`|s| <= 1`, so
    /// `K × N` of them) stays finite in f32: `1 / (ln f32::MAX − ln(K·N))`. Below it the first
    /// normalisation divides by infinity and the codes become NaN, as in the reference, which
    /// exponentiates without subtracting the maximum.
    pub fn min_epsilon(scores: usize) -> f64 {
        let headroom = LN_F32_MAX - (scores.max(1) as f64).ln();
        if headroom > 0.0 { 1.0 / headroom } else { f64::INFINITY }
    }
}

/// `ln(f32::MAX)`: the largest exponent whose `exp` is finite in f32.
pub const LN_F32_MAX: f64 = 88.722_839;

/// A sum over all devices taking part in one global batch.
///
/// The caller supplies it: on one device it is [`LocalReduce`]; with several devices it wraps
/// the collective operation of the training loop. Every device calls it in the same order.
pub trait AllReduce<B: Backend> {
    /// How many devices contribute (each holding one shard of the global batch).
    fn world_size(&self) -> usize;
    /// The element-wise sum of `t` over all devices; every device gets the result.
    fn all_reduce_sum(&self, t: Tensor<B, 2>) -> Tensor<B, 2>;
}

/// The all-reduce of a single device: the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalReduce;

impl<B: Backend> AllReduce<B> for LocalReduce {
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, t: Tensor<B, 2>) -> Tensor<B, 2> {
        t
    }
}

// ANCHOR: sinkhorn
impl SinkhornConfig {
    /// Codes from prototype scores `s` (`[N, K]`, no gradient), over the samples that `reduce`
    /// spans. Returns `[N, K]`, each row summing to 1.
    pub fn codes<B: Backend>(&self, scores: Tensor<B, 2>, reduce: &dyn AllReduce<B>) -> Tensor<B, 2> {
        let q = scores.detach().div_scalar(self.epsilon).exp().transpose(); // [K, N]
        sinkhorn_knopp(q, self.iterations, reduce)
    }
}

/// Sinkhorn–Knopp on a positive `K × N` matrix whose `N` columns are this device's samples;
/// row sums and the total are all-reduced over the devices, column sums are local.
pub fn sinkhorn_knopp<B: Backend>(
    q: Tensor<B, 2>, // [K, N]
    iterations: usize,
    reduce: &dyn AllReduce<B>,
) -> Tensor<B, 2> {
    let [k, n] = q.dims();
    let total = reduce.all_reduce_sum(q.clone().sum().reshape([1, 1])); // [1, 1]
    let mut q = q / total;
    let row_target = 1.0 / k as f32; // r_k
    let col_target = 1.0 / (reduce.world_size() * n) as f32; // c_b
    for _ in 0..iterations {
        let rows = reduce.all_reduce_sum(q.clone().sum_dim(1)); // [K, 1]
        q = q / rows.div_scalar(row_target);
        let cols = q.clone().sum_dim(0); // [1, N]
        q = q / cols.div_scalar(col_target);
    }
    let cols = q.clone().sum_dim(0); // [1, N]
    (q / cols).transpose() // [N, K]
}
// ANCHOR_END: sinkhorn

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{HAND_WORKED, HAND_WORKED_WEIGHTS, SHALLOW};
    use burn::tensor::TensorData;
    use std::sync::{Arc, Barrier, Mutex};

    fn rows(t: Tensor<Cpu, 2>) -> Vec<Vec<f32>> {
        let [r, c] = t.dims();
        let v = t.into_data().to_vec::<f32>().unwrap();
        (0..r).map(|i| v[i * c..(i + 1) * c].to_vec()).collect()
    }

    fn assert_close(got: &[Vec<f32>], want: &[&[f64]], rel: f64, abs: f64) {
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w.iter()) {
                let tol = abs + rel * b.abs();
                assert!((*a as f64 - b).abs() <= tol, "got {got:?}, want {want:?}");
            }
        }
    }

    /// The book's worked example: the 3 × 2 matrix worked by hand, after 1 and after 3 iterations.
    #[test]
    fn worked_three_by_two() {
        let dev = cpu_device();
        let q = || Tensor::<Cpu, 2>::from_floats([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]], &dev);
        let one = rows(sinkhorn_knopp(q(), 1, &LocalReduce));
        assert_close(
            &one,
            &[&[4.0 / 19.0, 9.0 / 19.0, 6.0 / 19.0], &[8.0 / 17.0, 3.0 / 17.0, 6.0 / 17.0]],
            HAND_WORKED_WEIGHTS,
            0.0,
        );
        let three = rows(sinkhorn_knopp(q(), 3, &LocalReduce));
        let s0 = [5206228.0, 12339873.0, 7971054.0].map(|x| x / 25517155.0);
        let s1 = [10412456.0, 4113291.0, 7971054.0].map(|x| x / 22496801.0);
        assert_close(&three, &[&s0, &s1], HAND_WORKED_WEIGHTS, 0.0);
    }

    /// The book's second example: codes from cosine scores with ε = 0.05.
    #[test]
    fn worked_codes_from_scores() {
        let dev = cpu_device();
        let s = Tensor::<Cpu, 2>::from_floats([[0.9, 0.1, -0.2], [0.3, 0.8, 0.0]], &dev);
        let codes = rows(SinkhornConfig::reference().codes(s, &LocalReduce));
        assert_close(
            &codes,
            &[&[0.940_323_67, 2.8927e-6, 0.059_673_44], &[8.576e-7, 0.516_383_80, 0.483_615_35]],
            1e-5,
            1e-9,
        );
    }

    /// Marginals: every sample's code sums to 1; prototype masses approach 1/K each.
    #[test]
    fn marginals_approach_equipartition() {
        let dev = cpu_device();
        let s = Tensor::<Cpu, 2>::random([16, 5], burn::tensor::Distribution::Uniform(-0.3, 0.3), &dev);
        let cfg = SinkhornConfig { epsilon: 0.05, iterations: 200, scope: SinkhornScope::PerDevice };
        let codes = cfg.codes(s, &LocalReduce); // [16, 5]
        for row in rows(codes.clone().sum_dim(1)) {
            assert!((row[0] - 1.0).abs() < HAND_WORKED as f32);
        }
        // Column masses: N / K = 16 / 5 per prototype once converged.
        for m in rows(codes.sum_dim(0))[0].iter() {
            assert!((m - 16.0 / 5.0).abs() < 1e-3, "mass {m}");
        }
    }

    /// An in-process all-reduce over threads: each thread deposits its tensor, waits for the
    /// others, and reads the sum. Used to run the distributed algorithm on real shards.
    struct ThreadReduce {
        world: usize,
        barrier: Arc<Barrier>,
        slots: Arc<Mutex<Vec<Option<TensorData>>>>,
        rank: usize,
    }

    impl AllReduce<Cpu> for ThreadReduce {
        fn world_size(&self) -> usize {
            self.world
        }
        fn all_reduce_sum(&self, t: Tensor<Cpu, 2>) -> Tensor<Cpu, 2> {
            let device = t.device();
            self.slots.lock().unwrap()[self.rank] = Some(t.into_data());
            self.barrier.wait();
            let sum = self
                .slots
                .lock()
                .unwrap()
                .iter()
                .map(|d| Tensor::<Cpu, 2>::from_data(d.clone().unwrap(), &device))
                .reduce(|a, b| a + b)
                .unwrap();
            self.barrier.wait(); // nobody overwrites a slot before everyone has read
            sum
        }
    }

    /// Two shards of one batch, each on its own thread with a real all-reduce, give exactly
    /// the single-device codes of the whole batch.
    #[test]
    fn two_shards_equal_the_whole_batch() {
        let dev = cpu_device();
        let cfg = SinkhornConfig { epsilon: 0.05, iterations: 3, scope: SinkhornScope::Global };
        let scores = Tensor::<Cpu, 2>::random([12, 7], burn::tensor::Distribution::Uniform(-1.0, 1.0), &dev);
        let whole = cfg.codes(scores.clone(), &LocalReduce).into_data().to_vec::<f32>().unwrap();

        let barrier = Arc::new(Barrier::new(2));
        let slots = Arc::new(Mutex::new(vec![None, None]));
        let shards: Vec<_> = (0..2)
            .map(|rank| {
                let shard = scores.clone().narrow(0, rank * 6, 6).into_data();
                let reduce = ThreadReduce { world: 2, barrier: barrier.clone(), slots: slots.clone(), rank };
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let s = Tensor::<Cpu, 2>::from_data(shard, &cpu_device());
                    cfg.codes(s, &reduce).into_data().to_vec::<f32>().unwrap()
                })
            })
            .collect();
        let sharded: Vec<f32> = shards.into_iter().flat_map(|h| h.join().unwrap()).collect();
        for (a, b) in sharded.iter().zip(&whole) {
            assert!(SHALLOW.allows(*a as f64, *b as f64), "{a} vs {b}");
        }
        // And the per-device codes differ from the global ones (the marginals differ).
        let local: Vec<f32> = (0..2)
            .flat_map(|r| {
                let s = scores.clone().narrow(0, r * 6, 6);
                cfg.codes(s, &LocalReduce).into_data().to_vec::<f32>().unwrap()
            })
            .collect();
        assert!(local.iter().zip(&whole).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}
