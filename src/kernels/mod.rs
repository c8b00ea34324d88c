//! Fused CPU kernels for the encoders' element-wise layers: GELU, LayerNorm, softmax over the
//! last axis and BatchNorm over the channel axis, each with its backward pass.
//!
//! On the CPU backend (burn-flex) each public function here runs one pass over its input,
//! split across rayon's threads and vectorised for AVX-512 or AVX2 + FMA (chosen at run time,
//! with a portable fallback). Under autodiff each is one graph node with its own backward
//! kernel, where burn 0.21 builds LayerNorm and softmax from five to eight element-wise nodes
//! and evaluates GELU's `erf` one scalar at a time. On every other backend (CUDA) the functions
//! are exactly burn's own operations, so nothing changes there.
//!
//! The kernels on slices ([`gelu::gelu_forward`], [`layer_norm::layer_norm_forward`],
//! [`softmax::softmax_forward`] and their backward passes) know nothing of mgca: they are shaped
//! to be offered to burn-flex as they are.
//!
//! Book: "Build, backends and speed", section "Our kernels". Reference: the operations they
//! replace are PyTorch's `F.gelu` (exact, erf form), `nn.LayerNorm` and `softmax`, as timm's
//! `VisionTransformer` and transformers' `BertModel` call them.
//!
//! **Deviation:** none in meaning. `erf` and `exp` are evaluated by our own polynomial
//! approximations (absolute error below 3e-7 on GELU's `Φ`, relative 1e-7 on `exp`); the parity
//! tests of both encoders hold at their unchanged tolerances.

pub mod batch_norm;
pub mod conv2d;
pub mod gelu;
pub mod layer_norm;
mod math;
pub mod softmax;

use std::any::Any;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorData};
use burn_flex::FlexTensor;

use crate::backend::{Cpu, CpuAutodiff};

/// Below this many elements a kernel runs on the calling thread: splitting costs more.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Whether `B` is the CPU backend (with or without autodiff): its tensors live on the host.
pub fn on_cpu<B: burn::tensor::backend::Backend>() -> bool {
    use std::any::TypeId;
    let t = TypeId::of::<FloatTensor<B>>();
    t == TypeId::of::<FloatTensor<Cpu>>() || t == TypeId::of::<FloatTensor<CpuAutodiff>>()
}

/// Move `x` into a `U` when `T` and `U` are the same type (the backend dispatch below).
fn cast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    let mut slot = Some(x);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("untouched")),
    }
}

/// A routed result back as `B`'s tensor (`T` is `B`'s float primitive: the route said so).
fn back<B: burn::tensor::backend::Backend, T: 'static>(x: T) -> FloatTensor<B> {
    cast::<T, FloatTensor<B>>(x).unwrap_or_else(|_| unreachable!("the routed backend's tensor type"))
}

/// Which implementation a float tensor of backend `B` takes.
enum Route<T> {
    /// burn-flex, f32.
    Cpu(FlexTensor),
    /// Autodiff over burn-flex, f32.
    CpuAutodiff(FloatTensor<CpuAutodiff>),
    /// Anything else: burn's own operations.
    Other(T),
}

fn route<T: 'static>(x: T) -> Route<T> {
    let x = match cast::<T, FlexTensor>(x) {
        Ok(t) if t.dtype() == DType::F32 => return Route::Cpu(t),
        Ok(t) => return Route::Other(cast::<FlexTensor, T>(t).unwrap_or_else(|_| unreachable!("same type"))),
        Err(x) => x,
    };
    match cast::<T, FloatTensor<CpuAutodiff>>(x) {
        Ok(t) if t.primitive.dtype() == DType::F32 => Route::CpuAutodiff(t),
        Ok(t) => Route::Other(cast::<FloatTensor<CpuAutodiff>, T>(t).unwrap_or_else(|_| unreachable!("same type"))),
        Err(x) => Route::Other(x),
    }
}

/// The contiguous f32 values of a flex tensor (a copy only when it is a strided view).
fn contiguous(x: &FlexTensor) -> FlexTensor {
    x.to_contiguous()
}

fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A flex tensor holding `values` in `x`'s shape.
fn like(x: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, x.layout().shape().clone()))
}

/// A one-parent autodiff node: `forward` on the values, `state` kept for the backward pass.
fn unary_node<N>(node: N, x: FloatTensor<CpuAutodiff>, out: FlexTensor, state: N::State) -> FloatTensor<CpuAutodiff>
where
    N: Backward<Cpu, 1>,
{
    match node.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// Run `f` on whole rows of `width` values of `input` and the matching part of `output` (of
/// the same length), in parallel blocks of rows when the tensor is large.
fn for_rows(input: &[f32], output: &mut [f32], width: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) {
    use rayon::prelude::*;
    let rows_per_block = (PARALLEL_MIN_ELEMENTS / width.max(1)).max(1);
    if input.len() < PARALLEL_MIN_ELEMENTS {
        f(input, output);
    } else {
        input
            .par_chunks(rows_per_block * width)
            .zip(output.par_chunks_mut(rows_per_block * width))
            .for_each(|(i, o)| f(i, o));
    }
}

/// Define `$name` as a function that runs `$body` compiled for AVX-512, for AVX2 + FMA, or
/// portably, whichever the machine supports (checked at run time).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn v4($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the features `v4` is compiled for were just detected.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
pub(crate) mod testing {
    //! Comparing a kernel with burn's own operations on the autodiff CPU backend.

    use burn::tensor::{Distribution, Tensor};

    use crate::backend::{CpuAutodiff, cpu_device};

    pub fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<CpuAutodiff, D> {
        use burn::tensor::backend::Backend;
        CpuAutodiff::seed(&cpu_device(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), &cpu_device())
    }

    /// The largest absolute difference, relative to the largest magnitude in `b` (at least 1).
    pub fn max_rel<const D: usize>(a: &Tensor<CpuAutodiff, D>, b: &Tensor<CpuAutodiff, D>) -> f32 {
        let a = a.to_data().to_vec::<f32>().expect("f32");
        let b = b.to_data().to_vec::<f32>().expect("f32");
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }
}
