//! CTA on the CPU as one fused kernel: forward and analytic backward, sample by sample.
//!
//! Same equations as [`super::cta`] (book: "CTA: token-level alignment"), from the *raw* local embeddings (the
//! kernel L2-normalises them itself): word side `α = softmax(A/τ)` with
//! `A = Wd Pᵀ`, `Cw = normalize(α P)`, `Sw = Wd Cwᵀ/τ`; patch side `β = softmax(mask(Aᵀ)/τ)`,
//! `Cp = β Wd` (normalised for ResNet), `Sp = P Cpᵀ/τ`; weighted two-way cross-entropies. The
//! gradients are written out by hand:
//! `∂L/∂S = g·(diag(w)·R + C·diag(w) − 2·diag(w))` for row- and column-softmaxes `R`, `C`;
//! `∂/∂x` of `softmax(x/τ)` is `y ⊙ (dy − ⟨y, dy⟩)/τ`; of `x/‖x‖` is `(dy − y⟨y, dy⟩)/‖x‖`; and the
//! patch-side logits are the word-side ones transposed (`Γ = Aᵀ`), so `A` is computed once and
//! receives both sides' gradients. When `Cp` is not re-normalised (the reference's ViT),
//! `Sp = P (β Wd)ᵀ/τ = Γ βᵀ/τ` by associativity, which skips `Cp` and its gradient: a third fewer
//! multiply-adds on the patch side.
//!
//! Why: the graph version runs about thirty element-wise passes over `[N, M, M]`-sized tensors,
//! each allocating; this kernel keeps one sample's matrices in cache, uses the GEMM kernels of
//! the `gemm` crate directly (one thread each) and runs samples in parallel (rayon).
//!
//! **Deviation:** none in the result (the parity tests run both implementations against the
//! reference). Summation order differs from PyTorch's, within float32 rounding.

use rayon::prelude::*;

/// One sample's tensors, row-major.
pub struct CtaSample<'a> {
    /// Image tokens before normalisation. `[M, D]`
    pub patches: &'a [f32],
    /// Word slots before normalisation. `[W, D]`
    pub words: &'a [f32],
    /// True on padding slots. `[W]`
    pub pad: &'a [bool],
    /// Word weights ω. `[W]`
    pub word_weights: &'a [f32],
    /// Patch weights π. `[M]`
    pub patch_weights: &'a [f32],
}

/// The settings the kernel needs.
#[derive(Debug, Clone, Copy)]
pub struct CtaKernel {
    /// τ₂.
    pub temperature: f32,
    /// Whether the patch side runs.
    pub bidirectional: bool,
    /// Whether the patch-side context `Cp` is L2-normalised.
    pub normalize_patch_context: bool,
    /// `∂L_CTA/∂L_word` and `∂L_CTA/∂L_patch` (1 each for a sum, ½ for a mean).
    pub side_weights: (f32, f32),
}

/// The kernel's result for a whole batch.
#[derive(Debug, Clone)]
pub struct CtaResult {
    /// `L_word` (already `(a + b)/2`, divided by N).
    pub word_loss: f64,
    /// `L_patch` (0 when not bidirectional).
    pub patch_loss: f64,
    /// `∂L_CTA/∂P̂` with respect to the raw image tokens. `[N, M, D]`
    pub grad_patches: Vec<f32>,
    /// `∂L_CTA/∂Ŵ` with respect to the raw word slots. `[N, W, D]`
    pub grad_words: Vec<f32>,
}

/// `C ← α·A·B + β·C` on row-major buffers; `A`, `B` given as views that may be transposed.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl<'a> View<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols);
        Self { data, rows, cols, rs: cols as isize, cs: 1 }
    }
    fn t(self) -> Self {
        Self { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

#[inline(always)]
fn gemm(alpha: f32, a: View, b: View, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    assert!(c.len() >= m * n);
    // SAFETY: every view was checked to cover rows × cols elements of its slice (View::new),
    // transposition only swaps strides, and `c` holds m × n elements. `gemm` computes
    // `c ← beta_gemm·c + alpha_gemm·a·b` (its names are swapped with respect to BLAS); it reads
    // `c` only when `read_dst` is true.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.cs,
            a.rs,
            b.data.as_ptr(),
            b.cs,
            b.rs,
            beta,
            alpha,
            false,
            false,
            false,
            // One thread per GEMM: the samples already run in parallel.
            gemm::Parallelism::None,
        )
    }
}

/// Per-thread scratch buffers, reused across samples.
struct Scratch {
    p: Vec<f32>,      // P = normalize(P̂)                  [M, D]
    pnorm: Vec<f32>,  // max(‖P̂_m‖, 1e-12)                 [M]
    wd: Vec<f32>,     // Wd = normalize(Ŵ)                 [W, D]
    wnorm: Vec<f32>,  // max(‖Ŵ_i‖, 1e-12)                 [W]
    gam: Vec<f32>,    // Γ = Aᵀ (unmasked)                 [M, W]
    dgam: Vec<f32>,   // ∂L/∂Γ through Sp = Γβᵀ/τ          [M, W]
    e: Vec<f32>,      // row-softmax buffer of the CE      [max(M, W)²]
    a: Vec<f32>,      // A = Wd Pᵀ, then ∂L/∂A            [W, M]
    alpha: Vec<f32>,  // α                                 [W, M]
    dalpha: Vec<f32>, // ∂L/∂α                             [W, M]
    u: Vec<f32>,      // U = α P, then Cw                  [W, D]
    unorm: Vec<f32>,  // max(‖U_i‖, 1e-12)                 [W]
    du: Vec<f32>,     // ∂L/∂Cw, then ∂L/∂U                [W, D]
    sw: Vec<f32>,     // Sw, then ∂L/∂Sw                   [W, W]
    beta: Vec<f32>,   // β                                 [M, W]
    dbeta: Vec<f32>,  // ∂L/∂β, then ∂L/∂Γ                 [M, W]
    v: Vec<f32>,      // V = β Wd, then Cp                 [M, D]
    vnorm: Vec<f32>,  // max(‖V_m‖, 1e-12)                 [M]
    dv: Vec<f32>,     // ∂L/∂Cp, then ∂L/∂V                [M, D]
    sp: Vec<f32>,     // Sp, then ∂L/∂Sp                   [M, M]
    lse_r: Vec<f32>,  // row log-sum-exp                   [max(M, W)]
    lse_c: Vec<f32>,  // column log-sum-exp                [max(M, W)]
}

impl Scratch {
    fn new(m: usize, w: usize, d: usize) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        let t = m.max(w);
        Self {
            p: z(m * d),
            pnorm: z(m),
            wd: z(w * d),
            wnorm: z(w),
            gam: z(m * w),
            dgam: z(m * w),
            e: z(t * t),
            a: z(w * m),
            alpha: z(w * m),
            dalpha: z(w * m),
            u: z(w * d),
            unorm: z(w),
            du: z(w * d),
            sw: z(w * w),
            beta: z(m * w),
            dbeta: z(m * w),
            v: z(m * d),
            vnorm: z(m),
            dv: z(m * d),
            sp: z(m * m),
            lse_r: z(m.max(w)),
            lse_c: z(m.max(w)),
        }
    }
}

/// `eˣ` in f32 with Cephes' `expf` polynomial (relative error below 3e-7), branch-free and
/// without float-to-integer conversions, so that loops over slices vectorise. `x = k·ln 2 + r`
/// with `k = round(x·log₂e)`, found by adding `1.5·2²³` (the sum's low mantissa bits are `k`);
/// `eʳ` by the polynomial on `|r| ≤ ln 2 / 2`; `2ᵏ` by writing `k + 127` into an exponent field.
/// Inputs are clamped to `[-87, 88]`; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.clamp(-87.0, 88.0);
    let z = x * std::f32::consts::LOG2_E + SHIFTER;
    let k = z - SHIFTER; // round(x · log₂e), exactly
    let r = x - k * 0.693_359_4 + k * 2.121_944_4e-4; // x − k·ln 2, in two parts
    let p =
        ((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r + 0.5;
    let y = p * r * r + r + 1.0;
    let two_k = (z.to_bits() as i32 - 0x4B40_0000 + 127) << 23; // 2ᵏ
    y * f32::from_bits(two_k as u32)
}

// Float reductions are not reordered by the compiler (no fast-math), so a plain `sum()` or
// `fold(max)` runs one element at a time; eight independent accumulators let it vectorise.
const LANES: usize = 8;

#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    rest.iter().chain(&acc).fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
}

#[inline(always)]
fn sum_of(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (cx, cy) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let rest: f32 = cx.remainder().iter().zip(cy.remainder()).map(|(a, b)| a * b).sum();
    for (a8, b8) in cx.zip(cy) {
        for ((a, &u), &v) in acc.iter_mut().zip(a8).zip(b8) {
            *a += u * v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Row-wise `y = softmax(x/τ)` of a `[rows, cols]` buffer, with masked columns set to 0.
#[inline(always)]
fn softmax_rows(x: &[f32], y: &mut [f32], cols: usize, tau: f32, masked: Option<&[bool]>) {
    let inv_tau = 1.0 / tau;
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v * inv_tau;
        }
        if let Some(mask) = masked {
            for (o, &m) in yr.iter_mut().zip(mask) {
                if m {
                    *o = f32::NEG_INFINITY;
                }
            }
        }
        let max = max_of(yr);
        for o in yr.iter_mut() {
            *o = exp_f32(*o - max);
        }
        if let Some(mask) = masked {
            for (o, &m) in yr.iter_mut().zip(mask) {
                if m {
                    *o = 0.0;
                }
            }
        }
        let inv = 1.0 / sum_of(yr);
        for o in yr.iter_mut() {
            *o *= inv;
        }
    }
}

/// `dx = y ⊙ (dy − ⟨y, dy⟩)/τ` row by row, in place over `dy`.
#[inline(always)]
fn softmax_backward_rows(y: &[f32], dy: &mut [f32], cols: usize, tau: f32) {
    let inv_tau = 1.0 / tau;
    for (yr, dr) in y.chunks_exact(cols).zip(dy.chunks_exact_mut(cols)) {
        let dot = dot(yr, dr);
        for (d, &yv) in dr.iter_mut().zip(yr) {
            *d = yv * (*d - dot) * inv_tau;
        }
    }
}

/// Normalise rows in place, remembering `max(‖x‖, 1e-12)`.
#[inline(always)]
fn normalize_rows(x: &mut [f32], norms: &mut [f32], cols: usize) {
    for (r, n) in x.chunks_exact_mut(cols).zip(norms.iter_mut()) {
        *n = dot(r, r).sqrt().max(1e-12);
        let inv = 1.0 / *n;
        for v in r.iter_mut() {
            *v *= inv;
        }
    }
}

/// Backward of `y = x / max(‖x‖, 1e-12)`, in place over `dy`.
#[inline(always)]
fn normalize_backward_rows(y: &[f32], norms: &[f32], dy: &mut [f32], cols: usize) {
    for ((yr, dr), &n) in y.chunks_exact(cols).zip(dy.chunks_exact_mut(cols)).zip(norms) {
        let inv = 1.0 / n;
        if n > 1e-12 {
            let dot = dot(yr, dr);
            for (d, &yv) in dr.iter_mut().zip(yr) {
                *d = (*d - yv * dot) * inv;
            }
        } else {
            for d in dr.iter_mut() {
                *d *= inv;
            }
        }
    }
}

/// The weighted two-way cross-entropy of a square `[T, T]` similarity matrix with targets on
/// the diagonal: returns `Σ_i w_i CE(s_i,:) + Σ_k w_k CE(s_:,k)` and overwrites `s` with its
/// gradient times `g`, `g·(w_i R_ik + w_k C_ik − 2 w_i δ_ik)`, where `R` and `C` are the row- and
/// column-softmaxes of `s`.
///
/// One exponential per entry: with the matrix's maximum `G`, `e = exp(s − G)` serves both the
/// rows and the columns (`R_ik = e_ik / Σ_k e_ik`, `C_ik = e_ik / Σ_i e_ik`). That needs every
/// `e` to stay a normal float, i.e. a spread `max − min` below 80 (logits of unit vectors at
/// τ ≥ 0.025); otherwise rows and columns are shifted by their own maxima (two exponentials).
#[inline(always)]
fn two_way_ce(s: &mut [f32], e: &mut [f32], t: usize, w: &[f32], g: f32, lse_r: &mut [f32], lse_c: &mut [f32]) -> f64 {
    let (e, lse_r, lse_c) = (&mut e[..t * t], &mut lse_r[..t], &mut lse_c[..t]);
    let diag: Vec<f32> = (0..t).map(|i| s[i * t + i]).collect();
    let top = max_of(s);
    let bottom = s.iter().fold(f32::INFINITY, |a, &v| if v < a { v } else { a });
    let mut col_sum = vec![0.0f32; t];
    let mut row_sum = vec![0.0f32; t];
    if top - bottom < 80.0 {
        for (((row, er), lse), rs) in
            s.chunks_exact(t).zip(e.chunks_exact_mut(t)).zip(lse_r.iter_mut()).zip(&mut row_sum)
        {
            for ((o, &v), c) in er.iter_mut().zip(row).zip(col_sum.iter_mut()) {
                *o = exp_f32(v - top);
                *c += *o;
            }
            let sum = sum_of(er);
            *rs = sum;
            *lse = top + sum.ln();
            let inv = 1.0 / sum;
            for o in er.iter_mut() {
                *o *= inv; // R
            }
        }
        for (l, c) in lse_c.iter_mut().zip(&col_sum) {
            *l = top + c.ln();
        }
        // C_ik = e_ik / Σ_i e_ik = R_ik · (Σ_k e_ik) / (Σ_i e_ik).
        for c in col_sum.iter_mut() {
            *c = 1.0 / *c;
        }
        for (i, (row, er)) in s.chunks_exact_mut(t).zip(e.chunks_exact(t)).enumerate() {
            let gw = g * w[i];
            let gr = g * row_sum[i];
            for (((v, &r), &inv_c), &wk) in row.iter_mut().zip(er).zip(&col_sum).zip(w) {
                *v = r * (gw + gr * wk * inv_c);
            }
            row[i] -= 2.0 * gw;
        }
    } else {
        // Rows: R = exp(s − rowmax) / Σ.
        for ((row, er), lse) in s.chunks_exact(t).zip(e.chunks_exact_mut(t)).zip(lse_r.iter_mut()) {
            let max = max_of(row);
            for (o, &v) in er.iter_mut().zip(row) {
                *o = exp_f32(v - max);
            }
            let sum = sum_of(er);
            *lse = max + sum.ln();
            let inv = 1.0 / sum;
            for o in er.iter_mut() {
                *o *= inv;
            }
        }
        // Columns: s ← exp(s − colmax); C = s / Σ_col.
        lse_c.fill(f32::NEG_INFINITY);
        for row in s.chunks_exact(t) {
            for (c, &v) in lse_c.iter_mut().zip(row) {
                *c = if v > *c { v } else { *c };
            }
        }
        for row in s.chunks_exact_mut(t) {
            for ((v, c), &mx) in row.iter_mut().zip(col_sum.iter_mut()).zip(lse_c.iter()) {
                *v = exp_f32(*v - mx);
                *c += *v;
            }
        }
        for (l, c) in lse_c.iter_mut().zip(col_sum.iter_mut()) {
            *l += c.ln();
            *c = 1.0 / *c;
        }
        for (i, (row, er)) in s.chunks_exact_mut(t).zip(e.chunks_exact(t)).enumerate() {
            let gw = g * w[i];
            for (((v, &r), &inv), &wk) in row.iter_mut().zip(er).zip(col_sum.iter()).zip(w) {
                *v = gw * r + g * wk * (*v * inv);
            }
            row[i] -= 2.0 * gw;
        }
    }
    let mut loss = 0.0f64;
    for k in 0..t {
        loss += w[k] as f64 * ((lse_r[k] - diag[k]) as f64 + (lse_c[k] - diag[k]) as f64);
    }
    loss
}

impl CtaKernel {
    /// Forward and backward of one sample; gradients are written into `dp` (`[M, D]`) and
    /// `dw` (`[W, D]`). Returns the sample's un-normalised word and patch sums.
    fn sample(&self, x: &CtaSample, n: usize, d: usize, s: &mut Scratch, dp: &mut [f32], dw: &mut [f32]) -> (f64, f64) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.sample_avx2(x, n, d, s, dp, dw) };
        }
        self.sample_body(x, n, d, s, dp, dw)
    }

    /// The same code compiled for AVX2 (the element-wise loops run 8 lanes wide instead of 4).
    /// The arithmetic is identical (no fused multiply-add is introduced), so results do not
    /// depend on the CPU.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn sample_avx2(
        &self,
        x: &CtaSample,
        n: usize,
        d: usize,
        s: &mut Scratch,
        dp: &mut [f32],
        dw: &mut [f32],
    ) -> (f64, f64) {
        self.sample_body(x, n, d, s, dp, dw)
    }

    #[inline(always)]
    fn sample_body(
        &self,
        x: &CtaSample,
        n: usize,
        d: usize,
        s: &mut Scratch,
        dp: &mut [f32],
        dw: &mut [f32],
    ) -> (f64, f64) {
        let (m, w, tau) = (x.patch_weights.len(), x.word_weights.len(), self.temperature);
        let g_word = self.side_weights.0 / (2.0 * n as f32);
        let g_patch = self.side_weights.1 / (2.0 * n as f32);
        s.p.copy_from_slice(x.patches);
        normalize_rows(&mut s.p, &mut s.pnorm, d);
        s.wd.copy_from_slice(x.words);
        normalize_rows(&mut s.wd, &mut s.wnorm, d);
        let p = View::new(&s.p, m, d);
        let wd = View::new(&s.wd, w, d);

        // Word side, forward.
        gemm(1.0, wd, p.t(), 0.0, &mut s.a); // A [W, M]
        softmax_rows(&s.a, &mut s.alpha, m, tau, None); // α [W, M]
        gemm(1.0, View::new(&s.alpha, w, m), p, 0.0, &mut s.u); // U [W, D]
        normalize_rows(&mut s.u, &mut s.unorm, d); // Cw
        gemm(1.0 / tau, wd, View::new(&s.u, w, d).t(), 0.0, &mut s.sw); // Sw [W, W]
        let word = two_way_ce(&mut s.sw, &mut s.e, w, x.word_weights, g_word, &mut s.lse_r, &mut s.lse_c);

        // The first product written into `dp` and `dw` overwrites them (β = 0), later ones add.
        let (mut dp_beta, mut dw_beta) = (0.0, 0.0);
        let mut patch = 0.0;
        if self.bidirectional {
            // Patch side: Γ = Aᵀ with padded words masked; β [M, W].
            for (mi, row) in s.gam.chunks_exact_mut(w).enumerate() {
                for (i, g) in row.iter_mut().enumerate() {
                    *g = s.a[i * m + mi];
                }
            }
            softmax_rows(&s.gam, &mut s.beta, w, tau, Some(x.pad));
            let (gam, beta) = (View::new(&s.gam, m, w), View::new(&s.beta, m, w));
            if self.normalize_patch_context {
                gemm(1.0, beta, wd, 0.0, &mut s.v); // V [M, D]
                normalize_rows(&mut s.v, &mut s.vnorm, d); // Cp
                gemm(1.0 / tau, p, View::new(&s.v, m, d).t(), 0.0, &mut s.sp); // Sp [M, M]
            } else {
                gemm(1.0 / tau, gam, beta.t(), 0.0, &mut s.sp); // Sp = Γβᵀ/τ [M, M]
            }
            patch = two_way_ce(&mut s.sp, &mut s.e, m, x.patch_weights, g_patch, &mut s.lse_r, &mut s.lse_c);

            // Patch side, backward, down to ∂Γ (in `dbeta`).
            let dsp = View::new(&s.sp, m, m);
            if self.normalize_patch_context {
                gemm(1.0 / tau, dsp, View::new(&s.v, m, d), dp_beta, dp);
                dp_beta = 1.0;
                gemm(1.0 / tau, dsp.t(), p, 0.0, &mut s.dv); // ∂Cp [M, D]
                normalize_backward_rows(&s.v, &s.vnorm, &mut s.dv, d); // ∂V
                gemm(1.0, View::new(&s.dv, m, d), wd.t(), 0.0, &mut s.dbeta); // ∂β [M, W]
                gemm(1.0, beta.t(), View::new(&s.dv, m, d), dw_beta, dw);
                dw_beta = 1.0;
                softmax_backward_rows(&s.beta, &mut s.dbeta, w, tau); // ∂Γ
            } else {
                gemm(1.0 / tau, dsp, beta, 0.0, &mut s.dgam); // ∂Γ through Sp [M, W]
                gemm(1.0 / tau, dsp.t(), gam, 0.0, &mut s.dbeta); // ∂β [M, W]
                softmax_backward_rows(&s.beta, &mut s.dbeta, w, tau); // ∂Γ through β
                for (g, &h) in s.dbeta.iter_mut().zip(&s.dgam) {
                    *g += h;
                }
            }
        }

        // Word side, backward: ∂Sw -> ∂Wd, ∂Cw -> ∂U -> ∂α, ∂P -> ∂A.
        let dsw = View::new(&s.sw, w, w);
        gemm(1.0 / tau, dsw, View::new(&s.u, w, d), dw_beta, dw);
        gemm(1.0 / tau, dsw.t(), wd, 0.0, &mut s.du); // ∂Cw [W, D]
        normalize_backward_rows(&s.u, &s.unorm, &mut s.du, d); // ∂U
        gemm(1.0, View::new(&s.du, w, d), p.t(), 0.0, &mut s.dalpha); // ∂α [W, M]
        gemm(1.0, View::new(&s.alpha, w, m).t(), View::new(&s.du, w, d), dp_beta, dp);
        softmax_backward_rows(&s.alpha, &mut s.dalpha, m, tau); // ∂A from the word side
        if self.bidirectional {
            for (i, row) in s.dalpha.chunks_exact_mut(m).enumerate() {
                for (mi, g) in row.iter_mut().enumerate() {
                    *g += s.dbeta[mi * w + i];
                }
            }
        }
        let da = View::new(&s.dalpha, w, m);
        gemm(1.0, da, p, 1.0, dw);
        gemm(1.0, da.t(), wd, 1.0, dp);

        // Back through the input normalisation, to the raw embeddings.
        normalize_backward_rows(&s.p, &s.pnorm, dp, d);
        normalize_backward_rows(&s.wd, &s.wnorm, dw, d);
        (word, patch)
    }

    /// Run the kernel on a batch of raw local embeddings: `patches` `[N, M, D]`, `words`
    /// `[N, W, D]`, `pad` `[N, W]`, `word_weights` `[N, W]`, `patch_weights` `[N, M]`.
    pub fn run(
        &self,
        dims: [usize; 4], // [N, M, W, D]
        patches: &[f32],
        words: &[f32],
        pad: &[bool],
        word_weights: &[f32],
        patch_weights: &[f32],
    ) -> CtaResult {
        let [n, m, w, d] = dims;
        assert_eq!(patches.len(), n * m * d);
        assert_eq!(words.len(), n * w * d);
        assert_eq!(pad.len(), n * w);
        assert_eq!(word_weights.len(), n * w);
        assert_eq!(patch_weights.len(), n * m);
        let mut grad_patches = vec![0.0f32; n * m * d];
        let mut grad_words = vec![0.0f32; n * w * d];
        let mut sums = vec![(0.0f64, 0.0f64); n];
        grad_patches
            .par_chunks_mut(m * d)
            .zip(grad_words.par_chunks_mut(w * d))
            .zip(sums.par_iter_mut())
            .enumerate()
            .for_each_init(
                || Scratch::new(m, w, d),
                |scratch, (b, ((dp, dw), sum))| {
                    let sample = CtaSample {
                        patches: &patches[b * m * d..(b + 1) * m * d],
                        words: &words[b * w * d..(b + 1) * w * d],
                        pad: &pad[b * w..(b + 1) * w],
                        word_weights: &word_weights[b * w..(b + 1) * w],
                        patch_weights: &patch_weights[b * m..(b + 1) * m],
                    };
                    *sum = self.sample(&sample, n, d, scratch, dp, dw);
                },
            );
        let scale = 1.0 / (2.0 * n as f64);
        CtaResult {
            word_loss: sums.iter().map(|s| s.0).sum::<f64>() * scale,
            patch_loss: sums.iter().map(|s| s.1).sum::<f64>() * scale,
            grad_patches,
            grad_words,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::{HAND_WORKED, HAND_WORKED_WEIGHTS};

    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = -87.0 + i as f32 * (175.0 / 200_000.0);
            let want = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(f32::NEG_INFINITY) < 1e-37);
    }

    /// The two-way CE against a direct computation on a small matrix, with a small spread (one
    /// exponential per entry) and a large one (rows and columns shifted separately).
    #[test]
    fn two_way_ce_matches_the_definition() {
        two_way_ce_case([2.0f32, -1.0, 0.5, 0.3, 1.5, -2.0, -0.7, 0.1, 3.0]);
        two_way_ce_case([60.0f32, -1.0, 0.5, 0.3, 1.5, -45.0, -0.7, 0.1, 3.0]);
    }

    fn two_way_ce_case(s0: [f32; 9]) {
        let t = 3;
        let w = [0.5f32, 0.3, 0.2];
        let (mut s, mut e) = (s0.to_vec(), vec![0.0; 9]);
        let (mut lr, mut lc) = (vec![0.0; 3], vec![0.0; 3]);
        let loss = two_way_ce(&mut s, &mut e, t, &w, 1.0, &mut lr, &mut lc);
        let lse = |v: &[f64]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let mut want = 0.0;
        let mut grad = [0.0f64; 9];
        for i in 0..t {
            let row: Vec<f64> = (0..t).map(|k| s0[i * t + k] as f64).collect();
            let col: Vec<f64> = (0..t).map(|k| s0[k * t + i] as f64).collect();
            want += w[i] as f64 * (lse(&row) - s0[i * t + i] as f64 + lse(&col) - s0[i * t + i] as f64);
            for k in 0..t {
                grad[i * t + k] += w[i] as f64 * (row[k] - lse(&row)).exp();
                grad[k * t + i] += w[i] as f64 * (col[k] - lse(&col)).exp();
            }
            grad[i * t + i] -= 2.0 * w[i] as f64;
        }
        assert!((loss - want).abs() < HAND_WORKED * want.abs().max(1.0), "{s0:?}: {loss} vs {want}");
        for (a, b) in s.iter().zip(grad) {
            assert!((*a as f64 - b).abs() < HAND_WORKED_WEIGHTS, "{s0:?}: {s:?} vs {grad:?}");
        }
    }
}
