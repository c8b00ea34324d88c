//! SIIM-ACR run-length masks: `"s₁ l₁ s₂ l₂ …"` with each start relative to the end of the
//! previous run, over a column-major flattening of a `width × height` image.
//!
//! `pos ← pos + sₖ; pixels[pos, pos + lₖ) ← 1; pos ← pos + lₖ`, then flat index `f` is row
//! `f mod height`, column `⌊f / height⌋` (the reference reshapes row-major and transposes).
//!
//! Book: "Data: splits, images and masks" (with a 4 × 4 worked example). Reference:
//! `mgca/datasets/segmentation_dataset.py`, `SIIMImageDataset.rle2mask`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. A negative is recognised by its whitespace-stripped value `-1`, as the
//! reference intends (the released code compares with `"-1"` against values
//! that carry a leading space, and cannot run on the real CSV).

use std::fmt;

/// A malformed run-length string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RleError(pub String);

impl fmt::Display for RleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RleError {}

/// Whether an `EncodedPixels` value marks an image without pneumothorax.
pub fn is_negative(value: &str) -> bool {
    value.trim() == "-1"
}

/// The runs `[start, end)` of a positive value, in flat pixel indices, each checked to end
/// within `total` pixels (overflowing sums included). A negative gives no runs.
pub fn runs(value: &str, total: u64) -> Result<Vec<(u64, u64)>, RleError> {
    if is_negative(value) {
        return Ok(Vec::new());
    }
    let numbers: Vec<u64> = value
        .split_whitespace()
        .map(|t| t.parse::<u64>().map_err(|_| RleError(format!("`{}` is not a non-negative integer", brief(t)))))
        .collect::<Result<_, _>>()?;
    if numbers.is_empty() {
        return Err(RleError("no runs: an empty value is neither run-length pairs nor -1".into()));
    }
    if !numbers.len().is_multiple_of(2) {
        return Err(RleError(format!("{} numbers: starts and lengths must pair up", numbers.len())));
    }
    let mut out = Vec::with_capacity(numbers.len() / 2);
    let mut pos = 0u64;
    for (k, pair) in numbers.chunks_exact(2).enumerate() {
        let past = || RleError(format!("run {} ({} {}) ends past the image's {total} pixels", k + 1, pair[0], pair[1]));
        let start = pos.checked_add(pair[0]).ok_or_else(past)?;
        let end = start.checked_add(pair[1]).filter(|&e| e <= total).ok_or_else(past)?;
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// A value cut to a length a message can carry.
fn brief(t: &str) -> String {
    const MAX: usize = 40;
    match t.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &t[..cut]),
        None => t.to_string(),
    }
}

// ANCHOR: decode
/// OR the runs of `value` into `mask` (row-major `[height, width]`, 0 or 1). A run past the
/// image's end, and a mask of the wrong size, are errors.
pub fn decode_into(value: &str, width: usize, height: usize, mask: &mut [u8]) -> Result<(), RleError> {
    let total = width
        .checked_mul(height)
        .filter(|&t| t == mask.len())
        .ok_or_else(|| RleError(format!("a mask of {} values for a {width} x {height} image", mask.len())))?;
    for (start, end) in runs(value, total as u64)? {
        // In bounds: `end ≤ total`, so `f / height < width` and `f % height < height`.
        for f in start as usize..end as usize {
            mask[(f % height) * width + f / height] = 1;
        }
    }
    Ok(())
}

// ANCHOR_END: decode

/// Decode one value into a fresh `[height, width]` mask.
pub fn decode(value: &str, width: usize, height: usize) -> Result<Vec<u8>, RleError> {
    let total = width
        .checked_mul(height)
        .filter(|&t| t as u64 <= crate::data::image::MAX_PIXELS)
        .ok_or_else(|| RleError(format!("a {width} x {height} mask is larger than any image")))?;
    let mut mask = vec![0u8; total];
    decode_into(value, width, height, &mut mask)?;
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The book's 4 × 4 example.
    #[test]
    fn the_book_example() {
        let mask = decode("1 2 3 1", 4, 4).unwrap();
        assert_eq!(mask, [0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn negatives_and_bad_values() {
        assert!(is_negative(" -1") && is_negative("-1") && !is_negative(" 1 2"));
        assert_eq!(decode(" -1", 4, 4).unwrap(), vec![0; 16]);
        assert!(decode("1 2 3", 4, 4).unwrap_err().0.contains("pair up"));
        assert!(decode("1 x", 4, 4).unwrap_err().0.contains("`x`"));
        assert!(decode("10 7", 4, 4).unwrap_err().0.contains("past the image"));
        assert!(decode("", 4, 4).unwrap_err().0.contains("no runs"));
    }

    /// The silent result: runs past the image end, and starts or lengths whose sums
    /// overflow, are errors (before: accepted, or an overflow panic).
    #[test]
    fn runs_past_the_end_or_overflowing_are_errors() {
        assert!(decode("15 1 0 1", 4, 4).unwrap_err().0.contains("run 2 (0 1) ends past"));
        let huge = format!("{} 1 {} 1", u64::MAX, u64::MAX);
        assert!(decode(&huge, 4, 4).unwrap_err().0.contains("past the image"));
        assert!(decode("1 18446744073709551615", 4, 4).unwrap_err().0.contains("past the image"));
        assert!(decode("-3 2", 4, 4).unwrap_err().0.contains("`-3`"));
        assert!(decode("0 16", 4, 4).unwrap().iter().all(|&v| v == 1));
        let mut short = vec![0u8; 3];
        assert!(decode_into("1 1", 4, 4, &mut short).unwrap_err().0.contains("3 values"));
        assert!(decode("1 1", usize::MAX, 2).is_err());
    }
}
