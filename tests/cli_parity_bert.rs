//! `mgca parity bert` as a user runs it: the real all-MiniLM-L6-v2 (fetched by
//! `cargo xtask assets`) against transformers' outputs, reports it was not written for
//! (checked against the library), and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::parity::{ATTENTION, Agreement, HIDDEN_STATES, SAME_COMPUTATION};
use mgca::tensor_file::{HostTensor, TensorFile};

fn minilm() -> PathBuf {
    mgca::assets::minilm_dir().unwrap_or_else(|e| panic!("{e}"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-bert", name)
}

fn mgca_bert(model: &Path, text: &Path, max_length: &str, positions: &str, output: &Path) -> Output {
    common::mgca()
        .args(["parity", "bert", "--max-length", max_length, "--positions", positions, "--model"])
        .arg(model)
        .arg("--text-file")
        .arg(text)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

/// Keep the `[n, t, inner]` rows where the attention mask is 1.
fn real_rows(t: &HostTensor, mask: &[f32], inner: usize) -> HostTensor {
    let values = t.values.chunks_exact(inner).zip(mask).filter(|(_, m)| **m == 1.0).flat_map(|(c, _)| c.to_vec());
    HostTensor { shape: vec![], values: values.collect() }
}

/// The fixture's three sentences, padded to 19 as transformers padded them.
#[test]
fn reproduces_transformers_on_minilm() {
    let dir = scratch("minilm");
    let fixture = common::golden("reference/encoders");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("minilm_reference.json")).unwrap()).unwrap();
    let text: Vec<&str> = meta["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
    std::fs::write(dir.join("text.txt"), text.join("\n")).unwrap();
    let out = dir.join("out.safetensors");
    let run = mgca_bert(&minilm(), &dir.join("text.txt"), "19", "standard", &out);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));

    let ours = TensorFile::read_numeric(&out).unwrap();
    let want = TensorFile::read_numeric(&fixture.join("minilm_reference.safetensors")).unwrap();
    assert_eq!(ours.tensors["input_ids"], want.tensors["input_ids"]);
    let mask = &want.tensors["attention_mask"].values;
    let a = Agreement::measure(
        "last_hidden_state",
        &real_rows(&ours.tensors["last_hidden_state"], mask, 384),
        &real_rows(&want.tensors["last_hidden_state"], mask, 384),
        HIDDEN_STATES,
    );
    assert!(a.ok, "{a}");
    let name = "last_layer_attention_cls_mean_heads";
    let a = Agreement::measure(name, &ours.tensors[name], &want.tensors[name], ATTENTION);
    assert!(a.ok, "{a}");
    std::fs::remove_dir_all(dir).ok();
}

/// Other reports, 112 tokens, the reference's positions: every sentence gets exactly 112 ids,
/// and a sentence's outputs do not depend on the others in the file.
#[test]
fn sentences_are_independent_at_112_tokens() {
    let dir = scratch("112");
    let lines = ["Heart size normal.", "Interval increase in right upper lobe opacity, concerning for pneumonia."];
    std::fs::write(dir.join("two.txt"), lines.join("\n")).unwrap();
    std::fs::write(dir.join("one.txt"), lines[1]).unwrap();
    let (two, one) = (dir.join("two.safetensors"), dir.join("one.safetensors"));
    assert_eq!(mgca_bert(&minilm(), &dir.join("two.txt"), "112", "reference", &two).status.code(), Some(0));
    assert_eq!(mgca_bert(&minilm(), &dir.join("one.txt"), "112", "reference", &one).status.code(), Some(0));
    let (two, one) = (TensorFile::read_numeric(&two).unwrap(), TensorFile::read_numeric(&one).unwrap());
    assert_eq!(two.tensors["input_ids"].shape, vec![2, 112]);
    let second =
        HostTensor { shape: vec![1, 112, 384], values: two.tensors["last_hidden_state"].values[112 * 384..].to_vec() };
    let a = Agreement::measure("second sentence", &second, &one.tensors["last_hidden_state"], SAME_COMPUTATION);
    assert!(a.ok, "{a}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_exits_2_and_names_it() {
    let dir = scratch("bad");
    std::fs::write(dir.join("text.txt"), "No acute process.").unwrap();
    std::fs::write(dir.join("empty.txt"), "").unwrap();
    let out = dir.join("out.safetensors");
    let cases: [(&Path, &Path, &str); 3] = [
        (&dir, &dir.join("text.txt"), "config.json"),
        (&minilm(), &dir.join("absent.txt"), "absent.txt"),
        (&minilm(), &dir.join("empty.txt"), "no sentences"),
    ];
    for (model, text, what) in cases {
        let run = mgca_bert(model, text, "112", "reference", &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(what), "`{stderr}` does not name `{what}`");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A model folder like MiniLM's whose `config.json` is replaced by `config`.
fn model_with_config(dir: &Path, config: &str) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for name in ["model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"] {
        if minilm().join(name).is_file() && !model.join(name).exists() {
            std::os::unix::fs::symlink(minilm().join(name), model.join(name)).unwrap();
        }
    }
    std::fs::write(model.join("config.json"), config).unwrap();
    model
}

/// Head counts and lengths that used to panic exit 2 and name the cause.
#[test]
fn zero_heads_and_bad_lengths_exit_2() {
    let dir = scratch("heads");
    std::fs::write(dir.join("text.txt"), "No acute process.").unwrap();
    let out = dir.join("out.safetensors");
    let zero = model_with_config(&dir, r#"{"num_attention_heads": 0, "num_hidden_layers": 6}"#);
    let run = mgca_bert(&zero, &dir.join("text.txt"), "16", "reference", &out);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("0 attention heads") && err.contains("model.safetensors"), "{err}");
    for (length, positions, words) in [
        ("1", "reference", ["--max-length 1", "[CLS] and [SEP]"]),
        ("0", "standard", ["--max-length 0", "[CLS] and [SEP]"]),
        ("600", "standard", ["--max-length 600", "position_embeddings"]),
    ] {
        let run = mgca_bert(&minilm(), &dir.join("text.txt"), length, positions, &out);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{length}: {err}");
        for word in words {
            assert!(err.contains(word), "`{err}` does not name `{word}`");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
