//! SIIM-ACR run-length masks: `"s₁ l₁ s₂ l₂ …"` with each start relative to the end of the
//! previous run, over a column-major flattening of a `width × height` image.
//!
//! `pos ← pos + sₖ; pixels[pos, pos + lₖ) ← 1; pos ← pos + lₖ`, then flat index `f` is row
//! `f mod height`, column `⌊f / height⌋` (the reference reshapes row-major and transposes).
//!
//! Spec: `data.md` §6.3 (RLE decoding, the 4 × 4 unit test, negatives).
//!
//! **Deviation:** none. A negative is recognised by its whitespace-stripped value `-1`, as the
//! spec's "intended behaviour" says (the released code compares with `"-1"` against values
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

// ANCHOR: decode
/// OR the runs of `value` into `mask` (row-major `[height, width]`, 0 or 1).
pub fn decode_into(value: &str, width: usize, height: usize, mask: &mut [u8]) -> Result<(), RleError> {
    assert_eq!(mask.len(), width * height, "mask buffer size");
    if is_negative(value) {
        return Ok(());
    }
    let numbers: Vec<usize> = value
        .split_whitespace()
        .map(|t| t.parse::<usize>().map_err(|_| RleError(format!("`{t}` is not a non-negative integer"))))
        .collect::<Result<_, _>>()?;
    if !numbers.len().is_multiple_of(2) {
        return Err(RleError(format!("{} numbers: starts and lengths must pair up", numbers.len())));
    }
    let total = width * height;
    let mut pos = 0usize;
    for pair in numbers.chunks_exact(2) {
        pos += pair[0];
        let end = pos + pair[1];
        if end > total {
            return Err(RleError(format!("a run ends at pixel {end}, past the image's {total}")));
        }
        for f in pos..end {
            mask[(f % height) * width + f / height] = 1;
        }
        pos = end;
    }
    Ok(())
}

// ANCHOR_END: decode

/// Decode one value into a fresh `[height, width]` mask.
pub fn decode(value: &str, width: usize, height: usize) -> Result<Vec<u8>, RleError> {
    let mut mask = vec![0u8; width * height];
    decode_into(value, width, height, &mut mask)?;
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// data.md §6.3's unit test.
    #[test]
    fn the_spec_example() {
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
    }
}
