//! A 2-D convolution layer whose backward pass is ours on the CPU backend.
//!
//! With `col_n[k, p]` the input patch of image n (`k = (c, i, j)` over channels and kernel
//! offsets, `p = (y, x)` over output positions, zero where the kernel hangs over the padding):
//!
//! - forward: `y_n = W · col_n + b` (`W` as `[O, C·kh·kw]`), burn-flex's own kernel;
//! - `∂L/∂W = Σ_n ∂L/∂y_n · col_nᵀ` — one GEMM per image into a running sum;
//! - `∂L/∂x_n = col2im(Wᵀ · ∂L/∂y_n)` — one GEMM per image, then the patches added back;
//! - `∂L/∂b = Σ_{n,p} ∂L/∂y`.
//!
//! A 1 × 1 kernel with stride 1 and no padding needs no patches (`col_n = x_n`). Images are
//! split across rayon's threads; each thread keeps its own partial `∂L/∂W`, summed at the end.
//! burn-flex 0.21 takes the input gradient as a transposed 3-D convolution and the weight
//! gradient as a convolution over the batch, which on the U-Net decoder's and the detection
//! neck's high-resolution layers spends most of a training step in one-row GEMM micro-kernels.
//!
//! On every other backend, for grouped convolutions and for asymmetric padding, the layer is
//! exactly burn's `Conv2d::forward`.
//!
//! Book: "Building, backends and numerics", section "The encoders on the CPU: our kernels".
//! Reference: PyTorch's `nn.Conv2d`, whose CPU backward is the same decomposition.
//!
//! **Deviation:** none in meaning; sums are taken in another order than burn-flex's (the
//! gradients agree with burn's to 1e-5 relative in the tests).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{Route, back, contiguous, route, values};
use crate::backend::{Cpu, CpuAutodiff};

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub out_height: usize,
    pub out_width: usize,
}

impl ConvGeometry {
    fn new(x: [usize; 4], w: [usize; 4], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> Self {
        let out = |size: usize, k: usize, a: usize| (size + 2 * padding[a] - dilation[a] * (k - 1) - 1) / stride[a] + 1;
        Self {
            batch: x[0],
            channels: x[1],
            height: x[2],
            width: x[3],
            out_channels: w[0],
            kernel: [w[2], w[3]],
            stride,
            padding,
            dilation,
            out_height: out(x[2], w[2], 0),
            out_width: out(x[3], w[3], 1),
        }
    }

    /// `C·kh·kw`, the rows of a patch matrix.
    fn patch(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// A 1 × 1 kernel, stride 1, no padding: the patches are the input itself.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// For kernel offset `j` along an axis of `size` inputs and `out` outputs: the input index
    /// of output 0 (may be negative) and the range of outputs that land inside the input.
    fn span(&self, axis: usize, offset: usize, size: usize, out: usize) -> (isize, usize, usize) {
        let (s, p, d) = (self.stride[axis] as isize, self.padding[axis] as isize, self.dilation[axis] as isize);
        let first = offset as isize * d - p;
        // Outputs o with 0 ≤ first + o·s < size.
        let lo = if first >= 0 { 0 } else { ((-first) + s - 1) / s };
        let hi = if first >= size as isize { 0 } else { ((size as isize - first) + s - 1) / s };
        (first, (lo as usize).min(out), (hi as usize).min(out))
    }
}

/// Image `x` `[C, H, W]` → patches `[C·kh·kw, Ho·Wo]`.
fn im2col(x: &[f32], g: &ConvGeometry, col: &mut [f32]) {
    let (h, w, ho, wo) = (g.height, g.width, g.out_height, g.out_width);
    let p = ho * wo;
    for c in 0..g.channels {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for i in 0..g.kernel[0] {
            let (fy, ylo, yhi) = g.span(0, i, h, ho);
            for j in 0..g.kernel[1] {
                let (fx, xlo, xhi) = g.span(1, j, w, wo);
                let row = &mut col[((c * g.kernel[0] + i) * g.kernel[1] + j) * p..][..p];
                for oy in 0..ho {
                    let out = &mut row[oy * wo..(oy + 1) * wo];
                    if oy < ylo || oy >= yhi || xlo >= xhi {
                        out.fill(0.0);
                        continue;
                    }
                    let iy = (fy + (oy * g.stride[0]) as isize) as usize;
                    let src = &plane[iy * w..(iy + 1) * w];
                    out[..xlo].fill(0.0);
                    out[xhi..].fill(0.0);
                    let start = (fx + (xlo * g.stride[1]) as isize) as usize;
                    if g.stride[1] == 1 {
                        out[xlo..xhi].copy_from_slice(&src[start..start + (xhi - xlo)]);
                    } else {
                        for (k, o) in out[xlo..xhi].iter_mut().enumerate() {
                            *o = src[start + k * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Patch gradients `[C·kh·kw, Ho·Wo]` added back into the image gradient `dx` `[C, H, W]`.
fn col2im(col: &[f32], g: &ConvGeometry, dx: &mut [f32]) {
    let (h, w, ho, wo) = (g.height, g.width, g.out_height, g.out_width);
    let p = ho * wo;
    for c in 0..g.channels {
        let plane = &mut dx[c * h * w..(c + 1) * h * w];
        for i in 0..g.kernel[0] {
            let (fy, ylo, yhi) = g.span(0, i, h, ho);
            for j in 0..g.kernel[1] {
                let (fx, xlo, xhi) = g.span(1, j, w, wo);
                if xlo >= xhi {
                    continue;
                }
                let row = &col[((c * g.kernel[0] + i) * g.kernel[1] + j) * p..][..p];
                for oy in ylo..yhi {
                    let iy = (fy + (oy * g.stride[0]) as isize) as usize;
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    let src = &row[oy * wo + xlo..oy * wo + xhi];
                    let start = (fx + (xlo * g.stride[1]) as isize) as usize;
                    if g.stride[1] == 1 {
                        for (d, s) in dst[start..start + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (k, s) in src.iter().enumerate() {
                            dst[start + k * g.stride[1]] += s;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, each matrix given by its row and column
/// strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, dst_rs, 1) < dst.len(), "dst too short");
    if k > 0 {
        assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len(), "operand too short");
    }
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: every index the strides reach lies inside its slice (checked above), `dst` does
    // not alias the operands (a `&mut` borrow), and the element type is f32.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

// ANCHOR: backward
/// The input and weight gradients of a convolution (each only when asked for): `x` `[N, C, H,
/// W]`, `w` `[O, C, kh, kw]`, `dy` `[N, O, Ho, Wo]`, all contiguous.
pub fn conv2d_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p, o) = (g.patch(), g.positions(), g.out_channels);
    let (chw, ohw) = (g.channels * g.height * g.width, o * p);
    let threads = rayon::current_num_threads().max(1);
    let per_task = g.batch.div_ceil(threads).max(1);
    let tasks = g.batch.div_ceil(per_task);
    // Fewer images than threads: each GEMM uses the threads instead.
    let inner_parallel = g.batch < threads;
    let work = |task: usize, mut dx: Option<&mut [f32]>| -> Vec<f32> {
        let mut dw = if want_dw { vec![0f32; o * k] } else { Vec::new() };
        let mut col = if g.pointwise() { Vec::new() } else { vec![0f32; k * p] };
        let images = task * per_task..((task + 1) * per_task).min(g.batch);
        for (local, n) in images.enumerate() {
            let (xn, dyn_) = (&x[n * chw..(n + 1) * chw], &dy[n * ohw..(n + 1) * ohw]);
            if want_dw {
                let patches: &[f32] = if g.pointwise() {
                    xn
                } else {
                    im2col(xn, g, &mut col);
                    &col
                };
                // [O, K] (+)= [O, P] · [K, P]ᵀ
                gemm((o, k, p), &mut dw, k, local > 0, dyn_, (p, 1), patches, (1, p), inner_parallel);
            }
            if let Some(dx) = dx.as_deref_mut() {
                let dxn = &mut dx[local * chw..(local + 1) * chw];
                if g.pointwise() {
                    // [C, P] = [O, C]ᵀ · [O, P]
                    gemm((k, p, o), dxn, p, false, w, (1, k), dyn_, (p, 1), inner_parallel);
                } else {
                    // [K, P] = [O, K]ᵀ · [O, P], then the patches added back.
                    gemm((k, p, o), &mut col, p, false, w, (1, k), dyn_, (p, 1), inner_parallel);
                    col2im(&col, g, dxn);
                }
            }
        }
        dw
    };
    let mut dx = want_dx.then(|| vec![0f32; x.len()]);
    let partial: Vec<Vec<f32>> = match dx.as_mut() {
        Some(dx) => dx.par_chunks_mut(per_task * chw).enumerate().map(|(t, chunk)| work(t, Some(chunk))).collect(),
        None => (0..tasks).into_par_iter().map(|t| work(t, None)).collect(),
    };
    let dw = want_dw.then(|| {
        let mut total = vec![0f32; o * k];
        for part in &partial {
            for (t, v) in total.iter_mut().zip(part) {
                *t += v;
            }
        }
        total
    });
    (dx, dw)
}
// ANCHOR_END: backward

/// What the backward pass keeps.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    geometry: ConvGeometry,
}

#[derive(Debug)]
struct ConvNode;

#[derive(Debug)]
struct ConvBiasNode;

/// Our backward passes run so far (the tests check that the layer took our route).
#[cfg(test)]
static BACKWARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn gradients(s: &Saved, dy: &FlexTensor, want_dx: bool, want_dw: bool) -> (Option<FlexTensor>, Option<FlexTensor>) {
    #[cfg(test)]
    BACKWARDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (dx, dw) = conv2d_backward(values(&s.x), values(&s.w), values(dy), &s.geometry, want_dx, want_dw);
    let tensor =
        |v: Vec<f32>, like: &FlexTensor| FlexTensor::from_data(TensorData::new(v, like.layout().shape().clone()));
    (dx.map(|v| tensor(v, &s.x)), dw.map(|v| tensor(v, &s.w)))
}

impl Backward<Cpu, 2> for ConvNode {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw] = ops.parents;
        let dy = contiguous(&grads.consume::<Cpu>(&ops.node));
        let (dx, dw) = gradients(&ops.state, &dy, px.is_some(), pw.is_some());
        if let (Some(node), Some(dx)) = (px, dx) {
            grads.register::<Cpu>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (pw, dw) {
            grads.register::<Cpu>(node.id, dw);
        }
    }
}

impl Backward<Cpu, 3> for ConvBiasNode {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pw, pb] = ops.parents;
        let dy = contiguous(&grads.consume::<Cpu>(&ops.node));
        let (dx, dw) = gradients(&ops.state, &dy, px.is_some(), pw.is_some());
        if let Some(node) = pb {
            let g = &ops.state.geometry;
            let (o, p) = (g.out_channels, g.positions());
            let mut db = vec![0f64; o];
            for image in values(&dy).chunks(o * p) {
                for (d, plane) in db.iter_mut().zip(image.chunks(p)) {
                    *d += plane.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            let db: Vec<f32> = db.into_iter().map(|v| v as f32).collect();
            grads.register::<Cpu>(node.id, FlexTensor::from_data(TensorData::new(db, [o])));
        }
        if let (Some(node), Some(dx)) = (px, dx) {
            grads.register::<Cpu>(node.id, dx);
        }
        if let (Some(node), Some(dw)) = (pw, dw) {
            grads.register::<Cpu>(node.id, dw);
        }
    }
}

// ANCHOR: conv2d
/// `conv.forward(x)`, with our backward pass on the CPU backend under autodiff.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        _ => return conv.forward(x), // `Same` or asymmetric: burn's own
    };
    // Only the autodiff CPU backend takes our route (decided by type, before any tensor is
    // touched: a second reference to `x` would keep burn-flex from reusing its buffer).
    let autodiff_cpu = std::any::TypeId::of::<FloatTensor<B>>() == std::any::TypeId::of::<FloatTensor<CpuAutodiff>>();
    if !autodiff_cpu || conv.groups != 1 {
        return conv.forward(x);
    }
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, 1);
    let weight = conv.weight.val().into_primitive().tensor();
    let bias = conv.bias.as_ref().map(|b| b.val().into_primitive().tensor());
    let (xa, wa) = match (route(x.into_primitive().tensor()), route(weight)) {
        (Route::CpuAutodiff(xa), Route::CpuAutodiff(wa)) => (xa, wa),
        _ => unreachable!("the autodiff CPU backend, by type"),
    };
    let ba = match bias.map(route) {
        None => None,
        Some(Route::CpuAutodiff(b)) => Some(b),
        Some(_) => unreachable!("the bias is on the weight's backend"),
    };
    let float = |t: FlexTensor| Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(t));
    let inner_bias = ba.as_ref().map(|b| Tensor::<Cpu, 1>::from_primitive(TensorPrimitive::Float(b.primitive.clone())));
    let y = burn_conv2d(float(xa.primitive.clone()), float(wa.primitive.clone()), inner_bias, options.clone());
    let y: FlexTensor = y.into_primitive().tensor();
    let saved = || Saved {
        x: contiguous(&xa.primitive),
        w: contiguous(&wa.primitive),
        geometry: ConvGeometry::new(
            xa.primitive.layout().shape().dims(),
            wa.primitive.layout().shape().dims(),
            conv.stride,
            padding,
            conv.dilation,
        ),
    };
    let out: FloatTensor<CpuAutodiff> = match ba {
        None => {
            match ConvNode.prepare::<NoCheckpointing>([xa.node.clone(), wa.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(saved(), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
        Some(b) => {
            let parents = [xa.node.clone(), wa.node.clone(), b.node.clone()];
            match ConvBiasNode.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(saved(), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(back::<B, _>(out)))
}
// ANCHOR_END: conv2d

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, random};
    use super::*;
    use burn::module::{AutodiffModule, Param};
    use burn::nn::conv::Conv2dConfig;

    use crate::backend::cpu_device;

    /// Ours against burn-flex's convolution backward, values and gradients, relative to the
    /// largest magnitude.
    const CONV_TOLERANCE: f32 = 1e-5;

    type T<const D: usize> = Tensor<CpuAutodiff, D>;

    /// (N, C, H, W, O, kernel, stride, padding, dilation, bias)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize, bool);

    /// Every case: forward equal, and the gradients of `Σ y·r` (r random) with respect to the
    /// input, the weight and the bias equal burn's own.
    #[test]
    fn gradients_equal_burns() {
        // (N, C, H, W, O, kernel, stride, padding, dilation, bias)
        let cases: [Case; 8] = [
            (3, 5, 9, 7, 4, 3, 1, 1, 1, true),    // the U-Net's 3×3
            (2, 4, 10, 10, 6, 3, 2, 1, 1, false), // ResNet's strided 3×3
            (3, 6, 5, 4, 7, 1, 1, 0, 1, false),   // bottleneck 1×1 (no patches)
            (2, 6, 9, 9, 3, 1, 2, 0, 1, false),   // strided 1×1 shortcut
            (1, 3, 16, 16, 4, 7, 2, 3, 1, false), // the stem, one image
            (4, 2, 8, 6, 3, 3, 1, 2, 2, true),    // dilated
            (5, 3, 6, 6, 2, 3, 1, 0, 1, true),    // no padding
            (1, 2, 3, 3, 2, 5, 1, 2, 1, true),    // kernel larger than the input's reach
        ];
        let device = cpu_device();
        for (case, &(n, c, h, w, o, k, s, p, d, bias)) in cases.iter().enumerate() {
            let seed = 10 * case as u64;
            let mut conv: Conv2d<CpuAutodiff> = Conv2dConfig::new([c, o], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_dilation([d, d])
                .with_bias(bias)
                .init(&device);
            conv.weight = Param::from_tensor(random([o, c, k, k], seed + 1).require_grad());
            if bias {
                conv.bias = Some(Param::from_tensor(random([o], seed + 2).require_grad()));
            }
            let x: T<4> = random([n, c, h, w], seed + 3).require_grad();
            let ours = conv2d(&conv, x.clone());
            let theirs = conv.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims(), "case {case}");
            assert!(max_rel(&ours, &theirs) <= CONV_TOLERANCE, "case {case}: forward");
            let r = random(ours.dims(), seed + 4);
            let before = BACKWARDS.load(std::sync::atomic::Ordering::SeqCst);
            let g_ours = (ours * r.clone()).sum().backward();
            assert!(BACKWARDS.load(std::sync::atomic::Ordering::SeqCst) > before, "case {case}: our backward ran");
            let g_theirs = (theirs * r).sum().backward();
            let grad = |t: &T<4>, g: &<CpuAutodiff as burn::tensor::backend::AutodiffBackend>::Gradients| {
                T::<4>::from_inner(t.grad(g).unwrap())
            };
            let check = |what: &str, a: T<4>, b: T<4>| {
                let e = max_rel(&a, &b);
                assert!(e <= CONV_TOLERANCE, "case {case}: {what} differs by {e:e}");
            };
            check("∂x", grad(&x, &g_ours), grad(&x, &g_theirs));
            let wv = conv.weight.val();
            check("∂W", grad(&wv, &g_ours), grad(&wv, &g_theirs));
            if let Some(b) = &conv.bias {
                let bv = b.val();
                let (a, t) = (bv.grad(&g_ours).unwrap(), bv.grad(&g_theirs).unwrap());
                let e = max_rel(&T::<1>::from_inner(a), &T::<1>::from_inner(t));
                assert!(e <= CONV_TOLERANCE, "case {case}: ∂b differs by {e:e}");
            }
        }
    }

    /// A frozen (detached) input gets no gradient and the weight still does; without autodiff
    /// the layer is burn's.
    #[test]
    fn frozen_inputs_and_plain_tensors() {
        let device = cpu_device();
        let conv: Conv2d<CpuAutodiff> =
            Conv2dConfig::new([3, 2], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(&device);
        let x: T<4> = random([2, 3, 5, 5], 7);
        let grads = conv2d(&conv, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        assert!(conv.weight.val().grad(&grads).is_some());
        let plain = conv.valid();
        let xi = x.inner();
        let a = conv2d(&plain, xi.clone()).into_data().to_vec::<f32>().unwrap();
        let b = plain.forward(xi).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
    }
}
