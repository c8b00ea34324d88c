//! ViT-B/16, the default MGCA image encoder, as the reference builds it (timm/DeiT layout).
//!
//! `x₀ = [CLS; Conv16×16(img)ᵀ] + pos`; for each block `x ← x + Proj(Attn(LN₁(x)))`,
//! `x ← x + FC₂(GELU(FC₁(LN₂(x))))` with `Attn = softmax(q kᵀ / √d_h) v` over 12 heads; `Z = LN(x)`.
//! Returns `Z` (all 197 tokens: `Z[:, 0]` is the global feature, `Z[:, 1:]` the 196 patches) and
//! the last block's attention probabilities, from which CTA takes the `[CLS]` row.
//!
//! Book: "Image encoder: ViT-B/16". Reference: `mgca/models/backbones/vits.py`,
//! `VisionTransformer` and `create_vit` (architecture, initialisation, attention capture), and
//! `encoder.py`, `ImageEncoder.vit_forward` (outputs), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//! Parameter names map one to one onto timm/DeiT state-dict keys.
//!
//! **Deviation:** none: LayerNorm eps 1e-6, exact (erf) GELU, qkv with bias, no dropout.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::kernels::gelu::gelu;
use crate::kernels::layer_norm::layer_norm;
use crate::kernels::softmax::softmax_last;
use crate::weights::{WeightError, WeightReader};

pub use crate::config::encoders::VitConfig;

/// LayerNorm's ε in timm's ViT (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LAYER_NORM_EPS: f64 = 1e-6;

impl VitConfig {
    /// A randomly initialised ViT (burn's default initialisers).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vit<B> {
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || LayerNormConfig::new(self.dim).with_epsilon(LAYER_NORM_EPS).init(device);
        Vit {
            patch_embed: Conv2dConfig::new([3, self.dim], [self.patch_size; 2])
                .with_stride([self.patch_size; 2])
                .init(device),
            cls_token: Param::from_tensor(Tensor::zeros([1, 1, self.dim], device)),
            pos_embed: Param::from_tensor(Tensor::zeros([1, self.patches() + 1, self.dim], device)),
            blocks: (0..self.depth)
                .map(|_| VitBlock {
                    norm1: norm(),
                    qkv: linear(self.dim, 3 * self.dim),
                    proj: linear(self.dim, self.dim),
                    norm2: norm(),
                    fc1: linear(self.dim, self.mlp_dim),
                    fc2: linear(self.mlp_dim, self.dim),
                    heads: self.heads,
                })
                .collect(),
            norm: norm(),
        }
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct VitBlock<B: Backend> {
    norm1: LayerNorm<B>,
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
}

/// The ViT image encoder.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    patch_embed: Conv2d<B>,
    cls_token: Param<Tensor<B, 3>>,
    pos_embed: Param<Tensor<B, 3>>,
    blocks: Vec<VitBlock<B>>,
    norm: LayerNorm<B>,
}

/// What the ViT hands to MGCA.
#[derive(Debug, Clone)]
pub struct VitOutput<B: Backend> {
    /// The final-LayerNorm tokens, `[CLS]` first. `[N, 1 + M, D]`
    pub tokens: Tensor<B, 3>,
    /// The last block's attention probabilities `[batch, head, query, key]`. `[N, H, 1 + M, 1 + M]`
    pub last_attention: Tensor<B, 4>,
}

impl<B: Backend> Vit<B> {
    /// The patch-embedding kernel (timm's `patch_embed.proj.weight`), e.g. to inspect its gradient.
    pub fn patch_weight(&self) -> Tensor<B, 4> {
        self.patch_embed.weight.val()
    }

    /// The input side S its position embeddings were made for (ViT-B/16: 224).
    pub fn input_side(&self) -> usize {
        let [_, n, _] = self.pos_embed.val().dims();
        let grid = ((n - 1) as f64).sqrt().round() as usize;
        grid * self.patch_embed.weight.val().dims()[2]
    }
}

impl<B: Backend> VitOutput<B> {
    /// The head-averaged `[CLS]` row of the last block's attention, over all keys (`[CLS]` first).
    /// `[N, 1 + M]`
    pub fn cls_attention_mean_heads(&self) -> Tensor<B, 2> {
        super::cls_row_mean_heads(&self.last_attention)
    }

    /// The last block's `[CLS]`→patch attention per head, as CTA consumes it. `[N, H, M]`
    pub fn cls_patch_attention(&self) -> Tensor<B, 3> {
        let [n, h, t, _] = self.last_attention.dims();
        self.last_attention.clone().narrow(2, 0, 1).narrow(3, 1, t - 1).reshape([n, h, t - 1])
    }
}

// ANCHOR: forward
impl<B: Backend> VitBlock<B> {
    /// One block; also returns its attention probabilities.
    fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [n, t, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        // The fused qkv output is laid out [3, heads, head_dim] along its last dimension. q, k
        // and v stay strided views of it (the CPU backend's matmul reads strides; a reshape of
        // a view would copy).
        let qkv = self.qkv.forward(layer_norm(&self.norm1, x.clone(), LAYER_NORM_EPS)).reshape([n, t, 3, h, hd]);
        let part = |i: usize| qkv.clone().narrow(2, i, 1).permute([0, 2, 3, 1, 4]); // [N, 1, H, T, hd]
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = q.matmul(k.swap_dims(3, 4)); // [N, 1, H, T, T]
        let attn = softmax_last(scores.mul_scalar((hd as f32).powf(-0.5)));
        let mixed = attn.clone().matmul(v).permute([0, 3, 1, 2, 4]).reshape([n, t, d]); // [N, T, D]
        let attn = attn.reshape([n, h, t, t]);
        let x = x + self.proj.forward(mixed);
        let x = x.clone() + self.fc2.forward(gelu(self.fc1.forward(layer_norm(&self.norm2, x, LAYER_NORM_EPS))));
        (x, attn)
    }
}

impl<B: Backend> Vit<B> {
    /// Encode images `[N, 3, S, S]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> VitOutput<B> {
        let patches = self.patch_embed.forward(images); // [N, D, S/p, S/p]
        let [n, d, gh, gw] = patches.dims();
        let patches = patches.reshape([n, d, gh * gw]).swap_dims(1, 2); // [N, M, D], row-major patches
        let cls = self.cls_token.val().expand([n, 1, d]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.pos_embed.val(); // [N, 1 + M, D]
        let mut last_attention = None;
        for block in &self.blocks {
            let (y, attn) = block.forward(x);
            x = y;
            last_attention = Some(attn);
        }
        VitOutput {
            tokens: layer_norm(&self.norm, x, LAYER_NORM_EPS),
            last_attention: last_attention.expect("at least one block"),
        }
    }
}
// ANCHOR_END: forward

/// The architecture that a timm/DeiT state dict describes (all but the number of heads, which
/// the weights do not record).
pub fn config_from_weights(weights: &WeightReader, heads: usize) -> Result<VitConfig, WeightError> {
    let patch = super::sizes(weights, "patch_embed.proj.weight", "[D, 3, p, p]", 4)?;
    let pos = super::sizes(weights, "pos_embed", "[1, 1 + M, D]", 3)?;
    let fc1 = super::sizes(weights, "blocks.0.mlp.fc1.weight", "[mlp, D]", 2)?;
    let (dim, patch_size) = (patch[0], patch[2]);
    if patch[1] != 3 || patch[3] != patch_size {
        return Err(WeightError::Architecture(format!(
            "`patch_embed.proj.weight` has shape {patch:?}, expected [D, 3, p, p] (square patches of 3 channels)"
        )));
    }
    let positions = pos[1] - 1; // >= 0: sizes() refused a zero
    let side = (positions as f64).sqrt().round() as usize;
    if side == 0 || side * side != positions {
        return Err(WeightError::Architecture(format!(
            "`pos_embed` has shape {pos:?}: {positions} patch positions, not a square grid of at least one"
        )));
    }
    let depth = (0..).take_while(|i| weights.contains(&format!("blocks.{i}.norm1.weight"))).count();
    if depth == 0 {
        return Err(WeightError::Missing("blocks.0.norm1.weight".into()));
    }
    super::check_heads(dim, heads)?;
    Ok(VitConfig { image_size: side * patch_size, patch_size, dim, depth, heads, mlp_dim: fc1[0] })
}

impl<B: Backend> Vit<B> {
    /// Load a timm/DeiT-named state dict (timm's keys, as the `deit` key table gives them, without the
    /// `img_encoder_q.model.` prefix). Every key of the model must be present with its shape;
    /// keys the model does not use are reported by [`WeightReader::unused`].
    pub fn load(config: &VitConfig, weights: &mut WeightReader, device: &B::Device) -> Result<Self, WeightError> {
        let mut vit = config.init::<B>(device);
        let d = config.dim;
        let p = config.patch_size;
        vit.patch_embed.weight = weights.param(device, "patch_embed.proj.weight", &[d, 3, p, p])?;
        vit.patch_embed.bias = Some(weights.param(device, "patch_embed.proj.bias", &[d])?);
        vit.cls_token = weights.param(device, "cls_token", &[1, 1, d])?;
        vit.pos_embed = weights.param(device, "pos_embed", &[1, config.patches() + 1, d])?;
        for (i, block) in vit.blocks.iter_mut().enumerate() {
            let key = |name: &str| format!("blocks.{i}.{name}");
            weights.layer_norm(device, &key("norm1"), d, &mut block.norm1)?;
            weights.linear(device, &key("attn.qkv"), d, 3 * d, &mut block.qkv)?;
            weights.linear(device, &key("attn.proj"), d, d, &mut block.proj)?;
            weights.layer_norm(device, &key("norm2"), d, &mut block.norm2)?;
            weights.linear(device, &key("mlp.fc1"), d, config.mlp_dim, &mut block.fc1)?;
            weights.linear(device, &key("mlp.fc2"), config.mlp_dim, d, &mut block.fc2)?;
        }
        weights.layer_norm(device, "norm", d, &mut vit.norm)?;
        Ok(vit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, cpu_device};
    use crate::parity::{ATTENTION, Agreement, HIDDEN_STATES};
    use crate::tensor_file::{HostTensor, TensorFile};
    use crate::testing;

    fn golden(name: &str) -> TensorFile {
        TensorFile::read(&testing::golden(&format!("reference/encoders/{name}"))).unwrap()
    }

    /// timm's `vit_tiny_patch16_224` with 2 blocks (seed 0) on a seeded input: every
    /// intermediate the fixture holds, at the fixtures' tolerances ([`HIDDEN_STATES`] on
    /// hidden states, [`ATTENTION`] on attention probabilities).
    #[test]
    fn tiny_vit_matches_timm() {
        let dev = cpu_device();
        let mut weights = WeightReader::new(golden("vit_tiny_d2_weights.safetensors"));
        let config = config_from_weights(&weights, 3).unwrap();
        assert_eq!(config, VitConfig { image_size: 224, patch_size: 16, dim: 192, depth: 2, heads: 3, mlp_dim: 768 });
        let vit = Vit::<Cpu>::load(&config, &mut weights, &dev).unwrap();
        assert!(weights.unused().is_empty(), "unused: {:?}", weights.unused());

        let input = golden("vit_input.safetensors").tensors["input"].clone();
        let x = input.to_tensor::<Cpu, 4>(&dev);
        let out = vit.forward(x);
        let want = golden("vit_tiny_d2_outputs.safetensors");
        let (hidden, probs) = (HIDDEN_STATES, ATTENTION);
        let checks = [
            ("final_norm_output", HostTensor::from_tensor(out.tokens.clone()), hidden),
            ("last_block_attention", HostTensor::from_tensor(out.last_attention.clone()), probs),
            ("last_block_attention_cls_mean_heads", HostTensor::from_tensor(out.cls_attention_mean_heads()), probs),
        ];
        for (name, ours, tol) in checks {
            let a = Agreement::measure(name, &ours, &want.tensors[name], tol);
            eprintln!("{a}");
            assert!(a.ok, "{a}");
        }
        // CTA's input: the [CLS] row without the [CLS] key, per head.
        let cta = out.cls_patch_attention();
        assert_eq!(cta.dims(), [1, 3, 196]);
    }

    #[test]
    fn a_wrong_shape_names_the_key() {
        let mut file = golden("vit_tiny_d2_weights.safetensors");
        let t = file.tensors.get_mut("blocks.1.attn.proj.bias").unwrap();
        t.values.pop();
        t.shape = vec![191];
        let mut weights = WeightReader::new(file);
        let config = config_from_weights(&weights, 3).unwrap();
        let err = Vit::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("blocks.1.attn.proj.bias"), "{err}");
    }

    #[test]
    fn a_missing_key_is_an_error_and_extra_keys_are_reported() {
        let mut file = golden("vit_tiny_d2_weights.safetensors");
        file.tensors.remove("norm.weight");
        let mut weights = WeightReader::new(file.clone());
        let config = config_from_weights(&weights, 3).unwrap();
        let err = Vit::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap_err();
        assert!(err.to_string().contains("missing `norm.weight`"), "{err}");

        let mut file = golden("vit_tiny_d2_weights.safetensors");
        file.tensors.insert("head.weight".into(), HostTensor { shape: vec![2, 2], values: vec![0.0; 4] });
        let mut weights = WeightReader::new(file);
        Vit::<Cpu>::load(&config, &mut weights, &cpu_device()).unwrap();
        assert_eq!(weights.unused(), vec!["head.weight".to_string()]);
    }
}
