//! Encoder parity runs: the ViT, ResNet and BERT encoders loaded from the checkpoints their
//! libraries publish (timm/DeiT, torchvision, Hugging Face names), run forward on a case's
//! input, and their outputs written under the names the reference fixtures use.
//!
//! - [`vit()`]: `input` `[N, 3, S, S]` → `final_norm_output`, `last_block_attention_cls_mean_heads`;
//! - [`resnet()`]: `input` `[N, 3, 224, 224]` (up-sampled to 299 px as MGCA does, unless told
//!   not to) → `global` `[N, 2048]` and `local` `[N, 361, 1024]`;
//! - [`bert()`]: one sentence per line, tokenised → `input_ids`, `last_hidden_state`,
//!   `last_layer_attention_cls_mean_heads`.
//!
//! Every input is checked before it runs (head counts, ranks, lengths, token ids against the
//! vocabulary); an error names the file, tensor or key.
//!
//! Book: "Image encoder: ViT-B/16", "Image encoder: ResNet-50", "Text encoder: BERT and the
//! tokenizer". Reference: `mgca/models/backbones/encoder.py`, `ImageEncoder.vit_forward`,
//! `ImageEncoder.resnet_forward` and `BertEncoder.forward` (with `vits.py`, `VisionTransformer`,
//! and `cnn_backbones.py`, `resnet_50`), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};

use crate::backend::{Cpu, cpu_device};
use crate::model::batchnorm::Mode;
use crate::model::bert::{self, Bert, PositionIds};
use crate::model::resnet::{self, ResNet};
use crate::model::vit::{self, Vit};
use crate::tensor_file::{HostTensor, TensorFile};
use crate::text::tokenizer::ReportTokenizer;
use crate::weights::{WeightError, WeightReader, read_tensors};

/// Tokens per sentence below which not even `[CLS]` and `[SEP]` fit.
pub const MIN_BERT_LENGTH: usize = 2;

/// The side ResNet inputs have before MGCA's up-sampling.
pub const RESNET_INPUT_SIDE: usize = 224;

/// The side MGCA up-samples ResNet inputs to.
pub const RESNET_UPSAMPLE_SIDE: usize = 299;

/// What an encoder run did, for the command to print.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderRun {
    /// Checkpoint keys no parameter took (a classifier MGCA drops), sorted.
    pub unused: Vec<String>,
    /// One line: the architecture, the batch and the file written.
    pub summary: String,
}

/// `input` `[N, 3, side, side]` of `path`, all finite.
pub fn read_images(path: &Path, side: usize) -> Result<HostTensor, String> {
    let images = TensorFile::read(path).map_err(|e| e.to_string())?;
    let x = images.tensors.get("input").ok_or_else(|| format!("{}: missing tensor `input`", path.display()))?;
    if x.shape.len() != 4 || x.shape[0] == 0 || x.shape[1..] != [3, side, side] {
        return Err(format!(
            "{}: tensor `input` has shape {:?}, expected [N, 3, {side}, {side}] with N >= 1",
            path.display(),
            x.shape
        ));
    }
    if let Some(i) = x.values.iter().position(|v| !v.is_finite()) {
        return Err(format!("{}: tensor `input` holds {} at flat index {i}", path.display(), x.values[i]));
    }
    Ok(x.clone())
}

/// Run a timm/DeiT-named ViT with `heads` attention heads (the weights do not record them) on
/// `input` and write its final-norm tokens and last-block `[CLS]` attention to `output`.
pub fn vit(weights: &Path, heads: usize, input: &Path, output: &Path) -> Result<EncoderRun, String> {
    let mut reader = WeightReader::new(read_tensors(weights).map_err(|e| e.to_string())?);
    let in_weights = |e: WeightError| format!("{}: {e}", weights.display());
    let config = vit::config_from_weights(&reader, heads).map_err(in_weights)?;
    let device = cpu_device();
    let model = Vit::<Cpu>::load(&config, &mut reader, &device).map_err(in_weights)?;
    let unused = reader.unused();
    let side = config.image_size;
    let x = read_images(input, side)?;
    let out = model.forward(x.to_tensor::<Cpu, 4>(&device));
    let mut result = TensorFile::default();
    result.tensors.insert("final_norm_output".into(), HostTensor::from_tensor(out.tokens.clone()));
    result
        .tensors
        .insert("last_block_attention_cls_mean_heads".into(), HostTensor::from_tensor(out.cls_attention_mean_heads()));
    result.metadata.insert("config".into(), serde_json::to_string(&config).expect("config serialises"));
    result.write(output).map_err(|e| e.to_string())?;
    let summary = format!(
        "ViT: {} blocks, width {}, {} heads, patch {}, {} px; {} image(s); wrote {}",
        config.depth,
        config.dim,
        config.heads,
        config.patch_size,
        side,
        x.shape[0],
        output.display()
    );
    Ok(EncoderRun { unused, summary })
}

/// Run a torchvision-named ResNet on `input` (BatchNorm in `mode`; up-sampled to 299 px when
/// `upsample`) and write its pooled layer-4 feature and layer-3 tokens to `output`.
pub fn resnet(weights: &Path, input: &Path, output: &Path, mode: Mode, upsample: bool) -> Result<EncoderRun, String> {
    let mut reader = WeightReader::new(read_tensors(weights).map_err(|e| e.to_string())?);
    let in_weights = |e: WeightError| format!("{}: {e}", weights.display());
    let config = resnet::config_from_weights(&reader, upsample.then_some(RESNET_UPSAMPLE_SIDE)).map_err(in_weights)?;
    let device = cpu_device();
    let model = ResNet::<Cpu>::load(&config, &mut reader, &device).map_err(in_weights)?;
    let unused = reader.unused();
    let x = read_images(input, RESNET_INPUT_SIDE)?;
    let out = model.forward(x.to_tensor::<Cpu, 4>(&device), mode);
    let mut result = TensorFile::default();
    result.tensors.insert("global".into(), HostTensor::from_tensor(out.global));
    result.tensors.insert("local".into(), HostTensor::from_tensor(out.local.clone()));
    result.metadata.insert("config".into(), serde_json::to_string(&config).expect("config serialises"));
    result.write(output).map_err(|e| e.to_string())?;
    let [_, tokens, width] = out.local.dims();
    let summary = format!(
        "ResNet: width {}, blocks {:?}, {mode:?} BatchNorm; {} image(s); {tokens} local tokens of {width}; wrote {}",
        config.width,
        config.blocks,
        x.shape[0],
        output.display()
    );
    Ok(EncoderRun { unused, summary })
}

/// Tokenise each line of `text_file` to `max_length` tokens and run the BERT in `model`
/// (`config.json`, `model.safetensors`, `tokenizer.json` or `vocab.txt`) with `positions`;
/// write the ids, the last hidden state and the last layer's `[CLS]` attention to `output`.
pub fn bert(
    model: &Path,
    text_file: &Path,
    max_length: usize,
    positions: PositionIds,
    output: &Path,
) -> Result<EncoderRun, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let config_path = model.join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&read(&config_path)?).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let field = |name: &str| {
        config[name]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("{}: no integer `{name}`", config_path.display()))
    };
    let (heads, layers) = (field("num_attention_heads")?, field("num_hidden_layers")?);
    if max_length < MIN_BERT_LENGTH {
        return Err(format!("--max-length {max_length}: at least {MIN_BERT_LENGTH} ([CLS] and [SEP])"));
    }
    let tokenizer = if model.join("tokenizer.json").is_file() {
        ReportTokenizer::from_tokenizer_json(&model.join("tokenizer.json"), Some(max_length))
    } else {
        // Without a tokenizer.json, the casing comes from tokenizer_config.json (cased if absent,
        // as Bio_ClinicalBERT).
        let lowercase = read(&model.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|t| t["do_lower_case"].as_bool())
            .unwrap_or(false);
        ReportTokenizer::from_vocab(&model.join("vocab.txt"), lowercase, Some(max_length))
    }
    .map_err(|e| e.to_string())?;
    let sentences: Vec<String> = read(text_file)?.lines().map(str::to_string).collect();
    if sentences.is_empty() {
        return Err(format!("{}: no sentences", text_file.display()));
    }
    let weights_path = model.join("model.safetensors");
    let mut reader = WeightReader::new(TensorFile::read_numeric(&weights_path).map_err(|e| e.to_string())?);
    let in_weights = |e: WeightError| format!("{}: {e}", weights_path.display());
    let bert_config = bert::config_from_weights(&reader, heads, Some(layers)).map_err(in_weights)?;
    let device = cpu_device();
    let encoder = Bert::<Cpu>::load(&bert_config, &mut reader, &device).map_err(in_weights)?;

    if positions == PositionIds::Standard && max_length > bert_config.max_positions {
        return Err(format!(
            "--max-length {max_length}: more than the {} positions of `embeddings.position_embeddings.weight` in {}",
            bert_config.max_positions,
            weights_path.display()
        ));
    }
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for (line, sentence) in sentences.iter().enumerate() {
        let at = || format!("{} line {}", text_file.display(), line + 1);
        let e = tokenizer.encode(sentence).map_err(|e| format!("{}: {e}", at()))?;
        if e.ids.len() != max_length || e.attention_mask.len() != max_length {
            return Err(format!("{}: {} tokens after padding, expected --max-length {max_length}", at(), e.ids.len()));
        }
        if let Some(id) = e.ids.iter().find(|&&i| i as usize >= bert_config.vocab_size) {
            return Err(format!(
                "{}: token id {id} is outside the model's vocabulary of {} (the tokenizer does not match {})",
                at(),
                bert_config.vocab_size,
                weights_path.display()
            ));
        }
        ids.extend(e.ids.iter().map(|i| *i as i64));
        mask.extend(e.attention_mask.iter().map(|m| *m as f32));
    }
    let n = sentences.len();
    let out = encoder.forward(
        Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.clone(), [n, max_length]), &device),
        Tensor::<Cpu, 2>::from_data(TensorData::new(mask, [n, max_length]), &device),
        positions,
    );
    let mut result = TensorFile::default();
    result.ints.insert("input_ids".into(), (vec![n, max_length], ids));
    result.tensors.insert("last_hidden_state".into(), HostTensor::from_tensor(out.hidden.clone()));
    result
        .tensors
        .insert("last_layer_attention_cls_mean_heads".into(), HostTensor::from_tensor(out.cls_attention_mean_heads()));
    result.write(output).map_err(|e| e.to_string())?;
    let summary = format!(
        "BERT: {} layers, width {}, {} heads, {positions:?} positions; {n} sentence(s) of {max_length} tokens; wrote {}",
        bert_config.layers,
        bert_config.hidden,
        heads,
        output.display()
    );
    Ok(EncoderRun { unused: Vec::new(), summary })
}
