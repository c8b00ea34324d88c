//! `mgca parity resnet` as a user runs it: the torchvision case in both BatchNorm modes, the
//! 224 px variant without up-sampling, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::parity::{Agreement, RESNET_FEATURES, formula_images};
use mgca::tensor_file::TensorFile;

fn golden(name: &str) -> PathBuf {
    common::golden(&format!("pytorch/resnet/{name}"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-resnet", name)
}

/// The two formula images of `make_resnet.py`, as a user's `input` file.
fn input(dir: &Path) -> PathBuf {
    let mut file = TensorFile::default();
    file.tensors.insert("input".into(), formula_images(2, 224));
    let path = dir.join("input.safetensors");
    file.write(&path).unwrap();
    path
}

fn mgca_resnet(weights: &Path, input: &Path, output: &Path, extra: &[&str]) -> Output {
    common::mgca()
        .args(["parity", "resnet", "--weights"])
        .arg(weights)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn reproduces_torchvision_in_both_batchnorm_modes() {
    let dir = scratch("modes");
    let x = input(&dir);
    let want = TensorFile::read(&golden("resnet_outputs.safetensors")).unwrap();
    for mode in ["eval", "train"] {
        let out = dir.join(format!("{mode}.safetensors"));
        let run = mgca_resnet(&golden("resnet_weights.safetensors"), &x, &out, &["--mode", mode]);
        assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(stdout.contains("unused checkpoint keys: fc.bias, fc.weight"), "{stdout}");
        let ours = TensorFile::read(&out).unwrap();
        for part in ["global", "local"] {
            let name = format!("{mode}.{part}");
            let a = Agreement::measure(&name, &ours.tensors[part], &want.tensors[&name], RESNET_FEATURES);
            assert!(a.ok, "{a}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn without_upsampling_layer3_has_14_by_14_tokens() {
    let dir = scratch("plain");
    let out = dir.join("out.safetensors");
    let run = mgca_resnet(&golden("resnet_weights.safetensors"), &input(&dir), &out, &["--no-upsample"]);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let ours = TensorFile::read(&out).unwrap();
    assert_eq!(ours.tensors["local"].shape, vec![2, 196, 64]);
    assert_eq!(ours.tensors["global"].shape, vec![2, 128]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_exits_2_and_names_it() {
    let dir = scratch("bad");
    let weights = golden("resnet_weights.safetensors");
    let mut small = TensorFile::default();
    small.tensors.insert("input".into(), formula_images(1, 200));
    small.write(&dir.join("small.safetensors")).unwrap();
    let run = mgca_resnet(&weights, &dir.join("small.safetensors"), &dir.join("o.safetensors"), &[]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("small.safetensors") && err.contains("`input`") && err.contains("[1, 3, 200, 200]"), "{err}");

    let mut broken = TensorFile::read_numeric(&weights).unwrap();
    broken.tensors.remove("layer4.0.bn2.weight");
    broken.write(&dir.join("broken.safetensors")).unwrap();
    let run = mgca_resnet(&dir.join("broken.safetensors"), &input(&dir), &dir.join("o.safetensors"), &[]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("broken.safetensors") && err.contains("layer4.0.bn2.weight"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// Odd ranks in the weights or the input exit 2 naming the tensor and the expected shape.
#[test]
fn odd_ranks_exit_2_and_name_the_tensor() {
    let dir = scratch("ranks");
    let weights = golden("resnet_weights.safetensors");
    let out = dir.join("o.safetensors");
    for (key, pattern) in [("conv1.weight", "[64, 3, 7, 7]"), ("layer1.0.conv3.weight", "[256, 64, 1, 1]")] {
        let mut file = TensorFile::read_numeric(&weights).unwrap();
        let t = file.tensors.get_mut(key).unwrap();
        t.shape = vec![t.values.len()];
        let path = dir.join("flat.safetensors");
        file.write(&path).unwrap();
        let run = mgca_resnet(&path, &input(&dir), &out, &[]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(err.contains("flat.safetensors") && err.contains(key) && err.contains(pattern), "{err}");
    }
    let mut five = TensorFile::default();
    let mut x = formula_images(1, 224);
    x.shape.insert(0, 1);
    five.tensors.insert("input".into(), x);
    five.write(&dir.join("five.safetensors")).unwrap();
    let run = mgca_resnet(&weights, &dir.join("five.safetensors"), &out, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("five.safetensors") && err.contains("[1, 1, 3, 224, 224]"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
