//! BatchNorm with PyTorch's semantics, for the projection heads (`BatchNorm1d`) and the
//! ResNet-50 backbone (`BatchNorm2d`).
//!
//! Training: `y = γ (x − μ_B) / √(σ²_B + ε) + β` with the biased batch variance `σ²_B`, and
//! `running ← (1 − m)·running + m·stat` with the *unbiased* variance; evaluation uses the
//! running statistics. Statistics pool every dimension but the channel dimension (dim 1):
//! rows for `[N, C]`, batch × height × width for `[N, C, H, W]`.
//!
//! Book: "Projection heads, prototypes and the whole model" (heads: momentum 0.1, eps 1e-5)
//! and "Image encoder: ResNet-50" (BatchNorm2d). Reference: `mgca/models/backbones/encoder.py`,
//! `GlobalEmbedding` and `LocalEmbedding` (`nn.BatchNorm1d`), and `cnn_backbones.py`,
//! `resnet_50` (torchvision's `BatchNorm2d`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none. burn's own `BatchNorm` keeps the biased variance as its running estimate
//! and has no non-affine form, so it cannot reproduce PyTorch's numbers; hence this module.
//! Train or eval behaviour is chosen per call ([`Mode`]), never stored.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Tensor, backend::Backend};

use crate::kernels;
use crate::weights::{WeightError, WeightReader};

/// Whether BatchNorm uses and updates batch statistics (training) or uses running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics; running statistics updated.
    Train,
    /// Batch statistics; running statistics left as they are. For every shard of a virtual
    /// batch but the first: the reference's DDP broadcasts rank 0's buffers before each
    /// forward, so only the first shard's statistics survive a step.
    TrainShard,
    /// Running statistics.
    Eval,
}

/// BatchNorm over the channel dimension (dim 1) of `[N, C]` or `[N, C, H, W]`.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    pub(crate) gamma: Option<Param<Tensor<B, 1>>>,
    pub(crate) beta: Option<Param<Tensor<B, 1>>>,
    pub(crate) running_mean: RunningState<Tensor<B, 1>>,
    pub(crate) running_var: RunningState<Tensor<B, 1>>,
    momentum: f64,
    epsilon: f64,
}

/// `[C]` as a tensor that broadcasts over the channel dimension of a rank-`D` tensor.
fn per_channel<B: Backend, const D: usize>(v: Tensor<B, 1>) -> Tensor<B, D> {
    let c = v.dims()[0];
    let mut shape = [1; D];
    shape[1] = c;
    v.reshape(shape)
}

/// The mean over every dimension but the channel dimension, kept as size-1 dimensions.
fn channel_mean<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    (0..D).filter(|&d| d != 1).fold(x, |acc, d| acc.mean_dim(d))
}

// ANCHOR: batchnorm
impl<B: Backend> BatchNorm<B> {
    /// A fresh BatchNorm: γ = 1, β = 0 (if affine), running mean 0 and variance 1.
    pub fn new(channels: usize, affine: bool, device: &B::Device) -> Self {
        let ones = || Tensor::<B, 1>::ones([channels], device);
        Self {
            gamma: affine.then(|| Param::from_tensor(ones())),
            beta: affine.then(|| Param::from_tensor(Tensor::zeros([channels], device))),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(ones()),
            momentum: 0.1,
            epsilon: 1e-5,
        }
    }

    /// Normalise `[N, C]` or `[N, C, H, W]` per channel.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, mode: Mode) -> Tensor<B, D> {
        let dims = x.dims();
        let count = dims.iter().product::<usize>() / dims[1]; // values per channel
        // The CPU backend's fused kernels (one pass each way); elsewhere burn's operations below.
        let x = match self.forward_fused(x, mode, count) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let (mean, var) = match mode {
            Mode::TrainShard => {
                let mean = channel_mean(x.clone()); // [1, C, (1, 1)]
                let var = channel_mean((x.clone() - mean.clone()).square()); // biased
                (mean, var)
            }
            Mode::Train => {
                let mean = channel_mean(x.clone()); // [1, C, (1, 1)]
                let var = channel_mean((x.clone() - mean.clone()).square()); // biased
                self.update_running(mean.clone().reshape([-1]), var.clone().reshape([-1]), count);
                (mean, var)
            }
            Mode::Eval => (per_channel(self.running_mean.value_sync()), per_channel(self.running_var.value_sync())),
        };
        let y = (x - mean) / var.add_scalar(self.epsilon).sqrt();
        match (&self.gamma, &self.beta) {
            (Some(g), Some(b)) => y * per_channel(g.val()) + per_channel(b.val()),
            _ => y,
        }
    }

    /// `running ← (1 − m)·running + m·stat`, with the unbiased variance; the batch statistics
    /// `[C]` are detached here.
    fn update_running(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: usize) {
        let unbiased = var.detach().mul_scalar(count as f64 / (count.max(2) - 1) as f64);
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
        let running_var = self.running_var.value_sync().mul_scalar(1.0 - m) + unbiased.mul_scalar(m);
        self.running_mean.update(running_mean.detach());
        self.running_var.update(running_var.detach());
    }

    /// The same through `kernels::batch_norm` on the CPU backend; `Err(x)` elsewhere.
    fn forward_fused<const D: usize>(
        &self,
        x: Tensor<B, D>,
        mode: Mode,
        count: usize,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if !kernels::on_cpu::<B>() {
            return Err(x);
        }
        let channels = x.dims()[1];
        let device = x.device();
        let gamma = self.gamma.as_ref().map_or_else(|| Tensor::ones([channels], &device), |g| g.val());
        let beta = self.beta.as_ref().map_or_else(|| Tensor::zeros([channels], &device), |b| b.val());
        match mode {
            Mode::Train | Mode::TrainShard => {
                let (y, mean, var) = kernels::batch_norm::batch_norm_train(x, gamma, beta, self.epsilon)?;
                if mode == Mode::Train {
                    self.update_running(mean, var, count);
                }
                Ok(y)
            }
            Mode::Eval => {
                // y = s·x + t with s = γ/√(σ² + ε), t = β − μ·s, as PyTorch's CPU inference.
                let scale = gamma * self.running_var.value_sync().add_scalar(self.epsilon).sqrt().recip();
                let shift = beta - self.running_mean.value_sync() * scale.clone();
                kernels::batch_norm::channel_affine(x, scale, shift)
            }
        }
    }
}
// ANCHOR_END: batchnorm

impl<B: Backend> BatchNorm<B> {
    /// Load a torch BatchNorm at `prefix`: `weight` and `bias` when `affine`, `running_mean`,
    /// `running_var`, and `num_batches_tracked` when present (it only matters for a momentum
    /// of `None`, which MGCA never uses, so it is read and set aside).
    pub fn load(
        prefix: &str,
        channels: usize,
        affine: bool,
        weights: &mut WeightReader,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let key = |name: &str| format!("{prefix}.{name}");
        let mut bn = Self::new(channels, affine, device);
        if affine {
            bn.gamma = Some(weights.param(device, &key("weight"), &[channels])?);
            bn.beta = Some(weights.param(device, &key("bias"), &[channels])?);
        }
        bn.running_mean = RunningState::new(weights.tensor(device, &key("running_mean"), &[channels])?);
        bn.running_var = RunningState::new(weights.tensor(device, &key("running_var"), &[channels])?);
        weights.set_aside(&key("num_batches_tracked"));
        Ok(bn)
    }

    /// The running statistics `(mean, var)`.
    pub fn running_stats(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        (self.running_mean.value_sync(), self.running_var.value_sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::SAME_COMPUTATION;

    /// The same statistics over another layout: only the order of float32 sums differs.
    fn same() -> burn::tensor::Tolerance<f32> {
        burn::tensor::Tolerance::absolute(SAME_COMPUTATION.abs as f32)
    }
    use crate::backend::{Cpu, cpu_device};
    use burn::tensor::Distribution;

    #[test]
    fn a_non_affine_batchnorm_has_no_affine_parameters() {
        let (plain, affine) =
            (BatchNorm::<Cpu>::new(4, false, &cpu_device()), BatchNorm::<Cpu>::new(4, true, &cpu_device()));
        assert!(plain.gamma.is_none() && plain.beta.is_none());
        // γ and β: 2 × 4 values more (running statistics are counted for both).
        assert_eq!(affine.num_params() - plain.num_params(), 8);
    }

    /// A spatial BatchNorm is the row BatchNorm of the same values laid out `[N·H·W, C]`.
    #[test]
    fn spatial_statistics_pool_batch_and_pixels() {
        let dev = cpu_device();
        let x = Tensor::<Cpu, 4>::random([3, 5, 4, 2], Distribution::Normal(1.0, 2.0), &dev);
        let rows = x.clone().permute([0, 2, 3, 1]).reshape([3 * 4 * 2, 5]);
        let (spatial, flat) = (BatchNorm::<Cpu>::new(5, true, &dev), BatchNorm::<Cpu>::new(5, true, &dev));
        let a = spatial.forward(x, Mode::Train).permute([0, 2, 3, 1]).reshape([24, 5]);
        let b = flat.forward(rows, Mode::Train);
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), same());
        let (ma, va) = spatial.running_stats();
        let (mb, vb) = flat.running_stats();
        ma.into_data().assert_approx_eq::<f32>(&mb.into_data(), same());
        va.into_data().assert_approx_eq::<f32>(&vb.clone().into_data(), same());
        // The running variance moved towards the unbiased variance of 24 values per channel.
        let v: Vec<f32> = vb.into_data().to_vec().unwrap();
        assert!(v.iter().all(|&v| v > 1.0), "{v:?}");
    }

    /// A later shard normalises like the first but leaves the running statistics alone.
    #[test]
    fn a_later_shard_uses_batch_statistics_without_updating() {
        let dev = cpu_device();
        let x = Tensor::<Cpu, 2>::random([6, 3], Distribution::Normal(2.0, 3.0), &dev);
        let (a, b) = (BatchNorm::<Cpu>::new(3, true, &dev), BatchNorm::<Cpu>::new(3, true, &dev));
        let ya = a.forward(x.clone(), Mode::Train);
        let yb = b.forward(x, Mode::TrainShard);
        assert_eq!(ya.into_data(), yb.into_data());
        let (mean, var) = b.running_stats();
        assert_eq!(mean.into_data().to_vec::<f32>().unwrap(), vec![0.0; 3]);
        assert_eq!(var.into_data().to_vec::<f32>().unwrap(), vec![1.0; 3]);
        assert_ne!(a.running_stats().0.into_data().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    }
}
