//! The reference's image geometry: aspect-preserving resize with OpenCV's `INTER_AREA`
//! semantics, zero padding to a square, and the 224 crops — on 8-bit grey images.
//!
//! `resize_img(S)`: the long side becomes `S`, the short side `int(short · S / long)`; the image
//! is resized with area interpolation (each output pixel the area-weighted mean of the input
//! pixels its cell covers) and zero-padded, `⌊p/2⌋` before and `⌈p/2⌉` after.
//!
//! OpenCV's arithmetic is reproduced exactly, because a grey level off by one is a parity
//! failure: the area weights as OpenCV tabulates them (double precision, stored as float),
//! float accumulation in OpenCV's order, round-half-to-even to `u8`; its integer-scale fast
//! path (block means); and, when a side is enlarged, OpenCV's fallback to bilinear
//! interpolation in 11-bit fixed point.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/utils.py`, `resize_img` and
//! `get_imgs`, and `transforms.py`, `DataTransforms` (crops), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

/// An 8-bit grey image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gray {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height · width` values.
    pub pixels: Vec<u8>,
}

impl Gray {
    /// An image from its pixels (panics if the size does not match).
    pub fn new(height: usize, width: usize, pixels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), height * width, "{height} x {width} image");
        Self { height, width, pixels }
    }

    fn at(&self, y: usize, x: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
}

/// The size `resize_img(S)` resizes to before padding: `(height, width)`.
pub fn target_size(height: usize, width: usize, size: usize) -> (usize, usize) {
    if height >= width {
        (size, (width as f64 * (size as f64 / height as f64)) as usize)
    } else {
        ((height as f64 * (size as f64 / width as f64)) as usize, size)
    }
}

/// `cvRound` for the values a resize produces, then saturation to `u8`.
fn saturate_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// One entry of OpenCV's area table: source index, destination index, weight.
#[derive(Debug, Clone, Copy)]
struct Alpha {
    source: usize,
    dest: usize,
    weight: f32,
}

// ANCHOR: area
/// OpenCV's `computeResizeAreaTab`.
fn area_table(src: usize, dst: usize, scale: f64) -> Vec<Alpha> {
    let mut tab = Vec::with_capacity(src * 2);
    for dx in 0..dst {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(src as f64 - fsx1);
        let mut sx2 = fsx2.floor() as i64;
        let mut sx1 = fsx1.ceil() as i64;
        sx2 = sx2.min(src as i64 - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push(Alpha { source: (sx1 - 1) as usize, dest: dx, weight: ((sx1 as f64 - fsx1) / cell) as f32 });
        }
        for sx in sx1..sx2 {
            tab.push(Alpha { source: sx as usize, dest: dx, weight: (1.0 / cell) as f32 });
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            let w = (fsx2 - sx2 as f64).min(1.0).min(cell) / cell;
            tab.push(Alpha { source: sx2 as usize, dest: dx, weight: w as f32 });
        }
    }
    tab
}

/// OpenCV `resize(…, INTER_AREA)` of a grey image to `(height, width)`: the area path when
/// both sides shrink (or stay), [`resize_bilinear`] otherwise, as OpenCV does.
pub fn resize_area(img: &Gray, height: usize, width: usize) -> Gray {
    let scale_x = 1.0 / (width as f64 / img.width as f64);
    let scale_y = 1.0 / (height as f64 / img.height as f64);
    if scale_x < 1.0 || scale_y < 1.0 {
        return resize_bilinear(img, height, width);
    }
    let (ix, iy) = (scale_x.round() as usize, scale_y.round() as usize);
    if (scale_x - ix as f64).abs() < f64::EPSILON && (scale_y - iy as f64).abs() < f64::EPSILON {
        return resize_area_fast(img, height, width, ix, iy);
    }
    let sums = area_sums(&img.pixels, img.height, img.width, height, width, scale_x, scale_y);
    Gray::new(height, width, sums.into_iter().map(saturate_u8).collect())
}

/// OpenCV's generic area path on any pixel type: each output pixel's weighted sum, before
/// rounding. The horizontal pass of every source row as OpenCV computes it (`buf[d] += S[s]·α` in
/// table order), then the vertical pass (`sum += β·buf` per output row).
fn area_sums<T: Copy + Into<f32>>(
    pixels: &[T],
    h: usize,
    w: usize,
    height: usize,
    width: usize,
    scale_x: f64,
    scale_y: f64,
) -> Vec<f32> {
    let xtab = area_table(w, width, scale_x);
    let ytab = area_table(h, height, scale_y);
    let hbuf = horizontal_pass(pixels, h, w, width, &xtab);
    let mut out = vec![0f32; height * width];
    let mut sum = vec![0f32; width];
    let mut prev = ytab.first().map_or(0, |a| a.dest);
    for a in &ytab {
        let buf = &hbuf[a.source * width..(a.source + 1) * width];
        if a.dest != prev {
            for ((o, s), b) in out[prev * width..(prev + 1) * width].iter_mut().zip(sum.iter_mut()).zip(buf) {
                *o = *s;
                *s = a.weight * b;
            }
            prev = a.dest;
        } else {
            for (s, b) in sum.iter_mut().zip(buf) {
                *s += a.weight * b;
            }
        }
    }
    out[prev * width..(prev + 1) * width].copy_from_slice(&sum);
    out
}

// ANCHOR_END: area

/// OpenCV `resize(…, INTER_AREA)` of a float image (a segmentation mask), shrinking: the same
/// tables and accumulation order as [`resize_area`], no rounding (so a binary mask gets
/// fractional edges, which the reference keeps). Row-major `[height, width]` in and out.
pub fn resize_area_f32(values: &[f32], h: usize, w: usize, height: usize, width: usize) -> Vec<f32> {
    assert_eq!(values.len(), h * w, "{h} x {w} values");
    let scale_x = 1.0 / (width as f64 / w as f64);
    let scale_y = 1.0 / (height as f64 / h as f64);
    assert!(scale_x >= 1.0 && scale_y >= 1.0, "masks are only shrunk");
    let (ix, iy) = (scale_x.round() as usize, scale_y.round() as usize);
    if (scale_x - ix as f64).abs() < f64::EPSILON && (scale_y - iy as f64).abs() < f64::EPSILON {
        // The integer-scale path: block sums, four terms at a time, times 1/area.
        let scale = 1.0f32 / (ix * iy) as f32;
        let mut out = vec![0f32; height * width];
        for dy in 0..height {
            for dx in 0..width {
                let terms: Vec<f32> = (0..iy)
                    .flat_map(|y| (0..ix).map(move |x| (dy * iy + y, dx * ix + x)))
                    .map(|(y, x)| values[y * w + x])
                    .collect();
                let mut sum = 0f32;
                let mut k = 0;
                while k + 4 <= terms.len() {
                    sum += terms[k] + terms[k + 1] + terms[k + 2] + terms[k + 3];
                    k += 4;
                }
                for t in &terms[k..] {
                    sum += t;
                }
                out[dy * width + dx] = sum * scale;
            }
        }
        return out;
    }
    area_sums(values, h, w, height, width, scale_x, scale_y)
}

/// `buf[y][d] = Σ S[y][s]·α` over the horizontal table, for every source row `y`.
fn horizontal_pass<T: Copy + Into<f32>>(pixels: &[T], rows: usize, w: usize, width: usize, xtab: &[Alpha]) -> Vec<f32> {
    let mut hbuf = vec![0f32; rows * width];
    // Four rows at a time: four independent accumulation chains per table entry, the same float
    // operations in the same order per row.
    let mut y = 0;
    while y + 4 <= rows {
        let (r0, r1, r2, r3) = (
            &pixels[y * w..(y + 1) * w],
            &pixels[(y + 1) * w..(y + 2) * w],
            &pixels[(y + 2) * w..(y + 3) * w],
            &pixels[(y + 3) * w..(y + 4) * w],
        );
        let chunk = &mut hbuf[y * width..(y + 4) * width];
        let (b0, rest) = chunk.split_at_mut(width);
        let (b1, rest) = rest.split_at_mut(width);
        let (b2, b3) = rest.split_at_mut(width);
        for x in xtab {
            let (s, d, a) = (x.source, x.dest, x.weight);
            b0[d] += r0[s].into() * a;
            b1[d] += r1[s].into() * a;
            b2[d] += r2[s].into() * a;
            b3[d] += r3[s].into() * a;
        }
        y += 4;
    }
    for y in y..rows {
        let row = &pixels[y * w..(y + 1) * w];
        let b = &mut hbuf[y * width..(y + 1) * width];
        for x in xtab {
            b[x.dest] += row[x.source].into() * x.weight;
        }
    }
    hbuf
}

/// OpenCV's integer-scale area path: the mean of each `sx × sy` block, rounded half to even;
/// 2 × 2 blocks go through OpenCV's vector kernel, which rounds half up (`(a+b+c+d+2) >> 2`).
fn resize_area_fast(img: &Gray, height: usize, width: usize, sx: usize, sy: usize) -> Gray {
    let area = sx * sy;
    let scale = 1.0f32 / area as f32;
    let mut out = vec![0u8; height * width];
    let full_w = img.width / sx; // columns whose block lies inside the image
    for dy in 0..height {
        let y0 = dy * sy;
        for dx in 0..width {
            let x0 = dx * sx;
            let value = if y0 + sy <= img.height && dx < full_w {
                let mut s = 0u32;
                for y in y0..y0 + sy {
                    for x in x0..x0 + sx {
                        s += img.at(y, x) as u32;
                    }
                }
                if sx == 2 && sy == 2 { ((s + 2) >> 2) as u8 } else { saturate_u8(s as f32 * scale) }
            } else {
                // A partial block at the border: the mean of the pixels inside.
                let (mut s, mut n) = (0u32, 0u32);
                for y in y0..(y0 + sy).min(img.height) {
                    for x in x0..(x0 + sx).min(img.width) {
                        s += img.at(y, x) as u32;
                        n += 1;
                    }
                }
                if n == 0 { 0 } else { saturate_u8(s as f32 / n as f32) }
            };
            out[dy * width + dx] = value;
        }
    }
    Gray::new(height, width, out)
}

/// OpenCV's `INTER_AREA` when a side is enlarged: bilinear interpolation with OpenCV's
/// "area mode" coefficients (`sx = ⌊d·scale⌋`, `fx = (d + 1) − (sx + 1)/scale`, fractional part),
/// 11-bit fixed-point weights, and its vector kernel's vertical pass. (OpenCV finishes a row's
/// last few pixels with a scalar formula that could round differently; the enlarging cases of
/// the tests match OpenCV pixel for pixel, and real chest radiographs are always shrunk.)
pub fn resize_bilinear(img: &Gray, height: usize, width: usize) -> Gray {
    let one = 2048f32;
    let taps = |src: usize, dst: usize| -> Vec<(usize, usize, i32, i32)> {
        let inv_scale = dst as f64 / src as f64;
        let scale = 1.0 / inv_scale;
        (0..dst)
            .map(|d| {
                let mut s = (d as f64 * scale).floor() as i64;
                let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
                let mut f = if f <= 0.0 { 0.0 } else { f - f.floor() };
                if s >= src as i64 - 1 {
                    s = src as i64 - 1;
                    f = 0.0;
                }
                let s1 = (s as usize + 1).min(src - 1);
                let a = ((1.0 - f) * one).round_ties_even() as i32;
                let b = (f * one).round_ties_even() as i32;
                (s as usize, s1, a, b)
            })
            .collect()
    };
    let xs = taps(img.width, width);
    let ys = taps(img.height, height);
    apply_taps(img, &xs, &ys)
}

/// OpenCV `resize(…, INTER_LINEAR)` of an 8-bit image (the detection path's 224 × 224 resize):
/// half-pixel centres `f = (d + ½)·src/dst − ½`, clamped at the borders, 11-bit fixed-point
/// weights, and OpenCV's vector kernel for the vertical pass.
pub fn resize_linear(img: &Gray, height: usize, width: usize) -> Gray {
    let one = 2048f32;
    let taps = |src: usize, dst: usize| -> Vec<(usize, usize, i32, i32)> {
        let scale = 1.0 / (dst as f64 / src as f64);
        (0..dst)
            .map(|d| {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as i64;
                let mut f = f - s as f32;
                if s < 0 {
                    s = 0;
                    f = 0.0;
                }
                if s >= src as i64 - 1 {
                    s = src as i64 - 1;
                    f = 0.0;
                }
                let s1 = (s as usize + 1).min(src - 1);
                let a = ((1.0 - f) * one).round_ties_even() as i32;
                let b = (f * one).round_ties_even() as i32;
                (s as usize, s1, a, b)
            })
            .collect()
    };
    let xs = taps(img.width, width);
    // Rows: OpenCV does not clamp the vertical coefficient; it clips the row indices instead.
    let ys: Vec<(usize, usize, i32, i32)> = (0..height)
        .map(|d| {
            let scale = 1.0 / (height as f64 / img.height as f64);
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor() as i64;
            let f = f - s as f32;
            let clip = |r: i64| r.clamp(0, img.height as i64 - 1) as usize;
            (clip(s), clip(s + 1), ((1.0 - f) * one).round_ties_even() as i32, (f * one).round_ties_even() as i32)
        })
        .collect();
    apply_taps(img, &xs, &ys)
}

/// Two-tap fixed-point interpolation with OpenCV's arithmetic: per output column
/// `(x0, x1, a0, a1)` and per output row `(y0, y1, b0, b1)`, 11-bit weights; the horizontal pass
/// into integers, then OpenCV's `VResizeLinearVec_32s8u` vertical pass,
/// `(((b0·(r0 ≫ 4)) ≫ 16) + ((b1·(r1 ≫ 4)) ≫ 16) + 2) ≫ 2`.
fn apply_taps(img: &Gray, xs: &[(usize, usize, i32, i32)], ys: &[(usize, usize, i32, i32)]) -> Gray {
    let (height, width) = (ys.len(), xs.len());
    let mut out = vec![0u8; height * width];
    let row = |y: usize| -> Vec<i32> {
        xs.iter().map(|&(a, b, wa, wb)| img.at(y, a) as i32 * wa + img.at(y, b) as i32 * wb).collect()
    };
    for (dy, &(a, b, wa, wb)) in ys.iter().enumerate() {
        let (ra, rb) = (row(a), row(b));
        for dx in 0..width {
            let v = ((wa * (ra[dx] >> 4)) >> 16) + ((wb * (rb[dx] >> 4)) >> 16);
            out[dy * width + dx] = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    Gray::new(height, width, out)
}

/// The size [`resize_and_pad`] resizes to, or why the image cannot be: an empty image, or one
/// so elongated that its short side would become 0 pixels (aspect ratio beyond `size`:1).
pub fn checked_target_size(height: usize, width: usize, size: usize) -> Result<(usize, usize), String> {
    if height == 0 || width == 0 || size == 0 {
        return Err(format!("an image of {width} x {height} pixels cannot be resized to {size} x {size}"));
    }
    let (h, w) = target_size(height, width, size);
    if h == 0 || w == 0 {
        return Err(format!(
            "an image of {width} x {height} pixels (width x height) cannot be resized to {size} x {size}: its short side would become 0 pixels (aspect ratio beyond {size}:1)"
        ));
    }
    Ok((h, w))
}

/// `resize_img(size)`: aspect-preserving area resize, then zero padding to `size × size`. An
/// image [`checked_target_size`] refuses is an error.
pub fn resize_and_pad(img: &Gray, size: usize) -> Result<Gray, String> {
    let (h, w) = checked_target_size(img.height, img.width, size)?;
    let resized = resize_area(img, h, w);
    let mut out = vec![0u8; size * size];
    let (top, left) = ((size - h) / 2, (size - w) / 2);
    for y in 0..h {
        out[(top + y) * size + left..(top + y) * size + left + w].copy_from_slice(&resized.pixels[y * w..(y + 1) * w]);
    }
    Ok(Gray::new(size, size, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `resize_img`'s geometry at S = 256 on real image sizes.
    #[test]
    fn target_sizes_follow_resize_img() {
        assert_eq!(target_size(3056, 2544, 256), (256, 213));
        assert_eq!(target_size(2544, 3056, 256), (213, 256));
        assert_eq!(target_size(1024, 1024, 256), (256, 256));
        assert_eq!(target_size(390, 320, 256), (256, 210));
        let padded = resize_and_pad(&Gray::new(390, 320, vec![200; 390 * 320]), 256).unwrap();
        let row = &padded.pixels[100 * 256..101 * 256];
        // 256 − 210 = 46: 23 zero columns on each side.
        assert!(
            row[..23].iter().all(|&v| v == 0)
                && row[23..233].iter().all(|&v| v == 200)
                && row[233..].iter().all(|&v| v == 0)
        );
    }

    /// The panics: a 600 × 2 PNG and a 4 × 25600 DICOM cannot keep their aspect at
    /// 256 px; the resize says so with the size, and extreme but resizable ones still work.
    #[test]
    fn images_too_elongated_for_the_crop_are_errors() {
        for (h, w) in [(2, 600), (25_600, 4), (0, 5), (5, 0)] {
            let err = resize_and_pad(&Gray::new(h, w, vec![9; h * w]), 256).unwrap_err();
            assert!(err.contains(&format!("{w} x {h} pixels")), "{err}");
        }
        let thin = resize_and_pad(&Gray::new(1, 256, vec![9; 256]), 256).unwrap();
        assert_eq!(thin.pixels.iter().filter(|&&v| v == 9).count(), 256);
        assert!(resize_and_pad(&Gray::new(3, 700, vec![9; 2100]), 256).is_ok());
    }

    #[test]
    fn a_constant_image_stays_constant() {
        for (h, w, th, tw) in [(1024, 1024, 256, 256), (700, 530, 256, 193), (512, 512, 256, 256), (300, 200, 256, 170)]
        {
            let out = resize_area(&Gray::new(h, w, vec![77; h * w]), th, tw);
            assert!(out.pixels.iter().all(|&v| v == 77), "{h}x{w}");
        }
    }

    fn formula(h: usize, w: usize) -> Gray {
        let px = (0..h * w)
            .map(|k| {
                let (i, j) = ((k / w) as u64, (k % w) as u64);
                ((3 * i * i + 5 * j * j + 7 * i * j + 11 * i + 13 * j) % 251) as u8
            })
            .collect();
        Gray::new(h, w, px)
    }

    use crate::tensor_file::fnv1a64;

    /// Every pixel equal to OpenCV's (`golden/python/resize/make_resize.py`): the generic area
    /// path, the 2× and 4× fast paths, near-identity and enlarging sizes.
    #[test]
    fn resize_img_matches_opencv_pixel_for_pixel() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/python/resize/expected.json");
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut failures = Vec::new();
        for case in expected["cases"].as_array().unwrap() {
            let (h, w) = (case["height"].as_u64().unwrap() as usize, case["width"].as_u64().unwrap() as usize);
            let out = resize_and_pad(&formula(h, w), 256).unwrap();
            if let Ok(dir) = std::env::var("MGCA_DUMP_DIR") {
                std::fs::write(format!("{dir}/{h}x{w}.u8"), &out.pixels).unwrap();
            }
            if fnv1a64(&out.pixels) != case["fnv1a64"].as_str().unwrap() {
                let mean = out.pixels.iter().map(|&v| v as f64).sum::<f64>() / out.pixels.len() as f64;
                failures.push(format!("{h}x{w}: mean {mean} vs OpenCV {}", case["mean"]));
            }
        }
        assert!(failures.is_empty(), "{failures:?}");
        let mut failures = Vec::new();
        for case in expected["linear_224"].as_array().unwrap() {
            let (h, w) = (case["height"].as_u64().unwrap() as usize, case["width"].as_u64().unwrap() as usize);
            let out = resize_linear(&formula(h, w), 224, 224);
            if let Ok(dir) = std::env::var("MGCA_DUMP_DIR") {
                std::fs::write(format!("{dir}/linear_{h}x{w}.u8"), &out.pixels).unwrap();
            }
            if fnv1a64(&out.pixels) != case["fnv1a64"].as_str().unwrap() {
                failures.push(format!("linear {h}x{w}"));
            }
        }
        assert!(failures.is_empty(), "{failures:?}");
        // A two-box binary mask shrunk 1024 → 224 as a float image.
        let mut mask = vec![0f32; 1024 * 1024];
        for (y0, y1, x0, x1) in [(200, 531, 264, 477), (152, 605, 562, 818)] {
            for y in y0..y1 {
                mask[y * 1024 + x0..y * 1024 + x1].iter_mut().for_each(|v| *v = 1.0);
            }
        }
        let small = resize_area_f32(&mask, 1024, 1024, 224, 224);
        let bytes: Vec<u8> = small.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(fnv1a64(&bytes), expected["mask_area_224"]["fnv1a64"].as_str().unwrap());
        assert!(small.iter().any(|&v| v > 0.0 && v < 1.0), "fractional edges");
    }
}
