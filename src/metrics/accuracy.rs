//! Top-1 accuracy: the fraction of samples whose highest-scoring class is their label,
//!
//! ```text
//! acc = (1/N) Σᵢ [argmax_c sᵢc = yᵢ]
//! ```
//!
//! with the first maximal class winning a tie (as `torch.argmax`). The reference reports it for
//! COVIDx (3 classes) on the softmax probabilities; softmax keeps the order, so logits give the
//! same result.
//!
//! Book: "Linear probing" (metrics). Reference: `mgca/models/ssl_finetuner.py`,
//! `SSLFineTuner` (`torchmetrics.Accuracy`, micro average).
//!
//! **Deviation:** a label outside `0..C` or a non-finite score is an error, not a silent miss.

use super::{Matrix, MetricError};

/// The class with the highest score; the first one on a tie.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (c, &s) in row.iter().enumerate() {
        if s > row[best] {
            best = c;
        }
    }
    best
}

// ANCHOR: accuracy
/// The fraction (in `[0, 1]`) of rows of `[N, C]` scores whose argmax equals the label.
pub fn accuracy(scores: Matrix<'_>, labels: &[i64]) -> Result<f64, MetricError> {
    if scores.rows != labels.len() {
        return Err(MetricError::Shape(format!("{} score rows for {} labels", scores.rows, labels.len())));
    }
    if scores.rows == 0 || scores.cols == 0 {
        return Err(MetricError::Empty);
    }
    let mut hits = 0usize;
    for (index, &label) in labels.iter().enumerate() {
        let row = scores.row(index);
        if let Some(class) = row.iter().position(|s| !s.is_finite()) {
            return Err(MetricError::NonFinite { what: "score", index, class });
        }
        if label < 0 || label as usize >= scores.cols {
            return Err(MetricError::BadLabel { index, class: 0, value: label as f64 });
        }
        hits += usize::from(argmax(row) == label as usize);
    }
    Ok(hits as f64 / labels.len() as f64)
}
// ANCHOR_END: accuracy

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_and_first_max_wins() {
        let s = [0.2, 0.5, 0.3, 0.4, 0.4, 0.2, 0.1, 0.1, 0.8];
        let m = Matrix::new(&s, 3, 3).unwrap();
        assert_eq!(accuracy(m, &[1, 0, 2]).unwrap(), 1.0);
        assert_eq!(accuracy(m, &[1, 1, 2]).unwrap(), 2.0 / 3.0);
    }

    #[test]
    fn bad_labels_and_scores_are_errors() {
        let s = [0.2, 0.5, 0.3, 0.4];
        let m = Matrix::new(&s, 2, 2).unwrap();
        assert!(matches!(accuracy(m, &[0, 5]), Err(MetricError::BadLabel { index: 1, .. })));
        assert!(accuracy(m, &[0]).is_err());
        let s = [0.2, 0.5, f32::NAN, 0.4];
        let m = Matrix::new(&s, 2, 2).unwrap();
        assert!(matches!(accuracy(m, &[0, 1]), Err(MetricError::NonFinite { index: 1, class: 0, .. })));
    }
}
