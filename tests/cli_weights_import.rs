//! `mgca weights import` as a user runs it on published-style checkpoints, and the parity
//! commands reading `torch.save` files directly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::tensor_file::TensorFile;

fn golden(dir: &str, name: &str) -> PathBuf {
    common::golden(&format!("{dir}/{name}"))
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-weights", name)
}

fn mgca(args: &[&str], paths: &[&Path]) -> Output {
    let mut cmd = common::mgca();
    cmd.args(args);
    for p in paths {
        cmd.arg(p);
    }
    cmd.output().unwrap()
}

#[test]
fn imports_a_lightning_checkpoint_and_writes_mgca_names() {
    let dir = scratch("lightning");
    let out = dir.join("mgca.safetensors");
    let ckpt = golden("pytorch/checkpoints", "mgca_vit_style.ckpt");
    let run =
        mgca(&["weights", "import", "--layout", "mgca-lightning", "--preset", "smoke", "--output"], &[&out, &ckpt]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("tensors from entry `state_dict`"), "{stdout}");
    assert!(stdout.contains("ignore text_encoder_q.model.encoder.layer.*.crossattention: 20"), "{stdout}");
    assert!(stdout.contains("missing keys: none; unexpected keys: none"), "{stdout}");
    let file = TensorFile::read(&out).unwrap();
    assert_eq!(file.tensors["prototypes"].shape, vec![16, 32]);
    assert!(file.metadata["config"].contains("\"image_encoder\":\"vit_base\""));
    // The written file is itself importable (safetensors under mgca-rs names is a checkpoint too).
    assert!(file.tensors.contains_key("image.cls_token") && file.tensors.contains_key("text_local.4.running_var"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_damaged_checkpoint_exits_2_and_names_the_file() {
    let dir = scratch("damaged");
    let bytes = std::fs::read(golden("pytorch/checkpoints", "deit_style.pth")).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let run = mgca(&["weights", "import", "--layout", "deit"], &[&cut]);
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("cut.pth"), "{err}");
    // The wrong layout: the key the model needs is named.
    let run = mgca(
        &["weights", "import", "--layout", "torchvision-resnet"],
        &[&golden("pytorch/checkpoints", "deit_style.pth")],
    );
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("image.conv1.weight"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The crashes: a legacy `.pth` whose storage count asks for 191 GB aborted, and a bad
/// zip central-directory entry panicked. Both now exit 2 naming the file.
#[test]
fn corrupt_containers_exit_2_not_crash() {
    let dir = scratch("corrupt");
    // Legacy: the first storage's 8-byte element count, just after the five pickles, set huge.
    let mut legacy = std::fs::read(golden("pytorch/checkpoints", "bio_clinicalbert_style.bin")).unwrap();
    let storages = legacy.len() - legacy_data_len(&legacy);
    legacy[storages + 5] = 0x2c;
    let bad = dir.join("pytorch_model.bin");
    std::fs::write(&bad, &legacy).unwrap();
    let run = mgca(&["weights", "import", "--layout", "bio-clinicalbert"], &[&bad]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("pytorch_model.bin") && err.contains("storage"), "{err}");
    // Zip: the first central-directory entry's name length set past the directory.
    let mut zip = std::fs::read(golden("pytorch/checkpoints", "deit_style.pth")).unwrap();
    let cd = zip.windows(4).rposition(|w| w == [0x50, 0x4b, 0x01, 0x02]).unwrap();
    zip[cd + 28..cd + 30].copy_from_slice(&[0xff, 0xff]);
    let bad = dir.join("deit.pth");
    std::fs::write(&bad, &zip).unwrap();
    let run = mgca(&["weights", "import", "--layout", "deit"], &[&bad]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("deit.pth") && err.contains("zip"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The bytes of a legacy checkpoint's storages (after its five pickles), found with the
/// library's pickle reader.
fn legacy_data_len(bytes: &[u8]) -> usize {
    let mut offset = 0;
    for _ in 0..5 {
        let (_, used) =
            mgca::weights::pickle::read(&bytes[offset..], &mut mgca::weights::pickle::torch_storage).unwrap();
        offset += used;
    }
    bytes.len() - offset
}

/// `parity vit` and `parity resnet` take `torch.save` files as they are published.
#[test]
fn parity_commands_read_torch_save_files() {
    let dir = scratch("torchsave");
    let input = golden("reference/encoders", "vit_input.safetensors");
    let run = mgca(
        &["parity", "vit", "--heads", "2", "--weights"],
        &[
            &golden("pytorch/checkpoints", "deit_style.pth"),
            Path::new("--input"),
            &input,
            Path::new("--output"),
            &dir.join("v.safetensors"),
        ],
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("unused checkpoint keys: head.bias, head.weight"), "{stdout}");
    assert_eq!(
        TensorFile::read(&dir.join("v.safetensors")).unwrap().tensors["final_norm_output"].shape,
        vec![1, 197, 8]
    );
    let run = mgca(
        &["parity", "resnet", "--weights"],
        &[
            &golden("pytorch/checkpoints", "torchvision_style.pth"),
            Path::new("--input"),
            &input,
            Path::new("--output"),
            &dir.join("r.safetensors"),
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(TensorFile::read(&dir.join("r.safetensors")).unwrap().tensors["local"].shape, vec![1, 361, 64]);
    std::fs::remove_dir_all(dir).ok();
}
