//! The bad-input corpus through the real `mgca` binary (issue 11): the cases of
//! `tests/bad_inputs/cases.toml` whose command is `mgca`, with the generators of the files too
//! large or too binary to keep in the repository. The `pretrain` cases run in
//! `reproductions/tests/bad_inputs.rs`. Book: the appendix "What happens when things go wrong".

#[path = "bad_inputs/runner.rs"]
mod runner;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::golden;
use mgca::parity::formula_images;
use mgca::tensor_file::{HostTensor, TensorFile};

/// The first reference loss case, edited.
fn loss_case(tmp: &Path, edit: impl FnOnce(&mut TensorFile)) -> Result<(), String> {
    let mut file = TensorFile::read(&golden("reference/losses/mid_vit.safetensors")).map_err(|e| e.to_string())?;
    edit(&mut file);
    file.write(&tmp.join("case.safetensors")).map_err(|e| e.to_string())
}

fn write_tensor(path: &Path, name: &str, t: HostTensor) -> Result<(), String> {
    let mut file = TensorFile::default();
    file.tensors.insert(name.into(), t);
    file.write(path).map_err(|e| e.to_string())
}

/// An image folder `tmp/root` with `name` and a one-row manifest naming it.
fn image_manifest(tmp: &Path, name: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(tmp.join("root")).map_err(|e| e.to_string())?;
    std::fs::write(tmp.join("manifest.csv"), format!("path\n{name}\n")).map_err(|e| e.to_string())?;
    Ok(tmp.join("root").join(name))
}

/// A smooth grey gradient, `width × height`.
fn gradient(width: u32, height: u32) -> image::GrayImage {
    image::GrayImage::from_fn(width, height, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]))
}

/// The `gen NAME` steps of the `mgca` cases.
fn generate(name: &str, tmp: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match name {
        "vit_flat_pos_embed" => {
            let mut f =
                TensorFile::read(&golden("reference/encoders/vit_tiny_d2_weights.safetensors")).map_err(|e| err(&e))?;
            let t = f.tensors.get_mut("pos_embed").ok_or("no pos_embed")?;
            t.shape = vec![t.values.len()];
            f.write(&tmp.join("weights.safetensors")).map_err(|e| err(&e))
        }
        "vit_input_rank3" => {
            let mut x = formula_images(1, 224);
            x.shape.remove(0);
            write_tensor(&tmp.join("input.safetensors"), "input", x)
        }
        "resnet_flat_stem" => {
            let mut f =
                TensorFile::read_numeric(&golden("pytorch/resnet/resnet_weights.safetensors")).map_err(|e| err(&e))?;
            let t = f.tensors.get_mut("conv1.weight").ok_or("no conv1.weight")?;
            t.shape = vec![t.values.len()];
            f.write(&tmp.join("weights.safetensors")).map_err(|e| err(&e))
        }
        "resnet_input" => write_tensor(&tmp.join("input.safetensors"), "input", formula_images(1, 224)),
        "resnet_input_rank5" => {
            let mut x = formula_images(1, 224);
            x.shape.insert(0, 1);
            write_tensor(&tmp.join("input.safetensors"), "input", x)
        }
        "losses_tau0" => loss_case(tmp, |f| {
            let json = f.metadata["fixture"].replace("\"local_temperature\": 0.1", "\"local_temperature\": 0.0");
            f.metadata.insert("fixture".into(), json);
        }),
        "losses_tiny_tau" => loss_case(tmp, |f| {
            let json = f.metadata["fixture"].replace("\"proto_temperature\": 0.2", "\"proto_temperature\": 1e-30");
            f.metadata.insert("fixture".into(), json);
        }),
        "losses_all_padded" => loss_case(tmp, |f| {
            let w = f.tensors["in.word_pad_mask"].shape[1];
            f.tensors.get_mut("in.word_pad_mask").unwrap().values[..w].fill(1.0);
            f.tensors.get_mut("in.word_attn").unwrap().values[..w].fill(0.0);
        }),
        "losses_missing_tensor" => loss_case(tmp, |f| {
            f.tensors.remove("in.word_emb");
        }),
        "losses_int_dtype" => loss_case(tmp, |f| {
            let t = f.tensors.remove("in.word_pad_mask").unwrap();
            f.ints.insert("in.word_pad_mask".into(), (t.shape, t.values.iter().map(|v| *v as i64).collect()));
        }),
        "losses_rank1" => loss_case(tmp, |f| {
            let t = f.tensors.get_mut("in.patch_emb").unwrap();
            t.shape = vec![t.values.len()];
        }),
        "sentence" => std::fs::write(tmp.join("text.txt"), "No acute cardiopulmonary process.\n").map_err(|e| err(&e)),
        "bert_zero_heads" => {
            let model = tmp.join("model");
            std::fs::create_dir_all(&model).map_err(|e| err(&e))?;
            let minilm = mgca::assets::minilm_dir()?;
            for file in ["model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"] {
                if minilm.join(file).is_file() {
                    std::os::unix::fs::symlink(minilm.join(file), model.join(file)).map_err(|e| err(&e))?;
                }
            }
            let config = r#"{"num_attention_heads": 0, "num_hidden_layers": 6}"#;
            std::fs::write(model.join("config.json"), config).map_err(|e| err(&e))
        }
        "truncated_jpeg" => {
            let path = image_manifest(tmp, "bad.jpg")?;
            gradient(256, 256).save(&path).map_err(|e| err(&e))?;
            let bytes = std::fs::read(&path).map_err(|e| err(&e))?;
            std::fs::write(&path, &bytes[..bytes.len() / 2]).map_err(|e| err(&e))
        }
        "wide_png" => {
            let path = image_manifest(tmp, "wide.png")?;
            gradient(600, 2).save(&path).map_err(|e| err(&e))
        }
        "tall_dicom" => {
            let path = image_manifest(tmp, "tall.dcm")?;
            // 4 rows of 25600 columns.
            let g = gradient(25600, 4);
            let img = mgca::data::resize::Gray::new(4, 25600, g.into_raw());
            mgca::data::image::write_dicom(&path, &img, "1.2.3.4", false, false).map_err(|e| err(&e))
        }
        other => Err(format!("no generator `{other}`")),
    }
}

fn harness() -> runner::Harness<'static> {
    let minilm = mgca::assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
    runner::Harness {
        binaries: BTreeMap::from([("mgca", PathBuf::from(env!("CARGO_BIN_EXE_mgca")))]),
        generate: &generate,
        placeholders: vec![("minilm".into(), minilm.display().to_string())],
        interim_bad_input_exit: None,
    }
}

/// The table is well-formed: known binaries, every corpus file it names exists, every issue
/// finding is covered by some owner.
#[test]
fn the_corpus_is_well_formed() {
    let cases = runner::read_cases();
    assert!(cases.len() >= 30, "{}", cases.len());
    let corpus = runner::corpus_dir();
    for case in &cases {
        assert!(["mgca", "pretrain"].contains(&case.command[0].as_str()), "case {}: binary", case.name);
        let all = case.command.iter().chain(case.before.iter().flatten());
        for arg in all.filter(|a| a.starts_with("{corpus}/")) {
            let path = corpus.join(arg.trim_start_matches("{corpus}/"));
            assert!(path.is_file(), "case {}: {} is missing", case.name, path.display());
        }
    }
    for owner in runner::OWNERS {
        assert!(cases.iter().any(|c| c.owner == *owner), "no case for {owner}");
    }
}

/// Every enabled `mgca` case: its exit code and the words of its message.
#[test]
fn mgca_cases_exit_and_name_their_cause() {
    let cases = runner::read_cases();
    let h = harness();
    let ran = h.run_all(&cases);
    let own = cases.iter().filter(|c| c.owner == "cfg" && h.runs(c)).count();
    assert!(ran.len() >= own, "ran {ran:?}");
}
