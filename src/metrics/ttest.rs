//! The t-tests a reproduction report runs: a one-sided test of a falling slope (the pretraining
//! loss), a one-sided test of a mean above chance (retrieval accuracy), and a two-sided
//! one-sample test of our seeds against the paper's published value.
//!
//! `t = (x̄ − μ) / (s / √n)` with `n − 1` degrees of freedom, and for the slope of least squares
//! `t = b / √(RSS / (n − 2) / Sxx)` with `n − 2`; p-values from Student's t (statrs).
//!
//! Book: "Pretraining" (regression: the golden run) and "Linear probing" (the reproductions and
//! the report). Reference: none; the reference runs no tests of its results.
//!
//! **Deviation:** none.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A one-sided t-test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// The estimate (slope, or mean minus chance).
    pub estimate: f64,
    pub t: f64,
    /// One-sided p-value in the tested direction.
    pub p: f64,
    pub n: usize,
}

impl TTest {
    /// Passes at level `alpha` in the tested direction.
    pub fn passes(&self, alpha: f64) -> bool {
        self.p < alpha
    }
}

fn t_cdf(t: f64, freedom: f64) -> f64 {
    StudentsT::new(0.0, 1.0, freedom).expect("valid degrees of freedom").cdf(t)
}

/// Test that `ys` decrease with `xs` (slope < 0).
pub fn falling_slope(xs: &[f64], ys: &[f64]) -> TTest {
    let n = xs.len().min(ys.len());
    assert!(n >= 3, "a slope test needs 3 points");
    let (mx, my) = (xs[..n].iter().sum::<f64>() / n as f64, ys[..n].iter().sum::<f64>() / n as f64);
    let sxx: f64 = xs[..n].iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs[..n].iter().zip(&ys[..n]).map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let rss: f64 = xs[..n].iter().zip(&ys[..n]).map(|(x, y)| (y - a - b * x).powi(2)).sum();
    let se = (rss / (n as f64 - 2.0) / sxx).sqrt();
    let t = b / se;
    TTest { estimate: b, t, p: t_cdf(t, n as f64 - 2.0), n }
}

/// Test that the mean of `sample` is above `chance`.
pub fn above_chance(sample: &[f64], chance: f64) -> TTest {
    let n = sample.len();
    assert!(n >= 2, "a t-test needs 2 values");
    let m = sample.iter().sum::<f64>() / n as f64;
    let var = sample.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let t = (m - chance) / (var / n as f64).sqrt();
    TTest { estimate: m - chance, t, p: 1.0 - t_cdf(t, n as f64 - 1.0), n }
}

/// A two-sided one-sample t-test of `sample` against `mu` (needs two or more values).
pub fn one_sample_t(sample: &[f64], mu: f64) -> Option<TTest> {
    let n = sample.len();
    if n < 2 {
        return None;
    }
    let mean = sample.iter().sum::<f64>() / n as f64;
    let sd = (sample.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = (mean - mu) / (sd / (n as f64).sqrt());
    let p = if t.is_finite() { 2.0 * (1.0 - t_cdf(t.abs(), (n - 1) as f64)) } else { 0.0 };
    Some(TTest { estimate: mean - mu, t, p, n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::{F64_IDENTITY, HAND_WORKED};

    #[test]
    fn t_tests_detect_what_they_should() {
        let xs: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let noise = |i: usize| ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let falling: Vec<f64> = xs.iter().enumerate().map(|(i, x)| 10.0 - 0.05 * x + noise(i)).collect();
        let flat: Vec<f64> = xs.iter().enumerate().map(|(i, _)| 10.0 + noise(i)).collect();
        let f = falling_slope(&xs, &falling);
        assert!(f.passes(0.01) && (f.estimate + 0.05).abs() < 0.01, "{f:?}");
        assert!(!falling_slope(&xs, &flat).passes(0.01));
        let acc: Vec<f64> = (0..20).map(|i| 30.0 + noise(i) * 10.0).collect();
        assert!(above_chance(&acc, 12.5).passes(0.01));
        assert!(!above_chance(&acc, 30.0).passes(0.01));
        // Student's t: P(T ≤ 2.0) with 10 degrees of freedom is 0.963306 (tables).
        assert!((t_cdf(2.0, 10.0) - 0.963306).abs() < HAND_WORKED);
    }

    #[test]
    fn one_sample_is_two_sided_and_needs_two_values() {
        assert!(one_sample_t(&[1.0], 0.0).is_none());
        let high = one_sample_t(&[10.1, 9.9, 10.2, 9.8, 10.0], 9.0).unwrap();
        let low = one_sample_t(&[7.9, 8.1, 7.8, 8.2, 8.0], 9.0).unwrap();
        assert!(high.p < 0.001 && low.p < 0.001 && high.estimate > 0.0 && low.estimate < 0.0);
        assert!((high.t + low.t).abs() < F64_IDENTITY);
        assert!(one_sample_t(&[10.1, 9.9, 10.2, 9.8, 10.0], 10.0).unwrap().p > 0.9);
    }
}
