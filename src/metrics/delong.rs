//! DeLong's test for two correlated AUROCs measured on the same images (DeLong, DeLong and
//! Clarke-Pearson 1988), computed with midranks (Sun and Xu 2014).
//!
//! For model k with positives Xᵢ (m of them) and negatives Yⱼ (n), the structural components
//! are V₁₀ᵢ = (1/n) Σⱼ ψ(Xᵢ, Yⱼ) and V₀₁ⱼ = (1/m) Σᵢ ψ(Xᵢ, Yⱼ), ψ = 1, ½, 0 for >, =, <.
//! With S₁₀ and S₀₁ their 2 × 2 sample covariances over the two models,
//!
//! ```text
//! z = (A₁ − A₂) / sqrt(c (S₁₀/m + S₀₁/n) cᵀ),   c = (1, −1),   p = 2 (1 − Φ(|z|)).
//! ```
//!
//! Book: "Linear probing" (comparing two encoders). The reference reports no test; this is
//! the reproduction's own addition.
//!
//! **Deviation:** none (no reference counterpart). Two identical score vectors have zero
//! variance: the test reports z = 0, p = 1.

use statrs::distribution::{ContinuousCDF, Normal};

use super::MetricError;
use super::auroc::{average_ranks, check_binary};

/// The outcome of DeLong's test.
#[derive(Debug, Clone, PartialEq)]
pub struct DelongTest {
    pub auroc_a: f64,
    pub auroc_b: f64,
    /// The variance of A₁ − A₂.
    pub variance: f64,
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// One model's AUROC and structural components, from midranks.
fn components(scores: &[f32], labels: &[f32]) -> (f64, Vec<f64>, Vec<f64>) {
    let pos: Vec<f64> = scores.iter().zip(labels).filter(|(_, y)| **y == 1.0).map(|(s, _)| *s as f64).collect();
    let neg: Vec<f64> = scores.iter().zip(labels).filter(|(_, y)| **y == 0.0).map(|(s, _)| *s as f64).collect();
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
    let (tz, tx, ty) = (average_ranks(&all), average_ranks(&pos), average_ranks(&neg));
    let v10: Vec<f64> = (0..pos.len()).map(|i| (tz[i] - tx[i]) / n).collect();
    let v01: Vec<f64> = (0..neg.len()).map(|j| 1.0 - (tz[pos.len() + j] - ty[j]) / m).collect();
    let auc = (tz[..pos.len()].iter().sum::<f64>() - m * (m + 1.0) / 2.0) / (m * n);
    (auc, v10, v01)
}

/// Sample covariance (N − 1 in the denominator).
fn cov(a: &[f64], b: &[f64]) -> f64 {
    let k = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / k, b.iter().sum::<f64>() / k);
    a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>() / (k - 1.0)
}

// ANCHOR: delong
/// Compare two models' scores on the same images and 0/1 labels.
pub fn delong(scores_a: &[f32], scores_b: &[f32], labels: &[f32]) -> Result<DelongTest, MetricError> {
    let positives = check_binary(scores_a, labels, 0)?;
    check_binary(scores_b, labels, 0)?;
    if positives < 2 || labels.len() - positives < 2 {
        return Err(MetricError::OneClass { class: 0, positives, count: labels.len() });
    }
    let (auroc_a, a10, a01) = components(scores_a, labels);
    let (auroc_b, b10, b01) = components(scores_b, labels);
    let (m, n) = (a10.len() as f64, a01.len() as f64);
    let s10 = cov(&a10, &a10) + cov(&b10, &b10) - 2.0 * cov(&a10, &b10);
    let s01 = cov(&a01, &a01) + cov(&b01, &b01) - 2.0 * cov(&a01, &b01);
    let variance = (s10 / m + s01 / n).max(0.0);
    let diff = auroc_a - auroc_b;
    let (z, p) = if variance > 0.0 {
        let z = diff / variance.sqrt();
        let normal = Normal::standard();
        (z, 2.0 * (1.0 - normal.cdf(z.abs())))
    } else {
        (0.0, 1.0)
    };
    Ok(DelongTest { auroc_a, auroc_b, variance, z, p })
}
// ANCHOR_END: delong

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auroc::auroc_class;
    use crate::parity::F64_IDENTITY;

    #[test]
    fn aurocs_match_and_identical_models_tie() {
        let y = [0., 1., 0., 1., 1., 0., 0., 1., 0., 1.];
        let a = [0.1, 0.8, 0.3, 0.6, 0.9, 0.2, 0.55, 0.4, 0.35, 0.7];
        let b = [0.5, 0.5, 0.2, 0.9, 0.4, 0.6, 0.1, 0.8, 0.3, 0.2];
        let t = delong(&a, &b, &y).unwrap();
        assert!((t.auroc_a - auroc_class(&a, &y, 0).unwrap()).abs() < F64_IDENTITY);
        assert!((t.auroc_b - auroc_class(&b, &y, 0).unwrap()).abs() < F64_IDENTITY);
        assert!(t.p > 0.0 && t.p < 1.0);
        let same = delong(&a, &a, &y).unwrap();
        assert_eq!((same.z, same.p), (0.0, 1.0));
    }

    /// A clearly better model on many images gives a small p; the sign of z follows A − B.
    #[test]
    fn better_model_is_significant() {
        let n = 400;
        let y: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let noise = |i: usize, k: u64| ((i as u64 * 2_654_435_761 + k) % 1000) as f32 / 1000.0;
        let good: Vec<f32> = (0..n).map(|i| y[i] * 0.6 + noise(i, 7)).collect();
        let weak: Vec<f32> = (0..n).map(|i| y[i] * 0.1 + noise(i, 13)).collect();
        let t = delong(&good, &weak, &y).unwrap();
        assert!(t.z > 0.0 && t.p < 1e-6, "{t:?}");
    }
}
