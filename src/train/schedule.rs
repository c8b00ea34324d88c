//! The pretraining learning-rate schedule: a linear warm-up from the minimum to the peak over
//! the first 40 % of the planned steps, then a half cosine back to the minimum, stepped after
//! every optimiser step (`CosineAnnealingWarmupRestarts` with one cycle, `gamma = 1`).
//!
//! `lr(s) = η_min + (η − η_min) · s / W` for `0 ≤ s < W`;
//! `lr(s) = η_min + (η − η_min) · ½ (1 + cos(π (s − W) / (T − W)))` for `W ≤ s < T`;
//! with `T = ⌊n_batches / devices⌋ · epochs` and `W = ⌊0.4 T⌋`.
//!
//! Book: "Pretraining" (the schedule and its figure). Reference:
//! `mgca/models/mgca/mgca_module.py`, `MGCA.configure_optimizers`, at HKU-MedAI/MGCA
//! `680fe4a6ee0c` (the `cosine_annealing_warmup` package's `CosineAnnealingWarmupRestarts`).
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

/// An SVG line plot of the learning rate over `total_steps` (the book's figure).
pub fn plot_svg(schedule: &CosineWarmup, title: &str) -> String {
    let (w, h, left, top) = (640.0, 240.0, 60.0, 30.0);
    let (pw, ph) = (w - left - 20.0, h - top - 40.0);
    let n = schedule.total_steps.max(1);
    let stride = (n / 400).max(1);
    let points: Vec<String> = (0..=n)
        .step_by(stride)
        .map(|s| {
            let x = left + pw * s as f64 / n as f64;
            let y = top + ph - ph * schedule.lr(s.min(n - 1)) / schedule.max_lr;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let warm = left + pw * schedule.warmup_steps as f64 / n as f64;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{left}" y="18">{title}</text>
<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
<line x1="{warm:.1}" y1="{top}" x2="{warm:.1}" y2="{bottom}" stroke="#bbb" stroke-dasharray="4 3"/>
<text x="{wl:.1}" y="{tl}">end of warm-up (step {ws})</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>
<text x="4" y="{ty}">{max:e}</text><text x="4" y="{bottom}">{min:e}</text>
<text x="{left}" y="{sx}">0</text><text x="{right}" y="{sx}" text-anchor="end">step {n}</text>
</svg>
"##,
        bottom = top + ph,
        wl = warm + 4.0,
        tl = top + 14.0,
        ws = schedule.warmup_steps,
        points = points.join(" "),
        ty = top + 4.0,
        max = schedule.max_lr,
        min = schedule.min_lr,
        sx = top + ph + 16.0,
        right = left + pw,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The book's figure is this code's output for the published run (about 227,232 training
    /// pairs, as the released checkpoint's step count implies; 2 × 72; 50 epochs);
    /// `MGCA_BLESS=1` rewrites it.
    #[test]
    fn the_books_schedule_figure_is_current() {
        let s = CosineWarmup::reference(2e-5, 1e-8, 227_232 / 72, 2, 50, 0.4);
        let svg = plot_svg(&s, "learning rate per optimiser step, the published run");
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("book/src/figures/schedule.svg");
        if std::env::var_os("MGCA_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &svg).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(committed == svg, "{} is stale: rerun this test with MGCA_BLESS=1", path.display());
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    /// The schedule's values at T = 100, W = 40, as `CosineAnnealingWarmupRestarts` gives them.
    #[test]
    fn the_packages_check_values() {
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
            assert!(
                (got - want).abs() <= crate::parity::HAND_WORKED_WEIGHTS * want,
                "lr({step}) = {got:e}, want {want:e}"
            );
        }
        // Past T a new cycle starts.
        assert_eq!(s.lr(100), s.lr(0));
        assert_eq!(s.lr(141), s.lr(41));
    }

    #[test]
    fn total_steps_follow_the_reference() {
        // The released checkpoint `epoch=20-step=33137` implies 1,578 steps of 144 pairs per
        // epoch (book: "Data", the pretraining pairs): 227,232 pairs / 72 = 3,156 batches;
        // 2 devices; 50 epochs.
        let s = CosineWarmup::reference(2e-5, 1e-8, 227_232 / 72, 2, 50, 0.4);
        assert_eq!((s.total_steps, s.warmup_steps), (1578 * 50, 31_560));
        let peak = (0..s.total_steps).map(|i| s.lr(i)).fold(0.0, f64::max);
        assert_eq!(peak, 2e-5);
    }
}
