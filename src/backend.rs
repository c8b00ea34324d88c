//! Backends: the CPU backend every test and CI run uses, and the CUDA backend behind the
//! `cuda` feature.
//!
//! burn is pinned to 0.21.0: the newest release whose CUDA backend compiles offline (cubecl
//! 0.10 generates CUDA C++ that NVRTC compiles at run time; 0.22's backend downloads an LLVM
//! bundle at build time). Book: "Building, backends and numerics" (the reference ran fp32,
//! Lightning's default precision).
//!
//! **Deviation:** none — fp32 everywhere, as the reference.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

/// The CPU backend: burn-flex in f32 (SIMD kernels, rayon threads, gemm matrix products).
pub type Cpu = Flex;
/// The CPU backend with reverse-mode automatic differentiation.
pub type CpuAutodiff = Autodiff<Cpu>;

/// Tell glibc's allocator to keep large freed buffers for reuse instead of returning them to
/// the system. By default a buffer over 128 KiB–32 MiB is a fresh `mmap` each time, so every
/// activation and gradient of a training step costs page faults and zeroing by the kernel
/// (19 % of a ViT-B/16 forward + backward on the CPU backend); with this the step is 11 %
/// faster. Peak memory is unchanged: the heap holds what the step freed, which the next step
/// reuses. Binaries and benches call it first thing; elsewhere (not glibc) it does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Buffers below 1 GiB come from the heap; the heap is trimmed above 2 GiB free.
        const MMAP_THRESHOLD: i32 = 1 << 30;
        const TRIM_THRESHOLD: i32 = i32::MAX;
        // SAFETY: mallopt only sets allocator parameters; it is called before any thread of
        // ours allocates concurrently, and glibc serialises it with the allocator anyway.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Give the heap's free memory back to the system (before measuring a peak, say).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; no allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The CPU device (there is one).
pub fn cpu_device() -> burn::tensor::Device<Cpu> {
    Default::default()
}

// ANCHOR: link
/// Backends on which a gradient computed outside burn's autodiff (by a fused kernel) can be
/// attached to a tensor of the graph.
pub trait GradientLink: Backend {
    /// Move `x`'s values out (without a copy when nothing else holds them) and return a handle
    /// that keeps `x`'s place in the autodiff graph.
    fn take_values(x: FloatTensor<Self>) -> (TensorData, FloatTensor<Self>);
    /// A `[1]` tensor holding 0 whose gradient with respect to the tensor behind `handle` is
    /// `grad` times the upstream gradient. Adding it to a loss computed elsewhere makes
    /// backpropagation deliver `grad` into that tensor and on to whatever produced it. Without
    /// autodiff it is only a 0.
    fn gradient_link(handle: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// A tensor's place in the autodiff graph, without its values (see [`take_values`]).
pub struct LinkHandle<B: GradientLink> {
    handle: FloatTensor<B>,
    dims: Vec<usize>,
}

/// Split `x` into its values, as `f32` in row-major order, and a [`LinkHandle`] for
/// [`gradient_link`].
pub fn take_values<B: GradientLink, const D: usize>(x: Tensor<B, D>) -> (Vec<f32>, LinkHandle<B>) {
    let dims = x.dims().to_vec();
    let (data, handle) = B::take_values(x.into_primitive().tensor());
    let values = data.convert::<f32>().into_vec::<f32>().expect("float tensor");
    (values, LinkHandle { handle, dims })
}

/// `link(x, g)`: 0, with gradient `g` (shaped like `x`) for the tensor behind `handle`.
pub fn gradient_link<B: GradientLink, const D: usize>(handle: LinkHandle<B>, grad: Tensor<B, D>) -> Tensor<B, 1> {
    assert_eq!(handle.dims, grad.dims().to_vec(), "a gradient has its tensor's shape");
    let link = B::gradient_link(handle.handle, grad.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(link))
}

fn zero<B: Backend>(x: &FloatTensor<B>) -> FloatTensor<B> {
    B::float_zeros(Shape::new([1]), &B::float_device(x), FloatDType::from(x.dtype()))
}

fn read<B: Backend>(x: FloatTensor<B>) -> TensorData {
    burn::tensor::try_read_sync(B::float_into_data(x))
        .expect("a synchronous read on this platform")
        .expect("reading a tensor")
}

impl<B: GradientLink, C: CheckpointStrategy> GradientLink for Autodiff<B, C> {
    fn take_values(x: FloatTensor<Self>) -> (TensorData, FloatTensor<Self>) {
        let mut handle = x;
        let placeholder = zero::<B>(&handle.primitive);
        let values = std::mem::replace(&mut handle.primitive, placeholder);
        (read::<B>(values), handle)
    }

    fn gradient_link(handle: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Link;

        impl<B: Backend> Backward<B, 1> for Link {
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [parent] = ops.parents;
                let upstream = grads.consume::<B>(&ops.node); // [1]
                let grad = ops.state;
                if let Some(node) = parent {
                    // The upstream gradient of a loss term is a scalar, usually exactly 1 (λ = 1):
                    // then the precomputed gradient is registered as it is, without a pass over it.
                    let scale = read::<B>(upstream).convert::<f32>().into_vec::<f32>().expect("f32")[0];
                    let grad = if scale == 1.0 { grad } else { B::float_mul_scalar(grad, scale.into()) };
                    grads.register::<B>(node.id, grad);
                }
            }
        }

        let out = zero::<B>(&handle.primitive);
        match Link.prepare::<C>([handle.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(grad.primitive, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// Backends without autodiff: the values leave as they are, and the link is a plain 0.
macro_rules! link_without_autodiff {
    ($backend:ty) => {
        impl GradientLink for $backend {
            fn take_values(x: FloatTensor<Self>) -> (TensorData, FloatTensor<Self>) {
                let placeholder = zero::<Self>(&x);
                (read::<Self>(x), placeholder)
            }

            fn gradient_link(handle: FloatTensor<Self>, _grad: FloatTensor<Self>) -> FloatTensor<Self> {
                zero::<Self>(&handle)
            }
        }
    };
}

link_without_autodiff!(Cpu);
#[cfg(feature = "cuda")]
link_without_autodiff!(Cuda);
// ANCHOR_END: link

/// The CUDA backend (f32), compiled only with `--features cuda`.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda<f32, i32>;
/// The CUDA backend with automatic differentiation.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = Autodiff<Cuda>;

/// Whether a CUDA driver library can be loaded on this machine. Creating a CUDA device
/// without one panics inside burn's device thread, so callers check this first.
#[cfg(feature = "cuda")]
pub fn cuda_driver_present() -> bool {
    ["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
        || std::env::var_os("LD_LIBRARY_PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("libcuda.so.1").exists()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Autodiff's division backward multiplies by `recip`. An `rcpps`-style approximation
    /// (about 5e-5 relative, as burn-ndarray's `simd` feature had) would break gradient parity
    /// with the reference; the CPU backend's `recip` must be a true division.
    #[test]
    fn recip_is_exact_enough_for_gradient_parity() {
        let xs: Vec<f32> = (1..4096).map(|i| i as f32 * 0.0137).collect();
        let got =
            Tensor::<Cpu, 1>::from_floats(xs.as_slice(), &cpu_device()).recip().into_data().to_vec::<f32>().unwrap();
        let worst = xs.iter().zip(&got).map(|(x, r)| (*r as f64 * *x as f64 - 1.0).abs()).fold(0.0, f64::max);
        assert!(worst < 2e-7, "recip relative error {worst:e}: is the backend's recip approximate?");
    }

    /// The link is 0 and delivers its gradient, scaled by the upstream gradient, through the
    /// operations that produced `x`.
    #[test]
    fn gradient_link_delivers_its_gradient() {
        let dev = cpu_device();
        let a = Tensor::<CpuAutodiff, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &dev).require_grad();
        let x = a.clone().mul_scalar(2.0); // da = 2 · dx
        let g = Tensor::<CpuAutodiff, 2>::from_floats([[0.5, -1.0], [0.25, 4.0]], &dev);
        let (values, handle) = take_values(x);
        assert_eq!(values, vec![2.0, 4.0, 6.0, 8.0]);
        let link = gradient_link(handle, g);
        assert_eq!(link.clone().into_scalar(), 0.0);
        let grads = link.mul_scalar(3.0).backward();
        let da = a.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(da, vec![3.0, -6.0, 1.5, 24.0]);
    }
}
