//! The whole MGCA model: image encoder, text encoder, four projection heads and the prototypes,
//! producing exactly what the objective consumes.
//!
//! `v = g_img(Z[:, 0])`, `P = h_img(Z[:, 1:])`, `t = g_txt(W[:, 0])`, `Wd = h_txt(W[:, 1:])` with
//! `Z` the ViT tokens and `W` the merged words of the BERT output; the ViT's last [CLS]
//! attention and the shifted word attention are the CTA weights; `C` the prototypes.
//!
//! Spec: `architecture.md` §2 (ViT outputs), §4 (text encoder and word merging), §5 (heads),
//! §6 (prototypes), §8 (shape trace).
//!
//! **Deviation:** the reference re-normalises the prototype rows in place at the start of the
//! CPA block; a burn module is not mutated in its forward pass, so the training step calls
//! [`Mgca::renormalize_prototypes`] right before the forward (same values, same gradient).
//! Only the ViT image encoder exists so far; ResNet-50 comes next.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::bert::{Bert, PositionIds};
use super::heads::{Mode, ProjectionHead};
use super::vit::Vit;
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::loss::{ObjectiveInputs, normalize_prototypes};
use crate::text::words::WordGrouping;

/// The MGCA model (ViT image encoder).
#[derive(Module, Debug)]
pub struct Mgca<B: Backend> {
    image: Vit<B>,
    text: Bert<B>,
    image_global: ProjectionHead<B>,
    image_local: ProjectionHead<B>,
    text_global: ProjectionHead<B>,
    text_local: ProjectionHead<B>,
    prototypes: Param<Tensor<B, 2>>,
    positions: PositionIds,
}

/// One batch as the model takes it.
#[derive(Debug, Clone)]
pub struct MgcaBatch<B: Backend> {
    /// Images, normalised. `[N, 3, S, S]`
    pub images: Tensor<B, 4>,
    /// Token ids. `[N, L]`
    pub ids: Tensor<B, 2, Int>,
    /// 1 on real tokens. `[N, L]`
    pub mask: Tensor<B, 2>,
    /// Which tokens form each word (from the token strings).
    pub words: WordGrouping,
}

impl MgcaConfig {
    /// A randomly initialised model; the encoders' pretrained weights are loaded separately.
    pub fn init_model<B: Backend>(&self, device: &B::Device) -> Result<Mgca<B>, String> {
        if self.image_encoder != ImageEncoderKind::VitBase {
            return Err("the ResNet-50 image encoder is not implemented yet; use vit_base".into());
        }
        let (h, d) = (self.projection_hidden, self.embed_dim);
        let head = |input| ProjectionHead::new(input, h, d, device);
        // PyTorch's Linear default for the prototype layer: U(−1/√d, 1/√d).
        let bound = 1.0 / (d as f64).sqrt();
        let prototypes =
            Tensor::random([self.num_prototypes, d], burn::tensor::Distribution::Uniform(-bound, bound), device);
        Ok(Mgca {
            image: self.vit.init(device),
            text: self.bert.init(device),
            image_global: head(self.vit.dim),
            image_local: head(self.vit.dim),
            text_global: head(self.bert.hidden),
            text_local: head(self.bert.hidden),
            prototypes: Param::from_tensor(prototypes),
            positions: PositionIds::Reference,
        })
    }
}

// ANCHOR: forward
impl<B: Backend> Mgca<B> {
    /// Re-normalise the prototype rows (outside autograd), as the reference does before every
    /// CPA block.
    pub fn renormalize_prototypes(mut self) -> Self {
        self.prototypes = self.prototypes.map(|p| {
            let (trainable, device) = (p.is_require_grad(), p.device());
            // A fresh leaf holding the normalised rows ([K, d]: a small copy).
            Tensor::from_data(normalize_prototypes(p).into_data(), &device).set_require_grad(trainable)
        });
        self
    }

    /// The objective's inputs for one batch.
    pub fn forward(&self, batch: MgcaBatch<B>, mode: Mode) -> ObjectiveInputs<B> {
        let vision = self.image.forward(batch.images);
        let [n, t, dv] = vision.tokens.dims();
        let cls = vision.tokens.clone().narrow(1, 0, 1).reshape([n, dv]); // [N, Dv]
        let patches = vision.tokens.clone().narrow(1, 1, t - 1); // [N, M, Dv]
        let text = self.text.forward(batch.ids, batch.mask, self.positions);
        let words = batch.words.apply(text.hidden.clone(), text.cls_attention_mean_heads());
        ObjectiveInputs {
            img_emb: self.image_global.forward(cls, mode),
            report_emb: self.text_global.forward(words.report, mode),
            patch_emb: self.image_local.forward_tokens(patches, mode),
            word_emb: self.text_local.forward_tokens(words.words, mode),
            word_attn: words.word_attention.detach(),
            word_pad: words.word_pad,
            patch_attn: Some(vision.cls_patch_attention().detach()),
            prototypes: self.prototypes.val(),
        }
    }
}
// ANCHOR_END: forward

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuAutodiff, cpu_device};
    use crate::loss::{CtaEngine, Objective};
    use burn::tensor::{Distribution, TensorData};

    /// A smoke-sized batch: random images, reports of different lengths with word pieces.
    fn batch(config: &MgcaConfig, n: usize) -> MgcaBatch<CpuAutodiff> {
        let dev = cpu_device();
        let l = 12;
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for b in 0..n {
            let len = 5 + b % 6; // real tokens, [CLS] and [SEP] included
            let row: Vec<String> = (0..l)
                .map(|j| match j {
                    0 => "[CLS]".to_string(),
                    j if j == len - 1 => "[SEP]".to_string(),
                    j if j >= len => "[PAD]".to_string(),
                    j if j % 3 == 2 => format!("##p{j}"),
                    j => format!("w{j}"),
                })
                .collect();
            ids.extend(
                (0..l).map(|j| if j < len { 1 + ((b * 7 + j * 5) % (config.bert.vocab_size - 1)) as i64 } else { 0 }),
            );
            tokens.push(row);
        }
        let mask: Vec<f32> = tokens.iter().flat_map(|r| r.iter().map(|s| (s != "[PAD]") as i32 as f32)).collect();
        let s = config.vit.image_size;
        MgcaBatch {
            images: Tensor::random([n, 3, s, s], Distribution::Normal(0.0, 1.0), &dev),
            ids: Tensor::from_data(TensorData::new(ids, [n, l]), &dev),
            mask: Tensor::from_data(TensorData::new(mask, [n, l]), &dev),
            words: WordGrouping::from_tokens(&tokens),
        }
    }

    /// End to end: the smoke model's loss is finite, gradients reach both encoders, every head
    /// and the prototypes, and the two CTA engines give the same loss and gradients.
    #[test]
    fn the_loss_of_a_batch_end_to_end() {
        let config = MgcaConfig::smoke();
        let model = config.init_model::<CpuAutodiff>(&cpu_device()).unwrap().renormalize_prototypes();
        let x = batch(&config, 6);
        let mut results = Vec::new();
        for engine in [CtaEngine::Graph, CtaEngine::FusedCpu] {
            let inputs = model.forward(x.clone(), Mode::Train);
            let out = Objective::new(config.objective.clone()).with_engine(engine).forward(inputs);
            let loss: f32 = out.total.clone().into_scalar();
            assert!(loss.is_finite() && loss > 0.0, "{loss}");
            let grads = out.total.backward();
            let g = |t: Option<Tensor<crate::backend::Cpu, 2>>| t.expect("a gradient").abs().sum().into_scalar();
            let proto = g(model.prototypes.val().grad(&grads));
            let word_emb = g(model.text.word_embedding().grad(&grads));
            let patch = model.image.patch_weight().grad(&grads).expect("a gradient").abs().sum().into_scalar();
            assert!(proto > 0.0 && word_emb > 0.0 && patch > 0.0, "{proto} {word_emb} {patch}");
            results.push((loss, proto, word_emb, patch));
        }
        let (a, b) = (results[0], results[1]);
        let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * x.abs().max(y.abs());
        assert!(close(a.0, b.0) && close(a.1, b.1) && close(a.2, b.2) && close(a.3, b.3), "{a:?} vs {b:?}");
    }

    #[test]
    fn prototypes_are_unit_rows_after_renormalising() {
        let config = MgcaConfig::smoke();
        let model = config.init_model::<CpuAutodiff>(&cpu_device()).unwrap().renormalize_prototypes();
        let norms = model.prototypes.val().square().sum_dim(1).sqrt().into_data().to_vec::<f32>().unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-6), "{norms:?}");
        assert!(model.prototypes.val().is_require_grad());
    }
}
