//! The reference's random subsets and splits, bit for bit: NumPy's legacy `RandomState`
//! (MT19937) permutation, and the three recipes built on it — pandas `sample(frac,
//! random_state)`, NumPy's global `choice(n, k, replace=False)`, and scikit-learn's
//! `train_test_split(random_state)`.
//!
//! MT19937 is seeded with `init_genrand(seed)`; a permutation of `0..n` shuffles the identity
//! from the end, drawing `j ∈ [0, i]` by masked rejection (`mask` = the smallest all-ones bit
//! pattern ≥ i; draw `u = next_u32() & mask` until `u ≤ i`).
//!
//! Book: "Data: splits, images and masks" (the three recipes). Reference: the `data_pct` subsets
//! in `mgca/datasets/*_dataset.py` and the splits in `mgca/preprocess/*.py`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. `choice` on a *global* generator is reproduced by keeping one
//! [`LegacyRng`] per script and drawing from it in the reference's order (the training dataset
//! is constructed twice, so the second draw is the one trained on: see
//! [`global_choice_second_draw`]).

/// NumPy's legacy Mersenne Twister (`numpy.random.RandomState`).
#[derive(Debug, Clone)]
pub struct LegacyRng {
    state: [u32; 624],
    index: usize,
}

impl LegacyRng {
    /// `RandomState(seed)` for a seed below 2³².
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32.wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    // ANCHOR: permutation
    /// A uniform integer in `[0, max]` by masked rejection (NumPy's legacy `rk_interval`).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= 0xffff_ffff {
            loop {
                let u = (self.next_u32() as u64) & mask;
                if u <= max {
                    return u;
                }
            }
        }
        loop {
            let u = (((self.next_u32() as u64) << 32) | self.next_u32() as u64) & mask;
            if u <= max {
                return u;
            }
        }
    }

    /// `permutation(n)`: the identity shuffled from the end.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            p.swap(i, j);
        }
        p
    }

    // ANCHOR_END: permutation

    /// `choice(n, k, replace=False)`: the first `k` entries of `permutation(n)`.
    pub fn choice(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut p = self.permutation(n);
        p.truncate(k);
        p
    }
}

/// Python's `round`: half to even.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - x.signum() } else { r };
    r.max(0.0) as usize
}

/// pandas `df.sample(frac=frac, random_state=seed)`: the positions of the kept rows, in the
/// order pandas returns them (`n = round(frac · N)`, half to even).
pub fn pandas_sample(rows: usize, frac: f64, seed: u32) -> Vec<usize> {
    LegacyRng::new(seed).choice(rows, round_half_even(frac * rows as f64))
}

/// A `train_test_split` size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitSize {
    /// `test_size` as a fraction: `n_test = ⌈f · n⌉`.
    TestFraction(f64),
    /// `test_size` as a count.
    TestCount(usize),
    /// Only `train_size` as a fraction: `n_train = ⌊g · n⌋`, `n_test = n − n_train`.
    TrainFraction(f64),
}

/// scikit-learn `train_test_split(…, random_state=seed)` over `n` rows: `(train, test)`
/// positions, each in permutation order.
pub fn train_test_split(n: usize, size: SplitSize, seed: u32) -> (Vec<usize>, Vec<usize>) {
    let n_test = match size {
        SplitSize::TestFraction(f) => (f * n as f64).ceil() as usize,
        SplitSize::TestCount(k) => k,
        SplitSize::TrainFraction(g) => n - (g * n as f64).floor() as usize,
    }
    .min(n);
    let perm = LegacyRng::new(seed).permutation(n);
    let (test, train) = perm.split_at(n_test);
    (train.to_vec(), test.to_vec())
}

/// A count the reference fixes for the real dataset (RSNA's 2 × 5,337 held-out patients,
/// CheXpert's 200 per task and 5,000 validation rows), for a table of `n` rows where the real
/// one has `real_n`: unchanged for a real-sized table, scaled in proportion (at least 1) for a
/// smaller one — the synthetic datasets — where the reference would fail or empty a split.
pub fn scaled_count(count: usize, n: usize, real_n: usize) -> usize {
    if n >= real_n { count } else { ((count as f64 * n as f64 / real_n as f64).round() as usize).clamp(1, n.max(1)) }
}

/// The subset a downstream script trains on when it subsets with the global generator: the
/// script seeds it, builds the training dataset once to count steps (one `choice`), then again
/// inside `fit()` (a second `choice`); the second draw is used. `k = int(frac · n)`.
pub fn global_choice_second_draw(n: usize, frac: f64, seed: u32) -> Vec<usize> {
    let k = (frac * n as f64) as usize;
    let mut rng = LegacyRng::new(seed);
    rng.choice(n, k);
    rng.choice(n, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check values computed with NumPy's legacy `RandomState` (the book lists them).
    #[test]
    fn numpy_check_values() {
        assert_eq!(LegacyRng::new(42).permutation(10), vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
        assert_eq!(LegacyRng::new(0).permutation(25)[..10], [5, 2, 19, 16, 11, 22, 17, 24, 23, 14]);
        let mut rng = LegacyRng::new(42);
        assert_eq!(rng.choice(50, 5), vec![13, 39, 30, 45, 17]);
        assert_eq!(rng.choice(50, 5), vec![29, 38, 2, 46, 45]);
    }

    /// The first outputs of MT19937 seeded with 5489 (the reference generator's default seed),
    /// from the algorithm's published test vector.
    #[test]
    fn mt19937_reference_outputs() {
        let mut rng = LegacyRng::new(5489);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn rounding_is_pythons() {
        assert_eq!([0.5, 1.5, 2.5, 2.4, 2.6, 3.0].map(round_half_even), [0, 2, 2, 2, 3, 3]);
        assert_eq!(pandas_sample(10, 0.25, 42).len(), 2); // round(2.5) = 2
        assert_eq!(pandas_sample(10, 1.0, 42), LegacyRng::new(42).permutation(10));
    }

    /// RSNA's classification split sizes for 26,684 patients (`mgca/preprocess/rsna.py`, `preprocess_rsna_data`): 30 % held out,
    /// then halved, the first half becoming test.
    #[test]
    fn rsna_classification_split_sizes() {
        let (train, held) = train_test_split(26_684, SplitSize::TestFraction(0.3), 0);
        let (test, valid) = train_test_split(held.len(), SplitSize::TestFraction(0.5), 0);
        assert_eq!((train.len(), test.len(), valid.len()), (18_678, 4_003, 4_003));
        let (train, held) = train_test_split(26_684, SplitSize::TestCount(10_674), 0);
        assert_eq!((train.len(), held.len()), (16_010, 10_674));
        let (train, valid) = train_test_split(29_986, SplitSize::TrainFraction(0.8), 0);
        assert_eq!((train.len(), valid.len()), (23_988, 5_998));
    }
}
