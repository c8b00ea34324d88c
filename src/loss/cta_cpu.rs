//! CTA on the CPU as one fused kernel: forward and analytic backward, sample by sample.
//!
//! Same equations as [`super::cta`] (`losses.md` §3): word side `α = softmax(A/τ)` with
//! `A = Wd Pᵀ`, `Cw = normalize(α P)`, `Sw = Wd Cwᵀ/τ`; patch side `β = softmax(mask(Aᵀ)/τ)`,
//! `Cp = β Wd` (normalised for ResNet), `Sp = P Cpᵀ/τ`; weighted two-way cross-entropies. The
//! gradients are written out by hand:
//! `∂L/∂S = g·(diag(w)·R + C·diag(w) − 2·diag(w))` for row- and column-softmaxes `R`, `C`;
//! `∂/∂x` of `softmax(x/τ)` is `y ⊙ (dy − ⟨y, dy⟩)/τ`; of `x/‖x‖` is `(dy − y⟨y, dy⟩)/‖x‖`; and the
//! patch-side logits are the word-side ones transposed (`Γ = Aᵀ`), so `A` is computed once and
//! receives both sides' gradients.
//!
//! Why: the graph version runs about thirty element-wise passes over `[N, M, M]`-sized tensors,
//! each allocating; this kernel keeps one sample's matrices in cache, uses the GEMM kernels of
//! `matrixmultiply` directly and runs samples in parallel (rayon).
//!
//! **Deviation:** none in the result (the parity tests run both implementations against the
//! reference). Summation order differs from PyTorch's, within float32 rounding.

use rayon::prelude::*;

/// One sample's tensors, row-major.
pub struct CtaSample<'a> {
    /// L2-normalised image tokens `P`. `[M, D]`
    pub patches: &'a [f32],
    /// L2-normalised word slots `Wd`. `[W, D]`
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
    /// `∂L_CTA/∂P`. `[N, M, D]`
    pub grad_patches: Vec<f32>,
    /// `∂L_CTA/∂Wd`. `[N, W, D]`
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

fn gemm(alpha: f32, a: View, b: View, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    assert!(c.len() >= m * n);
    // SAFETY: every view was checked to cover rows × cols elements of its slice (View::new),
    // transposition only swaps strides, and `c` holds m × n elements.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs,
            a.cs,
            b.data.as_ptr(),
            b.rs,
            b.cs,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Per-thread scratch buffers, reused across samples.
struct Scratch {
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
        Self {
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

/// Row-wise `y = softmax(x/τ)` of a `[rows, cols]` buffer, with masked columns set to 0.
fn softmax_rows(x: &[f32], y: &mut [f32], cols: usize, tau: f32, masked: Option<&[bool]>) {
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let keep = |j: usize| masked.is_none_or(|m| !m[j]);
        let mut max = f32::NEG_INFINITY;
        for (j, &v) in xr.iter().enumerate() {
            if keep(j) {
                max = max.max(v / tau);
            }
        }
        let mut sum = 0.0f32;
        for (j, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
            *o = if keep(j) { (v / tau - max).exp() } else { 0.0 };
            sum += *o;
        }
        for o in yr.iter_mut() {
            *o /= sum;
        }
    }
}

/// `dx = y ⊙ (dy − ⟨y, dy⟩)/τ` row by row, in place over `dy`.
fn softmax_backward_rows(y: &[f32], dy: &mut [f32], cols: usize, tau: f32) {
    for (yr, dr) in y.chunks_exact(cols).zip(dy.chunks_exact_mut(cols)) {
        let dot: f32 = yr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
        for (d, &yv) in dr.iter_mut().zip(yr) {
            *d = yv * (*d - dot) / tau;
        }
    }
}

/// Normalise rows in place, remembering `max(‖x‖, 1e-12)`.
fn normalize_rows(x: &mut [f32], norms: &mut [f32], cols: usize) {
    for (r, n) in x.chunks_exact_mut(cols).zip(norms.iter_mut()) {
        *n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in r.iter_mut() {
            *v /= *n;
        }
    }
}

/// Backward of `y = x / max(‖x‖, 1e-12)`, in place over `dy`.
fn normalize_backward_rows(y: &[f32], norms: &[f32], dy: &mut [f32], cols: usize) {
    for ((yr, dr), &n) in y.chunks_exact(cols).zip(dy.chunks_exact_mut(cols)).zip(norms) {
        if n > 1e-12 {
            let dot: f32 = yr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
            for (d, &yv) in dr.iter_mut().zip(yr) {
                *d = (*d - yv * dot) / n;
            }
        } else {
            for d in dr.iter_mut() {
                *d /= n;
            }
        }
    }
}

/// The weighted two-way cross-entropy of a square `[T, T]` similarity matrix with targets on
/// the diagonal: returns `Σ_i w_i CE(s_i,:) + Σ_k w_k CE(s_:,k)` and overwrites `s` with its
/// gradient times `g`.
fn two_way_ce(s: &mut [f32], t: usize, w: &[f32], g: f32, lse_r: &mut [f32], lse_c: &mut [f32]) -> f64 {
    for (i, row) in s.chunks_exact(t).enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        lse_r[i] = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
    }
    let mut cmax = vec![f32::NEG_INFINITY; t];
    for row in s.chunks_exact(t) {
        for (c, &v) in cmax.iter_mut().zip(row) {
            *c = c.max(v);
        }
    }
    let mut csum = vec![0.0f32; t];
    for row in s.chunks_exact(t) {
        for ((c, &v), &mx) in csum.iter_mut().zip(row).zip(&cmax) {
            *c += (v - mx).exp();
        }
    }
    for k in 0..t {
        lse_c[k] = cmax[k] + csum[k].ln();
    }
    let mut loss = 0.0f64;
    for i in 0..t {
        let diag = s[i * t + i];
        loss += w[i] as f64 * ((lse_r[i] - diag) as f64 + (lse_c[i] - diag) as f64);
    }
    for (i, row) in s.chunks_exact_mut(t).enumerate() {
        let wi = w[i];
        for (k, v) in row.iter_mut().enumerate() {
            let r = (*v - lse_r[i]).exp();
            let c = (*v - lse_c[k]).exp();
            *v = g * (wi * r + w[k] * c);
        }
        row[i] -= g * 2.0 * wi;
    }
    loss
}

impl CtaKernel {
    /// Forward and backward of one sample; gradients are written into `dp` (`[M, D]`) and
    /// `dw` (`[W, D]`). Returns the sample's un-normalised word and patch sums.
    fn sample(&self, x: &CtaSample, n: usize, d: usize, s: &mut Scratch, dp: &mut [f32], dw: &mut [f32]) -> (f64, f64) {
        let (m, w, tau) = (x.patch_weights.len(), x.word_weights.len(), self.temperature);
        let p = View::new(x.patches, m, d);
        let wd = View::new(x.words, w, d);
        let g_word = self.side_weights.0 / (2.0 * n as f32);
        let g_patch = self.side_weights.1 / (2.0 * n as f32);

        // Word side, forward.
        gemm(1.0, wd, p.t(), 0.0, &mut s.a); // A [W, M]
        softmax_rows(&s.a, &mut s.alpha, m, tau, None); // α [W, M]
        gemm(1.0, View::new(&s.alpha, w, m), p, 0.0, &mut s.u); // U [W, D]
        normalize_rows(&mut s.u, &mut s.unorm, d); // Cw
        gemm(1.0 / tau, wd, View::new(&s.u, w, d).t(), 0.0, &mut s.sw); // Sw [W, W]
        let word = two_way_ce(&mut s.sw, w, x.word_weights, g_word, &mut s.lse_r, &mut s.lse_c);

        dp.fill(0.0);
        dw.fill(0.0);
        let mut patch = 0.0;
        if self.bidirectional {
            // Patch side: Γ = Aᵀ with padded words masked; β [M, W].
            for (mi, row) in s.dbeta.chunks_exact_mut(w).enumerate() {
                for (i, g) in row.iter_mut().enumerate() {
                    *g = s.a[i * m + mi];
                }
            }
            softmax_rows(&s.dbeta, &mut s.beta, w, tau, Some(x.pad));
            gemm(1.0, View::new(&s.beta, m, w), wd, 0.0, &mut s.v); // V [M, D]
            if self.normalize_patch_context {
                normalize_rows(&mut s.v, &mut s.vnorm, d);
            }
            gemm(1.0 / tau, p, View::new(&s.v, m, d).t(), 0.0, &mut s.sp); // Sp [M, M]
            patch = two_way_ce(&mut s.sp, m, x.patch_weights, g_patch, &mut s.lse_r, &mut s.lse_c);

            // Patch side, backward: ∂Sp -> ∂P, ∂Cp -> ∂V -> ∂β, ∂Wd -> ∂Γ.
            let dsp = View::new(&s.sp, m, m);
            gemm(1.0 / tau, dsp, View::new(&s.v, m, d), 1.0, dp);
            gemm(1.0 / tau, dsp.t(), p, 0.0, &mut s.dv); // ∂Cp [M, D]
            if self.normalize_patch_context {
                normalize_backward_rows(&s.v, &s.vnorm, &mut s.dv, d);
            }
            gemm(1.0, View::new(&s.dv, m, d), wd.t(), 0.0, &mut s.dbeta); // ∂β [M, W]
            gemm(1.0, View::new(&s.beta, m, w).t(), View::new(&s.dv, m, d), 1.0, dw);
            softmax_backward_rows(&s.beta, &mut s.dbeta, w, tau); // ∂Γ [M, W]
        }

        // Word side, backward: ∂Sw -> ∂Wd, ∂Cw -> ∂U -> ∂α, ∂P -> ∂A.
        let dsw = View::new(&s.sw, w, w);
        gemm(1.0 / tau, dsw, View::new(&s.u, w, d), 1.0, dw);
        gemm(1.0 / tau, dsw.t(), wd, 0.0, &mut s.du); // ∂Cw [W, D]
        normalize_backward_rows(&s.u, &s.unorm, &mut s.du, d); // ∂U
        gemm(1.0, View::new(&s.du, w, d), p.t(), 0.0, &mut s.dalpha); // ∂α [W, M]
        gemm(1.0, View::new(&s.alpha, w, m).t(), View::new(&s.du, w, d), 1.0, dp);
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
        (word, patch)
    }

    /// Run the kernel on a batch: `patches` `[N, M, D]`, `words` `[N, W, D]`, `pad` `[N, W]`,
    /// `word_weights` `[N, W]`, `patch_weights` `[N, M]`.
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
