//! Pictures of a segmenter's test output: the X-ray the model saw (its normalised values mapped
//! back to grey), enlarged to about 448 px (224 px ×2), the true mask's outline in green and the predicted mask
//! (`σ(z) > 0.5`) tinted red, written as PNG.
//!
//! Book: "Segmentation" (the pictures). The reference logs no pictures; this is the
//! reproduction's own.
//!
//! **Deviation:** none (no reference counterpart).

use image::{Rgb, RgbImage};

/// The picture's side, about (an integer multiple of the image's).
pub const PICTURE_SIDE: usize = 448;
/// The true mask's outline.
pub const TRUTH: Rgb<u8> = Rgb([40, 220, 60]);

/// The picture of one image: `image` `[3, S, S]` normalised values (channel 0 is read), `truth`
/// and `probs` `[S, S]`.
pub fn picture(image: &[f32], truth: &[f32], probs: &[f32], side: usize) -> RgbImage {
    let scale = (PICTURE_SIDE / side).max(1) as u32;
    let at = |x: u32, y: u32| (y / scale) as usize * side + (x / scale) as usize;
    let inside = |m: &[f32], x: i64, y: i64| {
        (0..side as i64).contains(&x) && (0..side as i64).contains(&y) && m[y as usize * side + x as usize] > 0.5
    };
    RgbImage::from_fn(side as u32 * scale, side as u32 * scale, |x, y| {
        let grey = ((image[at(x, y)] * 0.5 + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8;
        let (px, py) = ((x / scale) as i64, (y / scale) as i64);
        let t = inside(truth, px, py);
        let edge = t && [(1, 0), (-1, 0), (0, 1), (0, -1)].iter().any(|(dx, dy)| !inside(truth, px + dx, py + dy));
        if edge {
            return TRUTH;
        }
        if probs[at(x, y)] > 0.5 {
            let g = grey as u16;
            return Rgb([((g + 2 * 235) / 3) as u8, (g / 3) as u8, (g / 3) as u8]);
        }
        Rgb([grey, grey, grey])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outline_and_tint_land_where_they_belong() {
        let side = 224;
        let n = side * side;
        let image = vec![0.0f32; 3 * n]; // grey 128 after un-normalising
        let mut truth = vec![0.0f32; n];
        let mut probs = vec![0.0f32; n];
        for y in 50..100 {
            for x in 60..120 {
                truth[y * side + x] = 1.0;
                probs[y * side + x + 100] = 0.9;
            }
        }
        let p = picture(&image, &truth, &probs, side);
        assert_eq!(p.dimensions(), (448, 448));
        // A 64 px image is enlarged ×7.
        assert_eq!(picture(&[0.0; 3 * 64 * 64], &[0.0; 64 * 64], &[0.0; 64 * 64], 64).dimensions(), (448, 448));
        assert_eq!(*p.get_pixel(120, 150), TRUTH, "the left edge at x = 60·2");
        assert_eq!(*p.get_pixel(150, 150), Rgb([128, 128, 128]), "inside the truth, nothing predicted");
        assert_eq!(p.get_pixel(400, 150).0[0], ((128 + 2 * 235) / 3) as u8, "the prediction is tinted red");
    }
}
