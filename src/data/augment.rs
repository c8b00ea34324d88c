//! The moco-v2 style training transform of CheXpert linear probing, on the 256 px grey image:
//! random 224 crop; with p = 0.8 colour jitter (brightness, contrast, saturation 0.4, hue 0.1,
//! in random order); with p = 0.2 greyscale; with p = 0.5 Gaussian blur, σ ~ U(0.1, 2.0);
//! horizontal flip with p = 0.5; normalise with mean = std = 0.5.
//!
//! Each operation is PIL's, to the grey level, as torchvision applies it to a PIL image:
//! - brightness `f`: `ImageEnhance.Brightness` = `Image.blend(black, img, f)`, i.e. `⌊f·x⌋`
//!   (clipped to [0, 255] when `f > 1`), computed in `float` as PIL's C code does;
//! - contrast `f`: `ImageEnhance.Contrast` = `blend(m, img, f)` with `m` the image mean
//!   rounded half up: `⌊m + f·(x − m)⌋`, clipped;
//! - saturation, hue and greyscale leave a grey image (R = G = B) unchanged: PIL's blend with
//!   the image's own luminance (`L = (19595 R + 38470 G + 7471 B + 2¹⁵) ≫ 16 = x`) and the
//!   HSV round trip at S = 0 are both exact on grey, so only their random draws remain;
//! - blur σ: `ImageFilter.GaussianBlur(σ)` = three passes of PIL's extended box blur (radius
//!   from σ as Gwosdek et al., 24-bit fixed-point weights, edge pixels repeated), first along
//!   rows, then along columns.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/transforms.py`,
//! `Moco2Transform` and `GaussianBlur` (and the blur bug), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the random draws come from this crate's MT19937, not from torch's and
//! Python's generators, so a run's augmentations differ from the reference's by chance (the
//! distribution is the same). The reference's blur raises a `NameError` at HEAD (missing
//! imports); we apply the blur the table intends, as the upstream fix does.

use super::image::{crop, normalise};
use super::resize::Gray;
use super::sampling::LegacyRng;

/// The moco-v2 transform's probabilities and ranges (defaults: the reference's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MocoV2Config {
    /// Output side (224).
    pub crop: usize,
    /// Probability of the colour jitter (0.8).
    pub jitter_p: f64,
    /// Brightness factor in `[1 − b, 1 + b]` (0.4).
    pub brightness: f64,
    /// Contrast factor in `[1 − c, 1 + c]` (0.4).
    pub contrast: f64,
    /// Saturation factor in `[1 − s, 1 + s]` (0.4; no effect on grey images).
    pub saturation: f64,
    /// Hue shift in `[−h, h]` (0.1; no effect on grey images).
    pub hue: f64,
    /// Probability of greyscale (0.2; no effect on grey images).
    pub grey_p: f64,
    /// Probability of the blur (0.5).
    pub blur_p: f64,
    /// Range of the blur radius σ (0.1, 2.0).
    pub blur_sigma: (f64, f64),
    /// Probability of the horizontal flip (0.5).
    pub flip_p: f64,
}

impl Default for MocoV2Config {
    fn default() -> Self {
        Self {
            crop: 224,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
            grey_p: 0.2,
            blur_p: 0.5,
            blur_sigma: (0.1, 2.0),
            flip_p: 0.5,
        }
    }
}

/// One colour-jitter operation with its drawn factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColourOp {
    Brightness(f32),
    Contrast(f32),
    /// Drawn, applied, and exact identity on grey images.
    Saturation(f32),
    /// Drawn, applied, and exact identity on grey images.
    Hue(f32),
}

/// Everything one sample's transform drew.
#[derive(Debug, Clone, PartialEq)]
pub struct MocoV2Draw {
    pub top: usize,
    pub left: usize,
    /// The jitter's operations in their drawn order, if the jitter fired.
    pub jitter: Option<Vec<ColourOp>>,
    pub grey: bool,
    /// The blur radius σ, if the blur fired.
    pub blur: Option<f32>,
    pub flip: bool,
}

fn uniform(rng: &mut LegacyRng) -> f64 {
    // 53 random bits, as NumPy's `random_sample`.
    let a = (rng.next_u32() >> 5) as f64;
    let b = (rng.next_u32() >> 6) as f64;
    (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
}

impl MocoV2Config {
    /// Draw one sample's transform for a `side × side` input.
    pub fn draw(&self, rng: &mut LegacyRng, side: usize) -> MocoV2Draw {
        let span = (side - self.crop) as u64;
        let top = rng.interval(span) as usize;
        let left = rng.interval(span) as usize;
        let between = |rng: &mut LegacyRng, lo: f64, hi: f64| (lo + (hi - lo) * uniform(rng)) as f32;
        let jitter = (uniform(rng) < self.jitter_p).then(|| {
            let order = rng.permutation(4);
            order
                .into_iter()
                .map(|k| match k {
                    0 => ColourOp::Brightness(between(rng, 1.0 - self.brightness, 1.0 + self.brightness)),
                    1 => ColourOp::Contrast(between(rng, 1.0 - self.contrast, 1.0 + self.contrast)),
                    2 => ColourOp::Saturation(between(rng, 1.0 - self.saturation, 1.0 + self.saturation)),
                    _ => ColourOp::Hue(between(rng, -self.hue, self.hue)),
                })
                .collect()
        });
        let grey = uniform(rng) < self.grey_p;
        let blur = (uniform(rng) < self.blur_p).then(|| between(rng, self.blur_sigma.0, self.blur_sigma.1));
        let flip = uniform(rng) < self.flip_p;
        MocoV2Draw { top, left, jitter, grey, blur, flip }
    }
}

impl MocoV2Draw {
    /// Apply to a grey image: the transformed crop, normalised, `[3, crop, crop]` values.
    pub fn apply(&self, img: &Gray, size: usize) -> Vec<f32> {
        let mut out = crop(img, self.top, self.left, size);
        for op in self.jitter.iter().flatten() {
            out = match *op {
                ColourOp::Brightness(f) => brightness(&out, f),
                ColourOp::Contrast(f) => contrast(&out, f),
                ColourOp::Saturation(_) | ColourOp::Hue(_) => out,
            };
        }
        if let Some(sigma) = self.blur {
            out = gaussian_blur(&out, sigma);
        }
        if self.flip {
            out = hflip(&out);
        }
        normalise(&out)
    }
}

/// PIL's `Image.blend(a, b, alpha)` for one value: `float` arithmetic, truncation, clipped when
/// extrapolating.
fn blend(a: u8, b: u8, alpha: f32) -> u8 {
    let v = a as i32 as f32 + alpha * (b as i32 - a as i32) as f32;
    if (0.0..=1.0).contains(&alpha) {
        v as u8
    } else if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// `ImageEnhance.Brightness(img).enhance(f)`.
pub fn brightness(img: &Gray, f: f32) -> Gray {
    Gray::new(img.height, img.width, img.pixels.iter().map(|&x| blend(0, x, f)).collect())
}

/// `ImageEnhance.Contrast(img).enhance(f)`.
pub fn contrast(img: &Gray, f: f32) -> Gray {
    let sum: u64 = img.pixels.iter().map(|&x| x as u64).sum();
    let mean = (sum as f64 / img.pixels.len() as f64 + 0.5) as u8;
    Gray::new(img.height, img.width, img.pixels.iter().map(|&x| blend(mean, x, f)).collect())
}

/// The horizontal mirror.
pub fn hflip(img: &Gray) -> Gray {
    let pixels = img.pixels.chunks(img.width).flat_map(|row| row.iter().rev().copied()).collect();
    Gray::new(img.height, img.width, pixels)
}

/// The fractional box radius whose three passes approximate a Gaussian of radius `sigma`
/// (PIL's `_gaussian_blur_radius`, same float/double mix).
fn box_radius(sigma: f32, passes: i32) -> f32 {
    let sigma2 = sigma * sigma / passes as f32;
    let big_l = (12.0 * sigma2 as f64 + 1.0).sqrt() as f32;
    let l = ((big_l as f64 - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

// ANCHOR: box_blur
/// One pass of PIL's line box blur: a box of `2r + 1` pixels plus the next pixel on each side
/// at a fractional weight, edge pixels repeated, 24-bit fixed point.
fn box_blur_line(line: &[u8], out: &mut [u8], radius: f32) {
    let n = line.len() as i64;
    let r = radius as i64;
    let ww = (16_777_216f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = (16_777_216u32 - (r as u32 * 2 + 1) * ww) / 2;
    let at = |i: i64| line[i.clamp(0, n - 1) as usize] as u32;
    // The window sum for pixel −1: positions −r−1 … r−1.
    let mut acc: u32 = 0;
    for i in -r - 1..r {
        acc = acc.wrapping_add(at(i));
    }
    for x in 0..n {
        acc = acc.wrapping_add(at(x + r)).wrapping_sub(at(x - r - 1));
        let bulk = acc.wrapping_mul(ww).wrapping_add((at(x - r - 1) + at(x + r + 1)).wrapping_mul(fw));
        out[x as usize] = (bulk.wrapping_add(1 << 23) >> 24) as u8;
    }
}
// ANCHOR_END: box_blur

/// `ImageFilter.GaussianBlur(sigma)` on a grey image.
pub fn gaussian_blur(img: &Gray, sigma: f32) -> Gray {
    let passes = 3;
    let radius = box_radius(sigma, passes);
    if radius == 0.0 {
        return img.clone();
    }
    let (h, w) = (img.height, img.width);
    let mut cur = img.pixels.clone();
    let mut line = vec![0u8; w.max(h)];
    for _ in 0..passes {
        for row in cur.chunks_mut(w) {
            box_blur_line(row, &mut line[..w], radius);
            row.copy_from_slice(&line[..w]);
        }
    }
    let mut column = vec![0u8; h];
    for x in 0..w {
        for (y, c) in column.iter_mut().enumerate() {
            *c = cur[y * w + x];
        }
        for _ in 0..passes {
            box_blur_line(&column, &mut line[..h], radius);
            column.copy_from_slice(&line[..h]);
        }
        for (y, &c) in column.iter().enumerate() {
            cur[y * w + x] = c;
        }
    }
    Gray::new(h, w, cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Gray {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/python/augment").join(name);
        let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
        Gray::new(img.height() as usize, img.width() as usize, img.into_raw())
    }

    fn cases() -> serde_json::Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/python/augment/cases.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Every operation equals PIL 13 (through torchvision's functional API) grey level for
    /// grey level, on a formula image and on a synthetic chest image.
    #[test]
    fn operations_equal_pil() {
        let cases = cases();
        for case in cases.as_array().unwrap() {
            let input = fixture(case["input"].as_str().unwrap());
            let op = case["op"].as_str().unwrap();
            let value = case["value"].as_f64().unwrap() as f32;
            let got = match op {
                "brightness" => brightness(&input, value),
                "contrast" => contrast(&input, value),
                "saturation" | "hue" | "grayscale" => input.clone(),
                "blur" => gaussian_blur(&input, value),
                "hflip" => hflip(&input),
                other => panic!("unknown op {other}"),
            };
            let want = fixture(case["output"].as_str().unwrap());
            assert_eq!((got.height, got.width), (want.height, want.width));
            let differ = got.pixels.iter().zip(&want.pixels).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{op} {value} on {}: {differ} pixels differ", case["input"]);
        }
        assert!(cases.as_array().unwrap().len() >= 12);
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let config = MocoV2Config::default();
        let mut rng = LegacyRng::new(7);
        let n = 4000;
        let draws: Vec<MocoV2Draw> = (0..n).map(|_| config.draw(&mut rng, 256)).collect();
        let rate = |f: &dyn Fn(&MocoV2Draw) -> bool| draws.iter().filter(|d| f(d)).count() as f64 / n as f64;
        assert!((rate(&|d| d.jitter.is_some()) - 0.8).abs() < 0.03);
        assert!((rate(&|d| d.grey) - 0.2).abs() < 0.03);
        assert!((rate(&|d| d.blur.is_some()) - 0.5).abs() < 0.03);
        assert!((rate(&|d| d.flip) - 0.5).abs() < 0.03);
        assert!(draws.iter().all(|d| d.top <= 32 && d.left <= 32));
        for d in &draws {
            if let Some(s) = d.blur {
                assert!((0.1..=2.0).contains(&s));
            }
            for op in d.jitter.iter().flatten() {
                match *op {
                    ColourOp::Brightness(f) | ColourOp::Contrast(f) | ColourOp::Saturation(f) => {
                        assert!((0.6..=1.4).contains(&f))
                    }
                    ColourOp::Hue(h) => assert!((-0.1..=0.1).contains(&h)),
                }
            }
        }
        // Every order of the four operations occurs.
        let orders: std::collections::HashSet<Vec<u8>> = draws
            .iter()
            .filter_map(|d| d.jitter.as_ref())
            .map(|ops| {
                ops.iter()
                    .map(|op| match op {
                        ColourOp::Brightness(_) => 0,
                        ColourOp::Contrast(_) => 1,
                        ColourOp::Saturation(_) => 2,
                        ColourOp::Hue(_) => 3,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(orders.len(), 24);
        // Same seed, same draws.
        let mut again = LegacyRng::new(7);
        assert_eq!(config.draw(&mut again, 256), draws[0]);
    }

    #[test]
    fn apply_composes_the_drawn_operations() {
        let img = fixture("chest.png");
        let img = crate::data::resize::resize_and_pad(&img, 256).unwrap();
        let draw = MocoV2Draw {
            top: 5,
            left: 30,
            jitter: Some(vec![ColourOp::Hue(0.05), ColourOp::Contrast(1.3), ColourOp::Brightness(0.7)]),
            grey: true,
            blur: Some(1.2),
            flip: true,
        };
        let by_hand = hflip(&gaussian_blur(&brightness(&contrast(&crop(&img, 5, 30, 224), 1.3), 0.7), 1.2));
        assert_eq!(draw.apply(&img, 224), normalise(&by_hand));
        // Brightness then contrast is not contrast then brightness: the order matters.
        let swapped =
            MocoV2Draw { jitter: Some(vec![ColourOp::Brightness(0.7), ColourOp::Contrast(1.3)]), ..draw.clone() };
        assert_ne!(swapped.apply(&img, 224), draw.apply(&img, 224));
    }
}
