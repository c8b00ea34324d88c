//! ITA — instance-level image–report alignment (symmetric InfoNCE).
//!
//! `S = v tᵀ / τ₁`, `L_i2t = (1/N) Σ_i CE(S[i,:], i)`, `L_t2i = (1/N) Σ_j CE(S[:,j], j)`,
//! `L_ITA = L_i2t + L_t2i`; retrieval `acc@k = (acc_i2t@k + acc_t2i@k) / 2` in percent.
//!
//! Book: "ITA: instance-level alignment". Reference: `mgca/models/mgca/mgca_module.py`,
//! `MGCA.forward` (the global-alignment block) and `MGCA.precision_at_k`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** faithful mode reproduces the reference, which *sums* the two directions
//! ([`Reduction::Sum`]; the paper averages them) and uses τ₁ = 0.07 (the paper lists 0.1).

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::{Reduction, log_sum_exp};

/// Configuration of ITA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItaConfig {
    /// τ₁, the softmax temperature of the instance-level similarity (reference 0.07, paper 0.1).
    pub temperature: f32,
    /// How the image→report and report→image directions are combined (reference: sum).
    pub reduction: Reduction,
}

impl ItaConfig {
    /// The reference implementation's ITA.
    pub fn reference() -> Self {
        Self { temperature: 0.07, reduction: Reduction::Sum }
    }

    /// ITA as the paper describes it.
    pub fn paper() -> Self {
        Self { temperature: 0.1, reduction: Reduction::Mean }
    }
}

/// ITA's loss and the logged retrieval accuracies.
#[derive(Debug, Clone)]
pub struct ItaOutput<B: Backend> {
    /// `L_ITA`. `[1]`
    pub loss: Tensor<B, 1>,
    /// Retrieval acc@1 in percent, mean of both directions (detached). `[1]`
    pub acc1: Tensor<B, 1>,
    /// Retrieval acc@5 in percent, mean of both directions (detached). `[1]`
    pub acc5: Tensor<B, 1>,
}

// ANCHOR: ita
impl ItaConfig {
    /// ITA on L2-normalised global embeddings `v`, `t` (`[N, D]` each).
    pub fn forward<B: Backend>(&self, v: Tensor<B, 2>, t: Tensor<B, 2>) -> ItaOutput<B> {
        let s = v.matmul(t.transpose()).div_scalar(self.temperature); // [N, N]
        let diag = super::batch_diagonal(s.clone().unsqueeze::<3>()).squeeze_dim::<1>(0); // [N]
        let n = diag.dims()[0] as f32;

        let ce_i2t = log_sum_exp(s.clone(), 1).squeeze_dim::<1>(1) - diag.clone(); // [N]
        let ce_t2i = log_sum_exp(s.clone(), 0).squeeze_dim::<1>(0) - diag.clone(); // [N]
        let loss = self.reduction.combine(ce_i2t.sum().div_scalar(n), ce_t2i.sum().div_scalar(n));

        let (acc1, acc5) = retrieval_accuracy(s.detach(), diag.detach());
        ItaOutput { loss, acc1, acc5 }
    }
}

/// Retrieval acc@1 and acc@5 (percent, mean of both directions) of a similarity matrix.
///
/// Sample `i` is retrieved at rank `r` when `r` entries of its row (column) are strictly greater
/// than the diagonal entry; it counts for acc@k when `r < k`. This equals "i is among the top-k
/// indices" of the reference's `topk` up to ties, which have measure zero.
pub fn retrieval_accuracy<B: Backend>(
    s: Tensor<B, 2>,    // [N, N]
    diag: Tensor<B, 1>, // [N]
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let n = diag.dims()[0];
    let rank_i2t = s.clone().greater(diag.clone().unsqueeze_dim::<2>(1).expand([n, n]));
    let rank_t2i = s.greater(diag.unsqueeze_dim::<2>(0).expand([n, n]));
    let rank_i2t = rank_i2t.int().sum_dim(1).squeeze_dim::<1>(1); // [N]
    let rank_t2i = rank_t2i.int().sum_dim(0).squeeze_dim::<1>(0); // [N]
    let acc = |k: i64| {
        let hits = rank_i2t.clone().lower_elem(k).int().sum() + rank_t2i.clone().lower_elem(k).int().sum();
        hits.float().mul_scalar(50.0 / n as f32)
    };
    (acc(1), acc(5))
}
// ANCHOR_END: ita

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::HAND_WORKED;

    fn scalar(t: Tensor<Cpu, 1>) -> f32 {
        t.into_scalar()
    }

    /// The 2 × 2 example worked by hand in the book's ITA chapter.
    #[test]
    fn two_by_two_by_hand() {
        let dev = cpu_device();
        let v = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.6, 0.8]], &dev);
        let t = Tensor::<Cpu, 2>::from_floats([[0.8, 0.6], [0.0, 1.0]], &dev);
        let out = ItaConfig::reference().forward(v, t);
        assert!((scalar(out.loss) - 2.382_581).abs() < HAND_WORKED as f32);
        assert_eq!(scalar(out.acc1), 50.0);
        // Two samples: every sample is within the top 5.
        assert_eq!(scalar(out.acc5), 100.0);
    }

    #[test]
    fn paper_mode_averages_the_directions() {
        let dev = cpu_device();
        let v = Tensor::<Cpu, 2>::from_floats([[1.0, 0.0], [0.6, 0.8]], &dev);
        let t = Tensor::<Cpu, 2>::from_floats([[0.8, 0.6], [0.0, 1.0]], &dev);
        let cfg = ItaConfig { temperature: 0.07, reduction: Reduction::Mean };
        let out = cfg.forward(v, t);
        assert!((scalar(out.loss) - 2.382_581 / 2.0).abs() < HAND_WORKED as f32);
    }

    #[test]
    fn accuracy_counts_rank_in_rows_and_columns() {
        let dev = cpu_device();
        // Row 0 ranks its target 3rd, row 1..5 rank it 1st; columns likewise by symmetry.
        let mut m = [[0.0f32; 6]; 6];
        for (i, row) in m.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        m[0][3] = 2.0;
        m[0][4] = 3.0;
        let s = Tensor::<Cpu, 2>::from_floats(m, &dev);
        let diag = Tensor::<Cpu, 1>::from_floats([1.0; 6], &dev);
        let (a1, a5) = retrieval_accuracy(s, diag);
        // i2t: 5 of 6 at rank 0; t2i: columns 3 and 4 have a larger entry (row 0): 4 of 6.
        assert!((scalar(a1) - 50.0 * (5.0 + 4.0) / 6.0).abs() < 1e-4);
        assert_eq!(scalar(a5), 100.0);
    }
}
