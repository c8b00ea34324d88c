//! Branch-free `exp` and normal-distribution functions in f32, written so that the compiler
//! vectorises the loops that call them (every function is inlined into its caller's
//! instruction set).
//!
//! `exp`: Cody–Waite range reduction `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, then the degree-7 Taylor
//! polynomial of `e^r` (truncation error below 6e-9 relative) and `2^n` built in the exponent
//! bits. `Φ`: the rational approximation 7.1.26 of Abramowitz and Stegun (1964) for
//! `erfc(z) = t·P(t)·e^{−z²}`, `t = 1/(1 + p·z)`, absolute error below 1.5e-7 on `erf`
//! (below 3e-7 on `Φ` once evaluated in f32).

/// Lanes of the partial sums and maxima of row reductions (one AVX-512 register of f32).
pub const LANES: usize = 16;

/// `Σ f(x_i)` in `LANES` partial sums (so that the compiler vectorises it), then the tail.
#[inline(always)]
pub fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| f(*v)).sum();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += f(c[k]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `ln 2` split so that `n·LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Below this `e^x` is under f32's smallest normal number; the result is 0.
const EXP_MIN: f32 = -87.336_54;
/// Above this `e^x` is clamped (it is only reached by inputs that overflow anyway).
const EXP_MAX: f32 = 88.0;

/// `e^x`, relative error about 1e-7; 0 below `EXP_MIN`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let c = x.clamp(EXP_MIN, EXP_MAX);
    let n = (c * LOG2_E + 0.5).floor();
    let r = (c - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // `n` lies in [-126, 127]: a normal power of two.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < EXP_MIN { 0.0 } else { p * scale }
}

const AS_P: f32 = 0.327_591_1;
const AS_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The standard normal CDF `Φ(x)` and density `φ(x)`.
#[inline(always)]
pub fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + AS_P * z);
    let poly = t * (AS_A[0] + t * (AS_A[1] + t * (AS_A[2] + t * (AS_A[3] + t * AS_A[4]))));
    let e = exp(-z * z); // e^{−x²/2}
    let half_erfc = 0.5 * poly * e; // Φ(−|x|)
    let cdf = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    (cdf, FRAC_1_SQRT_2PI * e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// exp against the standard library over the range softmax and GELU use.
    #[test]
    fn exp_is_accurate_to_a_few_ulps() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -90.0 + i as f32 * (100.0 / 200_000.0); // [-90, 10]
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            if want < f32::MIN_POSITIVE as f64 {
                assert!(got == 0.0 || (got - want).abs() < 1e-37, "exp({x}) = {got}, want {want}");
                continue;
            }
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(-1e4), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    /// Φ and φ against f64 references (erfc from the standard series/continued fraction is not
    /// in std, so Φ is checked through its defining integral of φ by Simpson's rule).
    #[test]
    fn the_normal_cdf_is_accurate() {
        let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        // Φ(x) = 1/2 + ∫₀ˣ φ, Simpson with 2000 panels.
        let cdf = |x: f64| {
            let n = 2000;
            let h = x / n as f64;
            let mut s = pdf(0.0) + pdf(x);
            for k in 1..n {
                s += pdf(k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 };
            }
            0.5 + s * h / 3.0
        };
        let mut worst_cdf = 0f64;
        let mut worst_pdf = 0f64;
        for i in 0..=1200 {
            let x = -6.0 + i as f64 * 0.01;
            let (c, p) = normal_cdf_pdf(x as f32);
            worst_cdf = worst_cdf.max((c as f64 - cdf(x)).abs());
            worst_pdf = worst_pdf.max((p as f64 - pdf(x)).abs());
        }
        assert!(worst_cdf < 3e-7, "worst |ΔΦ| {worst_cdf}");
        assert!(worst_pdf < 1e-7, "worst |Δφ| {worst_pdf}");
    }
}
