//! The whole MGCA model: image encoder, text encoder, four projection heads and the prototypes,
//! producing exactly what the objective consumes.
//!
//! `v = g_img(Z[:, 0])`, `P = h_img(Z[:, 1:])`, `t = g_txt(W[:, 0])`, `Wd = h_txt(W[:, 1:])` with
//! `Z` the ViT tokens and `W` the merged words of the BERT output; the ViT's last `[CLS]`
//! attention and the shifted word attention are the CTA weights; `C` the prototypes. With
//! ResNet-50, `v` comes from the pooled layer-4 feature and `P` from the 361 layer-3 tokens,
//! and the patch weights are uniform (no attention map).
//!
//! Book: "Projection heads, prototypes and the whole model" (with the encoder chapters for their
//! outputs). Reference: `mgca/models/mgca/mgca_module.py`, `MGCA.__init__` and `MGCA.forward`
//! (up to the losses), and `mgca/models/backbones/encoder.py`, `ImageEncoder.forward` and
//! `BertEncoder.aggregate_tokens` (word merging), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** the reference re-normalises the prototype rows in place at the start of the
//! CPA block; a burn module is not mutated in its forward pass, so the training step calls
//! [`Mgca::renormalize_prototypes`] right before the forward (same values, same gradient).

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, backend::Backend};

use super::bert;
use super::bert::{Bert, PositionIds};
use super::dropout::DropoutKey;
use super::heads::{Mode, ProjectionHead};
use super::resnet::{self, ResNet};
use super::vit::{self, Vit};
use crate::config::{ImageEncoderKind, MgcaConfig};
use crate::loss::{ObjectiveInputs, normalize_prototypes};
use crate::text::words::WordGrouping;
use crate::weights::{WeightError, WeightReader};

/// The image encoder: ViT-B/16 or ResNet-50.
#[derive(Module, Debug)]
pub enum ImageEncoder<B: Backend> {
    /// ViT: `[CLS]` token global, patch tokens local, last-block attention for CTA.
    Vit(Vit<B>),
    /// ResNet: pooled layer 4 global, layer-3 tokens local, uniform CTA weights.
    ResNet(ResNet<B>),
}

/// What an image encoder hands to the heads.
#[derive(Debug, Clone)]
pub struct ImageFeatures<B: Backend> {
    /// The global feature. `[N, Dv]`
    pub global: Tensor<B, 2>,
    /// The local tokens. `[N, M, Dl]`
    pub local: Tensor<B, 3>,
    /// The `[CLS]`→patch attention per head (ViT only). `[N, H, M]`
    pub patch_attention: Option<Tensor<B, 3>>,
}

impl<B: Backend> ImageEncoder<B> {
    /// Encode normalised images `[N, 3, S, S]` (BatchNorm, if any, in `mode`).
    pub fn forward(&self, images: Tensor<B, 4>, mode: Mode) -> ImageFeatures<B> {
        match self {
            Self::Vit(vit) => {
                let out = vit.forward(images);
                let [n, t, dv] = out.tokens.dims();
                ImageFeatures {
                    global: out.tokens.clone().narrow(1, 0, 1).reshape([n, dv]), // [N, Dv]
                    local: out.tokens.clone().narrow(1, 1, t - 1),               // [N, M, Dv]
                    patch_attention: Some(out.cls_patch_attention()),
                }
            }
            Self::ResNet(net) => {
                let out = net.forward(images, mode);
                ImageFeatures { global: out.global, local: out.local, patch_attention: None }
            }
        }
    }

    /// The first layer's kernel (patch embedding or stem convolution).
    pub fn first_weight(&self) -> Tensor<B, 4> {
        match self {
            Self::Vit(vit) => vit.patch_weight(),
            Self::ResNet(net) => net.stem_weight(),
        }
    }
}

/// The MGCA model.
#[derive(Module, Debug)]
pub struct Mgca<B: Backend> {
    image: ImageEncoder<B>,
    text: Bert<B>,
    image_global: ProjectionHead<B>,
    image_local: ProjectionHead<B>,
    text_global: ProjectionHead<B>,
    text_local: ProjectionHead<B>,
    prototypes: Param<Tensor<B, 2>>,
    positions: PositionIds,
}

impl<B: Backend> Mgca<B> {
    /// The image encoder alone: what the downstream tasks keep (frozen) of a pretrained model.
    pub fn into_image_encoder(self) -> ImageEncoder<B> {
        self.image
    }
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
    /// The text encoder's dropout in training mode: probability and mask key (`None`: off).
    pub dropout: Option<(f64, DropoutKey)>,
}

impl MgcaConfig {
    /// [`MgcaConfig::init_model`] from the backend's generator seeded with `seed`, holding a
    /// process-wide lock so that no other seeded initialisation draws in between.
    pub fn init_model_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> Mgca<B> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, seed);
        let model = self.init_model(device);
        // burn initialises parameters lazily, on first use: draw them all now, under the lock.
        struct Touch;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        burn::module::Module::visit(&model, &mut Touch);
        model
    }

    /// A randomly initialised model; the encoders' pretrained weights are loaded separately.
    pub fn init_model<B: Backend>(&self, device: &B::Device) -> Mgca<B> {
        let (h, d) = (self.projection_hidden, self.embed_dim);
        let head = |input| ProjectionHead::new(input, h, d, device);
        // PyTorch's Linear default for the prototype layer: U(−1/√d, 1/√d).
        let bound = 1.0 / (d as f64).sqrt();
        let prototypes =
            Tensor::random([self.num_prototypes, d], burn::tensor::Distribution::Uniform(-bound, bound), device);
        let (image, global_dim, local_dim) = match self.image_encoder {
            ImageEncoderKind::VitBase => (ImageEncoder::Vit(self.vit.init(device)), self.vit.dim, self.vit.dim),
            ImageEncoderKind::Resnet50 => {
                (ImageEncoder::ResNet(self.resnet.init(device)), self.resnet.global_dim(), self.resnet.local_dim())
            }
        };
        Mgca {
            image,
            text: self.bert.init(device),
            image_global: head(global_dim),
            image_local: head(local_dim),
            text_global: head(self.bert.hidden),
            text_local: head(self.bert.hidden),
            prototypes: Param::from_tensor(prototypes),
            positions: PositionIds::Reference,
        }
    }
}

impl MgcaConfig {
    /// The architecture a whole-model checkpoint under mgca-rs names describes (see
    /// [`crate::weights::keymap`]): the image encoder kind and every width, depth and count come
    /// from the tensors' shapes; attention head counts (which no shape records), the ResNet's
    /// up-sampling and the objective come from `self`.
    pub fn from_weights(&self, weights: &WeightReader) -> Result<MgcaConfig, WeightError> {
        let mut config = self.clone();
        let mut reader = weights.clone();
        reader.set_prefix("image.");
        if reader.contains("cls_token") {
            config.image_encoder = ImageEncoderKind::VitBase;
            config.vit = vit::config_from_weights(&reader, self.vit.heads)?;
        } else if reader.contains("conv1.weight") {
            config.image_encoder = ImageEncoderKind::Resnet50;
            config.resnet = resnet::config_from_weights(&reader, self.resnet.upsample_to)?;
        } else {
            return Err(WeightError::Architecture(
                "no image encoder: neither `image.cls_token` (ViT) nor `image.conv1.weight` (ResNet)".into(),
            ));
        }
        if config.image_encoder != self.image_encoder {
            config.objective = crate::loss::ObjectiveConfig::reference(config.image_encoder);
        }
        reader.set_prefix("text.");
        config.bert = bert::config_from_weights(&reader, self.bert.heads, None)?;
        reader.set_prefix("");
        let prototypes = reader.shape("prototypes")?; // [K, d]
        let first = reader.shape("image_global.0.weight")?; // [H, D]
        config.num_prototypes = prototypes[0];
        config.embed_dim = prototypes[1];
        config.projection_hidden = first[0];
        Ok(config)
    }
}

impl<B: Backend> Mgca<B> {
    /// Load a whole model from a checkpoint under mgca-rs names (a released MGCA checkpoint
    /// read through the `mgca-lightning` key table, or our own). Every tensor the model needs
    /// must be present with `config`'s shapes; a BERT token-type table, which MGCA does not
    /// have, is an error here.
    pub fn load(config: &MgcaConfig, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        weights.set_prefix("image.");
        let image = match config.image_encoder {
            ImageEncoderKind::VitBase => ImageEncoder::Vit(Vit::load(&config.vit, weights, device)?),
            ImageEncoderKind::Resnet50 => ImageEncoder::ResNet(ResNet::load(&config.resnet, weights, device)?),
        };
        weights.set_prefix("text.");
        if weights.contains("embeddings.token_type_embeddings.weight") {
            return Err(WeightError::Architecture(
                "`text.embeddings.token_type_embeddings.weight`: MGCA's text encoder has no token-type table".into(),
            ));
        }
        let text = bert::Bert::load(&config.bert, weights, device)?;
        weights.set_prefix("");
        let (global_dim, local_dim) = match config.image_encoder {
            ImageEncoderKind::VitBase => (config.vit.dim, config.vit.dim),
            ImageEncoderKind::Resnet50 => (config.resnet.global_dim(), config.resnet.local_dim()),
        };
        let (h, d) = (config.projection_hidden, config.embed_dim);
        let mut head = |name: &str, input: usize| -> Result<ProjectionHead<B>, WeightError> {
            let loaded = ProjectionHead::load(name, weights, device)?;
            let dims = loaded.dims();
            if dims != (input, h, d) {
                return Err(WeightError::Architecture(format!(
                    "head `{name}` is {} → {} → {}, the configuration needs {input} → {h} → {d}",
                    dims.0, dims.1, dims.2
                )));
            }
            Ok(loaded)
        };
        let image_global = head("image_global", global_dim)?;
        let image_local = head("image_local", local_dim)?;
        let text_global = head("text_global", config.bert.hidden)?;
        let text_local = head("text_local", config.bert.hidden)?;
        let prototypes = weights.param(device, "prototypes", &[config.num_prototypes, d])?;
        Ok(Mgca {
            image,
            text,
            image_global,
            image_local,
            text_global,
            text_local,
            prototypes,
            positions: PositionIds::Reference,
        })
    }
}

/// Where a run's encoders start from (the paper tier): ImageNet weights for the image encoder
/// (DeiT-B/16 or torchvision ResNet-50) and Bio_ClinicalBERT for the text encoder.
#[derive(Debug, Clone, Default)]
pub struct EncoderWeights {
    /// A DeiT checkpoint (ViT) or a torchvision ResNet-50 state dict (ResNet).
    pub image: Option<std::path::PathBuf>,
    /// Bio_ClinicalBERT's `pytorch_model.bin` (its first `layers` layers are used).
    pub text: Option<std::path::PathBuf>,
}

impl<B: Backend> Mgca<B> {
    /// Replace the encoders by pretrained ones, imported through the `deit`,
    /// `torchvision-resnet` and `bio-clinicalbert` key tables by the one checkpoint importer
    /// ([`super::import::import`]); their shapes must be `config`'s.
    pub fn with_encoders(
        mut self,
        config: &MgcaConfig,
        from: &EncoderWeights,
        device: &B::Device,
    ) -> Result<Self, String> {
        use super::import::{Architecture, Loaded, import};
        use crate::weights::keymap::Layout;
        if let Some(path) = &from.image {
            let layout = match config.image_encoder {
                ImageEncoderKind::VitBase => Layout::Deit,
                ImageEncoderKind::Resnet50 => Layout::TorchvisionResnet,
            };
            self.image = match import::<B>(path, layout, None, Architecture::Exactly(config), device)?.0 {
                Loaded::Vit(vit) => ImageEncoder::Vit(vit),
                Loaded::ResNet(resnet) => ImageEncoder::ResNet(resnet),
                Loaded::Bert(_) | Loaded::Mgca(_) | Loaded::Unet(_) => {
                    unreachable!("{layout:?} initialises an image encoder")
                }
            };
        }
        if let Some(path) = &from.text {
            match import::<B>(path, Layout::BioClinicalBert, None, Architecture::Exactly(config), device)?.0 {
                Loaded::Bert(bert) => self.text = bert,
                _ => unreachable!("bio-clinicalbert initialises a BERT"),
            }
        }
        Ok(self)
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

    /// The prototype parameter's id (the optimiser's key; frozen in the first epoch).
    pub fn prototype_id(&self) -> burn::module::ParamId {
        self.prototypes.id
    }

    /// The prototypes as stored. `[K, d]`
    pub fn prototypes(&self) -> Tensor<B, 2> {
        self.prototypes.val()
    }

    /// The objective's inputs for one batch.
    pub fn forward(&self, batch: MgcaBatch<B>, mode: Mode) -> ObjectiveInputs<B> {
        let vision = self.image.forward(batch.images, mode);
        let drop = batch.dropout.filter(|_| mode != Mode::Eval);
        let text = self.text.forward_with_dropout(batch.ids, batch.mask, self.positions, drop);
        let words = batch.words.apply(text.hidden.clone(), text.cls_attention_mean_heads());
        ObjectiveInputs {
            img_emb: self.image_global.forward(vision.global, mode),
            report_emb: self.text_global.forward(words.report, mode),
            patch_emb: self.image_local.forward_tokens(vision.local, mode),
            word_emb: self.text_local.forward_tokens(words.words, mode),
            word_attn: words.word_attention.detach(),
            word_pad: words.word_pad,
            patch_attn: vision.patch_attention.map(|a| a.detach()),
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

    /// A re-normalised prototype's distance from unit length: float32 rounding of a norm.
    const UNIT_NORM: f32 = 1e-6;

    /// A smoke-sized batch: random images, reports of different lengths with word pieces.
    fn batch(config: &MgcaConfig, n: usize) -> MgcaBatch<CpuAutodiff> {
        let dev = cpu_device();
        let l = 12;
        // Real tokens, [CLS] and [SEP] included: 5 to 10.
        let reports = crate::parity::synthetic_reports(
            n,
            l,
            |b| 5 + b % 6,
            3,
            |b, j| 1 + ((b * 7 + j * 5) % (config.bert.vocab_size - 1)) as i64,
        );
        let s = config.image_size();
        MgcaBatch {
            images: Tensor::random([n, 3, s, s], Distribution::Normal(0.0, 1.0), &dev),
            ids: Tensor::from_data(TensorData::new(reports.ids, [n, l]), &dev),
            mask: Tensor::from_data(TensorData::new(reports.mask, [n, l]), &dev),
            words: WordGrouping::from_tokens(&reports.tokens),
            dropout: None,
        }
    }

    /// End to end, for both image encoders: the smoke model's loss is finite, gradients reach
    /// both encoders, every head and the prototypes, and the two CTA engines give the same loss
    /// and gradients.
    #[test]
    fn the_loss_of_a_batch_end_to_end() {
        for kind in [ImageEncoderKind::VitBase, ImageEncoderKind::Resnet50] {
            end_to_end(kind);
        }
    }

    fn end_to_end(kind: ImageEncoderKind) {
        let config = MgcaConfig::smoke_for(kind);
        let model = config.init_model::<CpuAutodiff>(&cpu_device()).renormalize_prototypes();
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
            let patch = model.image.first_weight().grad(&grads).expect("a gradient").abs().sum().into_scalar();
            assert!(proto > 0.0 && word_emb > 0.0 && patch > 0.0, "{proto} {word_emb} {patch}");
            results.push((loss, proto, word_emb, patch));
        }
        let (a, b) = (results[0], results[1]);
        // The fused CTA kernel and the autodiff graph: the loss fixtures' relative gradient
        // tolerance, for the loss and the gradient sums alike.
        let rel = crate::parity::LOSS_GRADIENTS.rel as f32;
        let close = |x: f32, y: f32| (x - y).abs() <= rel * x.abs().max(y.abs());
        assert!(close(a.0, b.0) && close(a.1, b.1) && close(a.2, b.2) && close(a.3, b.3), "{kind:?}: {a:?} vs {b:?}");
    }

    /// Encoders from DeiT- and Bio_ClinicalBERT-style checkpoints written by `torch.save`
    /// (`golden/pytorch/checkpoints/`): the weights arrive, and a file
    /// of the wrong kind is an error naming it.
    #[test]
    fn encoders_start_from_their_checkpoints() {
        let dir = crate::testing::golden("pytorch/checkpoints");
        let reader = |file: &str, layout: crate::weights::keymap::Layout, prefix: &str| {
            let checkpoint = crate::weights::torch::Checkpoint::open(&dir.join(file)).unwrap();
            let mut r = WeightReader::new(layout.keymap().import(&checkpoint).unwrap().tensors);
            r.set_prefix(prefix);
            r
        };
        use crate::weights::keymap::Layout;
        let mut config = MgcaConfig::smoke();
        config.vit = vit::config_from_weights(&reader("deit_style.pth", Layout::Deit, "image."), 2).unwrap();
        config.bert =
            bert::config_from_weights(&reader("bio_clinicalbert_style.bin", Layout::BioClinicalBert, "text."), 2, None)
                .unwrap();
        let model = config.init_model::<CpuAutodiff>(&cpu_device());
        let before = model.image.first_weight().into_data();
        let from = EncoderWeights {
            image: Some(dir.join("deit_style.pth")),
            text: Some(dir.join("bio_clinicalbert_style.bin")),
        };
        let loaded = model.with_encoders(&config, &from, &cpu_device()).unwrap();
        let after = loaded.image.first_weight().into_data();
        assert_ne!(before, after);
        let checkpoint = crate::weights::torch::Checkpoint::open(&dir.join("deit_style.pth")).unwrap();
        let import = crate::weights::keymap::Layout::Deit.keymap().import(&checkpoint).unwrap();
        let mut reader = WeightReader::new(import.tensors);
        let want = reader
            .tensor::<crate::backend::Cpu, 4>(&cpu_device(), "image.patch_embed.proj.weight", &after.shape)
            .unwrap();
        assert_eq!(after.to_vec::<f32>().unwrap(), want.into_data().to_vec::<f32>().unwrap());
        let wrong = EncoderWeights { image: Some(dir.join("bio_clinicalbert_style.bin")), text: None };
        let err =
            config.init_model::<CpuAutodiff>(&cpu_device()).with_encoders(&config, &wrong, &cpu_device()).unwrap_err();
        assert!(err.contains("bio_clinicalbert_style.bin"), "{err}");
    }

    #[test]
    fn prototypes_are_unit_rows_after_renormalising() {
        let config = MgcaConfig::smoke();
        let model = config.init_model::<CpuAutodiff>(&cpu_device()).renormalize_prototypes();
        let norms = model.prototypes.val().square().sum_dim(1).sqrt().into_data().to_vec::<f32>().unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < UNIT_NORM), "{norms:?}");
        assert!(model.prototypes.val().is_require_grad());
    }
}
