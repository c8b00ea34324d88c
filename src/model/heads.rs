//! Projection heads: encoder features into the shared 128-d space.
//!
//! `g(x) = BN'(W₂ ReLU(BN(W₁ x + b₁)) + b₂)` with `BN'` without affine parameters. The global
//! heads map `[N, D]` to `[N, d]`; the local heads apply the same per token (the reference's
//! 1×1 Conv1d), so their BatchNorm statistics pool batch × tokens — padded word slots
//! included.
//!
//! Book: "Projection heads, prototypes and the whole model" (key layout `head.{0,1,3,4}`).
//! Reference: `mgca/models/backbones/encoder.py`, `GlobalEmbedding` and `LocalEmbedding`, at
//! HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none: the BatchNorms have PyTorch's semantics ([`super::batchnorm`]); train
//! or eval behaviour is chosen per call ([`Mode`]).

use burn::module::{Module, Param};

use super::batchnorm::BatchNorm;
pub use super::batchnorm::Mode;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};

use crate::weights::{WeightError, WeightReader};

/// A projection head: Linear, BatchNorm (affine), ReLU, Linear, BatchNorm (not affine).
#[derive(Module, Debug)]
pub struct ProjectionHead<B: Backend> {
    fc1: Linear<B>,
    bn1: BatchNorm<B>,
    fc2: Linear<B>,
    bn2: BatchNorm<B>,
}

impl<B: Backend> ProjectionHead<B> {
    /// A freshly initialised head `D → H → d` (reference: `D → 2048 → 128`).
    pub fn new(input: usize, hidden: usize, output: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(input, hidden).init(device),
            bn1: BatchNorm::new(hidden, true, device),
            fc2: LinearConfig::new(hidden, output).init(device),
            bn2: BatchNorm::new(output, false, device),
        }
    }

    /// The global head on `[N, D]`. `-> [N, d]`
    pub fn forward(&self, x: Tensor<B, 2>, mode: Mode) -> Tensor<B, 2> {
        let h = relu(self.bn1.forward(self.fc1.forward(x), mode));
        self.bn2.forward(self.fc2.forward(h), mode)
    }

    /// The local head on `[N, T, D]`, per token, statistics over batch × tokens. `-> [N, T, d]`
    pub fn forward_tokens(&self, x: Tensor<B, 3>, mode: Mode) -> Tensor<B, 3> {
        let [n, t, d] = x.dims();
        let y = self.forward(x.reshape([n * t, d]), mode);
        let out = y.dims()[1];
        y.reshape([n, t, out])
    }

    /// Load `{prefix}.0` (Linear `[H, D]` or Conv1d `[H, D, 1]`), `{prefix}.1` (BatchNorm with
    /// affine parameters and running statistics), `{prefix}.3`, `{prefix}.4` (running
    /// statistics only).
    pub fn load(prefix: &str, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        let first = weights.shape(&format!("{prefix}.0.weight"))?;
        let second = weights.shape(&format!("{prefix}.3.weight"))?;
        let (hidden, input, output) = (first[0], first[1], second[0]);
        let mut head = Self::new(input, hidden, output, device);
        let conv = first.len() == 3;
        for (index, layer, (i, o)) in [(0, &mut head.fc1, (input, hidden)), (3, &mut head.fc2, (hidden, output))] {
            let key = format!("{prefix}.{index}");
            if conv {
                let w: Tensor<B, 3> = weights.tensor(device, &format!("{key}.weight"), &[o, i, 1])?;
                layer.weight = Param::from_tensor(w.reshape([o, i]).transpose());
                layer.bias = Some(weights.param(device, &format!("{key}.bias"), &[o])?);
            } else {
                weights.linear(device, &key, i, o, layer)?;
            }
        }
        head.bn1 = BatchNorm::load(&format!("{prefix}.1"), hidden, true, weights, device)?;
        head.bn2 = BatchNorm::load(&format!("{prefix}.4"), output, false, weights, device)?;
        Ok(head)
    }

    /// `(input, hidden, output)` widths.
    pub fn dims(&self) -> (usize, usize, usize) {
        let [input, hidden] = self.fc1.weight.dims();
        (input, hidden, self.fc2.weight.dims()[1])
    }

    /// The running statistics `(mean, var)` of the two BatchNorms.
    pub fn running_stats(&self) -> [(Tensor<B, 1>, Tensor<B, 1>); 2] {
        [self.bn1.running_stats(), self.bn2.running_stats()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{Agreement, SHALLOW};
    use crate::tensor_file::{HostTensor, TensorFile};
    use crate::testing;

    /// Heads built as the reference builds them, run by PyTorch (golden/pytorch/heads/make_heads.py): the
    /// train-mode outputs, the running statistics after that step (unbiased variance), and the
    /// eval-mode outputs, for the global (Linear) and the local (Conv1d, padded tokens) head.
    #[test]
    fn heads_match_pytorch() {
        let file = TensorFile::read(&testing::golden("pytorch/heads/heads.safetensors")).unwrap();
        let dev = cpu_device();
        let tol = SHALLOW;
        let check = |name: &str, ours: HostTensor| {
            let a = Agreement::measure(name, &ours, &file.tensors[name], tol);
            eprintln!("{a}");
            assert!(a.ok, "{a}");
        };
        for kind in ["global", "local"] {
            let mut weights = WeightReader::new(file.clone());
            let head = ProjectionHead::<Cpu>::load(&format!("{kind}.head"), &mut weights, &dev).unwrap();
            let (train, eval) = if kind == "global" {
                let x = file.tensors["in.global"].to_tensor::<Cpu, 2>(&dev);
                let train = HostTensor::from_tensor(head.forward(x.clone(), Mode::Train));
                (train, HostTensor::from_tensor(head.forward(x, Mode::Eval)))
            } else {
                let x = file.tensors["in.local"].to_tensor::<Cpu, 3>(&dev);
                let train = HostTensor::from_tensor(head.forward_tokens(x.clone(), Mode::Train));
                (train, HostTensor::from_tensor(head.forward_tokens(x, Mode::Eval)))
            };
            check(&format!("train.{kind}"), train);
            for ((mean, var), index) in head.running_stats().into_iter().zip([1, 4]) {
                check(&format!("after.{kind}.head.{index}.running_mean"), HostTensor::from_tensor(mean));
                check(&format!("after.{kind}.head.{index}.running_var"), HostTensor::from_tensor(var));
            }
            check(&format!("eval.{kind}"), eval);
        }
    }
}
