//! The pretraining learning-rate schedule: a linear warm-up from the minimum to the peak over
//! the first 40 % of the planned steps, then a half cosine back to the minimum, stepped after
//! every optimiser step (`CosineAnnealingWarmupRestarts` with one cycle, `gamma = 1`).
//!
//! `lr(s) = η_min + (η − η_min) · s / W` for `0 ≤ s < W`;
//! `lr(s) = η_min + (η − η_min) · ½ (1 + cos(π (s − W) / (T − W)))` for `W ≤ s < T`;
//! with `T = ⌊n_batches / devices⌋ · epochs` and `W = ⌊0.4 T⌋`.
//!
//! Spec: `hyperparameters.md` §3 (with its check values).
//!
//! **Deviation:** none. As in the package, a step at or past `T` starts a new cycle.

use serde::{Deserialize, Serialize};

/// The schedule's constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineWarmup {
    /// η, the peak learning rate (2e-5).
    pub max_lr: f64,
    /// η_min, the initial and final learning rate (1e-8).
    pub min_lr: f64,
    /// T, the steps of one cycle.
    pub total_steps: usize,
    /// W, the warm-up steps.
    pub warmup_steps: usize,
}

// ANCHOR: schedule
impl CosineWarmup {
    /// The reference's schedule for `n_batches` drop-last batches of one device's size per
    /// epoch, split over `devices`, for `epochs` epochs, warming up over `warmup_fraction`.
    pub fn reference(
        max_lr: f64,
        min_lr: f64,
        n_batches: usize,
        devices: usize,
        epochs: usize,
        warmup_fraction: f64,
    ) -> Self {
        let total_steps = (n_batches / devices.max(1)) * epochs;
        let warmup_steps = (warmup_fraction * total_steps as f64).floor() as usize;
        Self { max_lr, min_lr, total_steps, warmup_steps }
    }

    /// The learning rate of optimiser step `s` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        let (t, w) = (self.total_steps.max(1), self.warmup_steps);
        let s = step % t; // a new cycle past T
        let span = self.max_lr - self.min_lr;
        if s < w {
            self.min_lr + span * s as f64 / w as f64
        } else {
            let progress = (s - w) as f64 / (t - w).max(1) as f64;
            self.min_lr + span * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}
// ANCHOR_END: schedule

#[cfg(test)]
mod tests {
    use super::*;

    /// `hyperparameters.md` §3's check values for T = 100, W = 40.
    #[test]
    fn the_specs_check_values() {
        let s = CosineWarmup { max_lr: 2e-5, min_lr: 1e-8, total_steps: 100, warmup_steps: 40 };
        for (step, want) in [
            (0, 1e-8),
            (1, 5.0975e-7),
            (20, 1.0005e-5),
            (39, 1.950025e-5),
            (40, 2e-5),
            (70, 1.0005e-5),
            (99, 2.369780e-8),
        ] {
            let got = s.lr(step);
            assert!((got - want).abs() <= 1e-6 * want, "lr({step}) = {got:e}, want {want:e}");
        }
        // Past T a new cycle starts.
        assert_eq!(s.lr(100), s.lr(0));
        assert_eq!(s.lr(141), s.lr(41));
    }

    #[test]
    fn total_steps_follow_the_reference() {
        // 368,948 training pairs / 72 = 5,124 batches; 2 devices; 50 epochs.
        let s = CosineWarmup::reference(2e-5, 1e-8, 368_948 / 72, 2, 50, 0.4);
        assert_eq!((s.total_steps, s.warmup_steps), (2562 * 50, 51_240));
        let peak = (0..s.total_steps).map(|i| s.lr(i)).fold(0.0, f64::max);
        assert_eq!(peak, 2e-5);
    }
}
