//! Backends: the CPU backend every test and CI run uses, and the CUDA backend behind the
//! `cuda` feature.
//!
//! burn is pinned to 0.21.0: the newest release whose CUDA backend compiles offline (cubecl
//! 0.10 generates CUDA C++ that NVRTC compiles at run time; 0.22's backend downloads an LLVM
//! bundle at build time). Spec: `hyperparameters.md` §4 (the reference ran fp32).
//! **Deviation:** none — fp32 everywhere, as the reference.

use burn::backend::{Autodiff, NdArray};

/// The CPU backend: burn's ndarray backend in f32 (multi-threaded, SIMD).
pub type Cpu = NdArray<f32>;
/// The CPU backend with reverse-mode automatic differentiation.
pub type CpuAutodiff = Autodiff<Cpu>;

/// The CPU device (there is one).
pub fn cpu_device() -> burn::tensor::Device<Cpu> {
    Default::default()
}

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
    use burn::tensor::Tensor;

    /// Autodiff's division backward multiplies by `recip`. burn-ndarray's `simd` feature makes
    /// `recip` an `rcpps` approximation (about 5e-5 relative), which breaks gradient parity with
    /// the reference; the feature must stay off.
    #[test]
    fn recip_is_exact_enough_for_gradient_parity() {
        let xs: Vec<f32> = (1..4096).map(|i| i as f32 * 0.0137).collect();
        let got =
            Tensor::<Cpu, 1>::from_floats(xs.as_slice(), &cpu_device()).recip().into_data().to_vec::<f32>().unwrap();
        let worst = xs.iter().zip(&got).map(|(x, r)| (*r as f64 * *x as f64 - 1.0).abs()).fold(0.0, f64::max);
        assert!(worst < 2e-7, "recip relative error {worst:e}: is burn's `simd` feature on?");
    }
}
