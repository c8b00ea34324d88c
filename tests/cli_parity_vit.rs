//! `mgca parity vit` as a user runs it: timm's tiny ViT fixture, a deeper batch it was not
//! written for (checked against the library), and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mgca::parity::{Agreement, HostTensor, TensorFile, Tolerance};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/reference/encoders").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mgca-cli-vit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mgca_vit(weights: &Path, heads: &str, input: &Path, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mgca"))
        .args(["parity", "vit", "--heads", heads, "--weights"])
        .arg(weights)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

#[test]
fn reproduces_timm_on_the_tiny_fixture() {
    let dir = scratch("tiny");
    let out = dir.join("out.safetensors");
    let run = mgca_vit(&golden("vit_tiny_d2_weights.safetensors"), "3", &golden("vit_input.safetensors"), &out);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let ours = TensorFile::read(&out).unwrap();
    let want = TensorFile::read(&golden("vit_tiny_d2_outputs.safetensors")).unwrap();
    for (name, abs) in [("final_norm_output", 1e-4), ("last_block_attention_cls_mean_heads", 1e-5)] {
        let a = Agreement::measure(name, &ours.tensors[name], &want.tensors[name], Tolerance { abs, rel: 0.0 });
        assert!(a.ok, "{a}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A batch of two images (the fixture's and its negative) through the command gives, per
/// image, what a batch of one gives: the batch dimension is handled, not assumed to be 1.
#[test]
fn batches_are_independent() {
    let dir = scratch("batch");
    let input = TensorFile::read(&golden("vit_input.safetensors")).unwrap();
    let x = &input.tensors["input"];
    let mut two = TensorFile::default();
    let values: Vec<f32> = x.values.iter().copied().chain(x.values.iter().map(|v| -v)).collect();
    two.tensors.insert("input".into(), HostTensor { shape: vec![2, 3, 224, 224], values });
    two.write(&dir.join("two.safetensors")).unwrap();
    let weights = golden("vit_tiny_d2_weights.safetensors");
    let run = mgca_vit(&weights, "3", &dir.join("two.safetensors"), &dir.join("out2.safetensors"));
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let run = mgca_vit(&weights, "3", &golden("vit_input.safetensors"), &dir.join("out1.safetensors"));
    assert_eq!(run.status.code(), Some(0));
    let (two, one) = (
        TensorFile::read(&dir.join("out2.safetensors")).unwrap(),
        TensorFile::read(&dir.join("out1.safetensors")).unwrap(),
    );
    let first = &two.tensors["final_norm_output"];
    assert_eq!(first.shape, vec![2, 197, 192]);
    let half = first.values.len() / 2;
    let head = HostTensor { shape: vec![1, 197, 192], values: first.values[..half].to_vec() };
    let a =
        Agreement::measure("first image", &head, &one.tensors["final_norm_output"], Tolerance { abs: 1e-5, rel: 0.0 });
    assert!(a.ok, "{a}");
    assert!(first.values[..half] != first.values[half..], "the two images differ");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_exits_2_and_names_it() {
    let dir = scratch("bad");
    let weights = golden("vit_tiny_d2_weights.safetensors");
    let input = golden("vit_input.safetensors");
    let out = dir.join("out.safetensors");

    let mut broken = TensorFile::read(&weights).unwrap();
    broken.tensors.remove("blocks.1.mlp.fc2.weight");
    broken.write(&dir.join("broken.safetensors")).unwrap();
    let cases: [(&Path, &str, &Path, &str); 4] = [
        (&dir.join("broken.safetensors"), "3", &input, "blocks.1.mlp.fc2.weight"),
        (&weights, "5", &input, "not divisible by 5 heads"),
        (&weights, "3", &dir.join("absent.safetensors"), "absent.safetensors"),
        (&weights, "3", &weights, "missing tensor `input`"),
    ];
    for (w, heads, x, what) in cases {
        let run = mgca_vit(w, heads, x, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(what), "`{stderr}` does not name `{what}`");
    }
    std::fs::remove_dir_all(dir).ok();
}
