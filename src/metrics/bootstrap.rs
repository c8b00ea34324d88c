//! A percentile bootstrap confidence interval over test images: draw the `N` test images with
//! replacement `R` times (seeded), recompute the metric on each draw, and report the
//! `(1 − level)/2` and `(1 + level)/2` quantiles of the `R` values (linear interpolation
//! between order statistics, NumPy's default `percentile`).
//!
//! The draws are NumPy's legacy `RandomState(seed).randint(0, N, size=N)`, one call per
//! resample, so a Python reader can redraw the same images.
//!
//! Book: "Linear probing" (the report's confidence intervals). The reference reports no
//! interval; this is the reproduction's own addition.
//!
//! **Deviation:** a resample on which the metric is undefined (for AUROC: a class left with one
//! label value) is skipped and counted, as is usual; if more than half are skipped the interval
//! is an error.

use super::MetricError;
use crate::data::sampling::LegacyRng;

/// How the interval is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapConfig {
    /// R, the number of resamples (default 1,000).
    pub resamples: usize,
    /// The generator's seed.
    pub seed: u32,
    /// The coverage, e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self { resamples: 1000, seed: 0, level: 0.95 }
    }
}

/// A metric with its bootstrap interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The metric on all images.
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// Resamples that gave a value.
    pub used: usize,
    /// Resamples on which the metric was undefined.
    pub skipped: usize,
    /// Resamples whose value was at most 0 (for a difference: the one-sided p-value's count).
    pub at_or_below_zero: usize,
}

/// NumPy's `percentile(values, q)` with linear interpolation; `values` sorted ascending.
pub fn percentile_sorted(values: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(values.len() - 1);
    values[lo] + (values[hi] - values[lo]) * frac
}

/// The indices of resample `r`'s images: `randint(0, n, size=n)` from the shared generator.
fn draw(rng: &mut LegacyRng, n: usize) -> Vec<usize> {
    (0..n).map(|_| rng.interval(n as u64 - 1) as usize).collect()
}

impl Interval {
    /// For a difference `a − b` bootstrapped on shared resamples: the one-sided p-value of
    /// "`a` is no better than `b`", `(k + 1) / (R + 1)` with `k` resamples at or below 0.
    pub fn p_at_or_below_zero(&self) -> f64 {
        (self.at_or_below_zero as f64 + 1.0) / (self.used as f64 + 1.0)
    }
}

// ANCHOR: bootstrap
/// The interval of `metric` over `n` images; `metric` receives the drawn image indices.
pub fn bootstrap(
    n: usize,
    config: BootstrapConfig,
    metric: impl Fn(&[usize]) -> Result<f64, MetricError>,
) -> Result<Interval, MetricError> {
    if n == 0 || config.resamples == 0 {
        return Err(MetricError::Empty);
    }
    if !(config.level > 0.0 && config.level < 1.0) {
        return Err(MetricError::Shape(format!("bootstrap level {} is not in (0, 1)", config.level)));
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = metric(&all)?;
    let mut rng = LegacyRng::new(config.seed);
    let mut values = Vec::with_capacity(config.resamples);
    let mut skipped = 0;
    for _ in 0..config.resamples {
        match metric(&draw(&mut rng, n)) {
            Ok(v) => values.push(v),
            Err(MetricError::OneClass { .. }) => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    if values.len() * 2 < config.resamples {
        return Err(MetricError::Shape(format!(
            "the metric is undefined on {skipped} of {} bootstrap resamples",
            config.resamples
        )));
    }
    values.sort_by(f64::total_cmp);
    let at_or_below_zero = values.iter().filter(|v| **v <= 0.0).count();
    let tail = (1.0 - config.level) / 2.0 * 100.0;
    Ok(Interval {
        estimate,
        low: percentile_sorted(&values, tail),
        high: percentile_sorted(&values, 100.0 - tail),
        used: values.len(),
        skipped,
        at_or_below_zero,
    })
}
// ANCHOR_END: bootstrap

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 50.0), 2.5);
        assert_eq!(percentile_sorted(&v, 2.5), 1.075);
        assert_eq!(percentile_sorted(&v, 100.0), 4.0);
    }

    /// The mean of a constant has a zero-width interval; a spread sample's interval brackets
    /// its mean and narrows as N grows.
    #[test]
    fn interval_brackets_and_narrows() {
        let c = bootstrap(50, BootstrapConfig::default(), |_| Ok(0.7)).unwrap();
        assert_eq!((c.low, c.high, c.used), (0.7, 0.7, 1000));
        let width = |n: usize| {
            let x: Vec<f64> = (0..n).map(|i| (i % 10) as f64).collect();
            let mean = |idx: &[usize]| Ok(idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64);
            let ci = bootstrap(n, BootstrapConfig { resamples: 400, ..Default::default() }, mean).unwrap();
            assert!(ci.low < ci.estimate && ci.estimate < ci.high, "{ci:?}");
            ci.high - ci.low
        };
        assert!(width(1000) < width(40) / 3.0);
    }

    #[test]
    fn undefined_resamples_are_counted_or_refused() {
        let identity = |idx: &[usize]| idx.iter().enumerate().all(|(i, &j)| i == j);
        let undefined = |below: usize| {
            move |idx: &[usize]| {
                if !identity(idx) && idx[0] < below {
                    Err(MetricError::OneClass { class: 0, positives: 0, count: 10 })
                } else {
                    Ok(1.0)
                }
            }
        };
        let some = bootstrap(10, BootstrapConfig { resamples: 100, ..Default::default() }, undefined(3)).unwrap();
        assert!(some.skipped > 10 && some.used + some.skipped == 100, "{some:?}");
        assert!(bootstrap(10, BootstrapConfig::default(), undefined(8)).is_err());
    }
}
