//! The Dice score of MGCA's segmentation evaluation, with its empty-mask rule and its averaging.
//!
//! Per image: `P = [σ(z) > 0.5]`, `T = [y > 0.5]`; an image without foreground (`ΣT = 0`)
//! scores 1 when `ΣP = 0` and 0 otherwise; any other image scores `2·Σ(P·T) / (ΣP + ΣT)`.
//! A batch's value is the mean over its images (empty and non-empty alike, in float32 as
//! `torch.mean`); the epoch's value is the **unweighted mean of the per-batch values** (NumPy,
//! float64), so a short last batch weighs as much as a full one.
//!
//! Book: "Segmentation" (the metric and its averaging). Reference:
//! `mgca/models/ssl_segmenter.py`, `SSLSegmenter.get_dice` and `shared_epoch_end`, at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. The reference orders a batch's scores non-empty first; the mean is
//! the same up to float32 summation order, and [`dice_per_image`] keeps image order.

use super::MetricError;

// ANCHOR: dice
/// Each image's Dice from probabilities and targets, both `[N, H·W]` row-major.
pub fn dice_per_image(probs: &[f32], targets: &[f32], n: usize) -> Result<Vec<f32>, MetricError> {
    if n == 0 || probs.len() != targets.len() || !probs.len().is_multiple_of(n) {
        return Err(MetricError::Shape(format!(
            "{} probabilities and {} targets for {n} images",
            probs.len(),
            targets.len()
        )));
    }
    for (what, values) in [("probability", probs), ("target", targets)] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(MetricError::NonFinite { what, index, class: 0 });
        }
    }
    let pixels = probs.len() / n;
    Ok((0..n)
        .map(|i| {
            let (p, t) = (&probs[i * pixels..(i + 1) * pixels], &targets[i * pixels..(i + 1) * pixels]);
            let (mut p_sum, mut t_sum, mut both) = (0f32, 0f32, 0f32);
            for (&pv, &tv) in p.iter().zip(t) {
                let (pb, tb) = (f32::from(u8::from(pv > 0.5)), f32::from(u8::from(tv > 0.5)));
                p_sum += pb;
                t_sum += tb;
                both += pb * tb;
            }
            if t_sum == 0.0 { f32::from(u8::from(p_sum == 0.0)) } else { 2.0 * both / (p_sum + t_sum) }
        })
        .collect())
}

/// The epoch's Dice: the mean of the per-batch means over consecutive batches of `batch_size`
/// images (the last may be shorter).
pub fn dice_epoch(per_image: &[f32], batch_size: usize) -> Result<f64, MetricError> {
    if per_image.is_empty() || batch_size == 0 {
        return Err(MetricError::Empty);
    }
    let means: Vec<f64> =
        per_image.chunks(batch_size).map(|b| (b.iter().sum::<f32>() / b.len() as f32) as f64).collect();
    Ok(means.iter().sum::<f64>() / means.len() as f64)
}
// ANCHOR_END: dice

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's unit test: P has 2 pixels, T has 3, overlap 2 → 0.8.
    #[test]
    fn the_reference_example() {
        let d = dice_per_image(&[0.9, 0.2, 0.6, 0.4], &[1.0, 0.0, 1.0, 1.0], 1).unwrap();
        assert!((d[0] - 0.8).abs() < 1e-7, "{d:?}");
    }

    /// Empty masks: 1 when nothing is predicted, 0 otherwise; the epoch value weighs a short
    /// last batch as much as a full one.
    #[test]
    fn empty_masks_and_batch_averaging() {
        let d = dice_per_image(&[0.1, 0.2, 0.7, 0.1, 0.9, 0.8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0], 3).unwrap();
        assert_eq!(d, vec![1.0, 0.0, 1.0]);
        // Batches of 2: [1, 0] → 0.5, [1] → 1; epoch 0.75 (the image mean would be 2/3).
        assert!((dice_epoch(&d, 2).unwrap() - 0.75).abs() < 1e-12);
        assert!(dice_per_image(&[0.5], &[0.5, 0.5], 1).is_err());
        assert!(dice_per_image(&[f32::NAN], &[1.0], 1).is_err());
        assert!(dice_epoch(&[], 2).is_err());
    }
}
