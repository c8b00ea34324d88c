//! AUROC: the probability that a random positive scores above a random negative, ties counting
//! one half,
//!
//! ```text
//! AUROC = (R₊ − n₊(n₊ + 1)/2) / (n₊ · n₋)
//! ```
//!
//! where R₊ is the sum of the positives' ranks among all scores, tied scores sharing their
//! average rank (the Mann–Whitney U statistic). This equals the trapezoidal area under the ROC
//! curve that scikit-learn's `roc_auc_score` and torchmetrics integrate, ties included.
//! The macro AUROC is the unweighted mean over classes (CheXpert's 5 competition tasks).
//!
//! Book: "Linear probing" (metrics). Reference: `mgca/models/ssl_finetuner.py`,
//! `SSLFineTuner.training_step`/`test_step` (`torchmetrics.AUROC(num_classes=C)`).
//!
//! **Deviation:** a class with one label value is an error ([`MetricError::OneClass`]), where
//! torchmetrics warns and scores it 0.

use super::{Matrix, MetricError};

// ANCHOR: ranks
/// 1-based ranks of `scores` (ascending), ties given the mean of the ranks they span.
pub fn average_ranks(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) share ranks i+1..=j+1: their mean is (i + j)/2 + 1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}
// ANCHOR_END: ranks

/// Check one class's scores and 0/1 labels; returns the count of positives.
pub(crate) fn check_binary(scores: &[f32], labels: &[f32], class: usize) -> Result<usize, MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::Shape(format!("{} scores for {} labels", scores.len(), labels.len())));
    }
    if scores.is_empty() {
        return Err(MetricError::Empty);
    }
    let mut positives = 0;
    for (index, (&s, &y)) in scores.iter().zip(labels).enumerate() {
        if !s.is_finite() {
            return Err(MetricError::NonFinite { what: "score", index, class });
        }
        if y == 1.0 {
            positives += 1;
        } else if y != 0.0 {
            return Err(MetricError::BadLabel { index, class, value: y as f64 });
        }
    }
    if positives == 0 || positives == scores.len() {
        return Err(MetricError::OneClass { class, positives, count: scores.len() });
    }
    Ok(positives)
}

// ANCHOR: auroc
/// The AUROC of one class: `scores` ranked against 0/1 `labels`.
pub fn auroc_class(scores: &[f32], labels: &[f32], class: usize) -> Result<f64, MetricError> {
    let positives = check_binary(scores, labels, class)?;
    let negatives = scores.len() - positives;
    let widened: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
    let ranks = average_ranks(&widened);
    let rank_sum: f64 = ranks.iter().zip(labels).filter(|(_, y)| **y == 1.0).map(|(r, _)| r).sum();
    let p = positives as f64;
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}
// ANCHOR_END: auroc

/// Per-class AUROC of `[N, C]` scores against `[N, C]` 0/1 labels.
pub fn auroc_per_class(scores: Matrix<'_>, labels: Matrix<'_>) -> Result<Vec<f64>, MetricError> {
    if (scores.rows, scores.cols) != (labels.rows, labels.cols) {
        return Err(MetricError::Shape(format!(
            "scores [{}, {}] against labels [{}, {}]",
            scores.rows, scores.cols, labels.rows, labels.cols
        )));
    }
    (0..scores.cols).map(|c| auroc_class(&scores.column(c), &labels.column(c), c)).collect()
}

/// The unweighted mean of the per-class AUROCs (torchmetrics' `average="macro"`).
pub fn auroc_macro(scores: Matrix<'_>, labels: Matrix<'_>) -> Result<f64, MetricError> {
    let per_class = auroc_per_class(scores, labels)?;
    Ok(per_class.iter().sum::<f64>() / per_class.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::F64_IDENTITY;

    /// Exact values worked by hand.
    #[test]
    fn hand_cases() {
        // Perfect separation, reversed separation, and all tied.
        assert_eq!(auroc_class(&[0.1, 0.2, 0.8, 0.9], &[0., 0., 1., 1.], 0).unwrap(), 1.0);
        assert_eq!(auroc_class(&[0.9, 0.8, 0.2, 0.1], &[0., 0., 1., 1.], 0).unwrap(), 0.0);
        assert_eq!(auroc_class(&[0.5; 4], &[0., 1., 0., 1.], 0).unwrap(), 0.5);
        // One tie between a positive and a negative: pairs (p,n) = 4, wins 3, tie 1 → 3.5/4.
        assert_eq!(auroc_class(&[0.1, 0.5, 0.5, 0.9], &[0., 0., 1., 1.], 0).unwrap(), 0.875);
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn degenerate_input_is_named() {
        let e = auroc_class(&[0.1, 0.2], &[1., 1.], 3).unwrap_err();
        assert!(e.to_string().contains("class 3"), "{e}");
        let e = auroc_class(&[f32::NAN, 0.2], &[0., 1.], 0).unwrap_err();
        assert!(matches!(e, MetricError::NonFinite { index: 0, .. }), "{e}");
        let e = auroc_class(&[0.1, 0.2], &[0., 2.], 1).unwrap_err();
        assert!(e.to_string().contains("not 0 or 1"), "{e}");
        assert!(Matrix::new(&[0.0; 5], 2, 3).is_err());
    }

    /// The macro mean is the mean of the columns' AUROCs.
    #[test]
    fn macro_is_column_mean() {
        let s = [0.1, 0.9, 0.4, 0.2, 0.8, 0.7, 0.3, 0.6];
        let y = [0., 1., 1., 0., 1., 1., 0., 0.];
        let (sm, ym) = (Matrix::new(&s, 4, 2).unwrap(), Matrix::new(&y, 4, 2).unwrap());
        let per = auroc_per_class(sm, ym).unwrap();
        assert_eq!(per.len(), 2);
        assert!((auroc_macro(sm, ym).unwrap() - (per[0] + per[1]) / 2.0).abs() < F64_IDENTITY);
    }
}
