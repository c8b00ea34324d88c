//! `mgca parity vit` as a user runs it: timm's tiny ViT fixture, a deeper batch it was not
//! written for (checked against the library), and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::parity::{ATTENTION, Agreement, HIDDEN_STATES, SAME_COMPUTATION};
use mgca::tensor_file::{HostTensor, TensorFile};

fn golden(name: &str) -> PathBuf {
    common::golden(&format!("reference/encoders/{name}"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-vit", name)
}

fn mgca_vit(weights: &Path, heads: &str, input: &Path, output: &Path) -> Output {
    common::mgca()
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
    for (name, tol) in [("final_norm_output", HIDDEN_STATES), ("last_block_attention_cls_mean_heads", ATTENTION)] {
        let a = Agreement::measure(name, &ours.tensors[name], &want.tensors[name], tol);
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
    let a = Agreement::measure("first image", &head, &one.tensors["final_norm_output"], SAME_COMPUTATION);
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

/// Head counts and tensor ranks that used to panic exit 2 and name the tensor or the heads.
#[test]
fn zero_heads_and_odd_ranks_exit_2() {
    let dir = scratch("ranks");
    let weights = golden("vit_tiny_d2_weights.safetensors");
    let input = golden("vit_input.safetensors");
    let out = dir.join("out.safetensors");
    let edited = |name: &str, edit: &dyn Fn(&mut TensorFile)| {
        let mut file = TensorFile::read(&weights).unwrap();
        edit(&mut file);
        let path = dir.join(name);
        file.write(&path).unwrap();
        path
    };
    let flat = |t: &mut HostTensor| t.shape = vec![t.values.len()];
    let pos_flat = edited("pos_flat.safetensors", &|f| flat(f.tensors.get_mut("pos_embed").unwrap()));
    let patch_flat = edited("patch_flat.safetensors", &|f| flat(f.tensors.get_mut("patch_embed.proj.weight").unwrap()));
    let pos_empty = edited("pos_empty.safetensors", &|f| {
        f.tensors.insert("pos_embed".into(), HostTensor { shape: vec![1, 1, 192], values: vec![0.0; 192] });
    });
    let scalar = edited("fc1_scalar.safetensors", &|f| {
        f.tensors.insert("blocks.0.mlp.fc1.weight".into(), HostTensor { shape: vec![], values: vec![0.0] });
    });
    let mut rank3 = TensorFile::read(&input).unwrap();
    let x = rank3.tensors.get_mut("input").unwrap();
    x.shape.remove(0);
    rank3.write(&dir.join("rank3.safetensors")).unwrap();
    let mut none = TensorFile::default();
    none.tensors.insert("input".into(), HostTensor { shape: vec![0, 3, 224, 224], values: vec![] });
    none.write(&dir.join("none.safetensors")).unwrap();
    let cases: [(&Path, &str, &Path, &[&str]); 7] = [
        (&weights, "0", &input, &["0 attention heads", "vit_tiny_d2_weights.safetensors"]),
        (&pos_flat, "3", &input, &["pos_flat.safetensors", "`pos_embed`", "[1, 1 + M, D]"]),
        (&patch_flat, "3", &input, &["patch_flat.safetensors", "`patch_embed.proj.weight`", "[D, 3, p, p]"]),
        (&pos_empty, "3", &input, &["pos_empty.safetensors", "`pos_embed`", "0 patch positions"]),
        (&scalar, "3", &input, &["fc1_scalar.safetensors", "`blocks.0.mlp.fc1.weight`", "[mlp, D]"]),
        (&weights, "3", &dir.join("rank3.safetensors"), &["rank3.safetensors", "`input`", "[N, 3, 224, 224]"]),
        (&weights, "3", &dir.join("none.safetensors"), &["none.safetensors", "`input`", "N >= 1"]),
    ];
    for (w, heads, x, words) in cases {
        let run = mgca_vit(w, heads, x, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{words:?}: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "`{stderr}` does not name `{word}`");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
