//! `mgca parity segloss` and the `dice.*` group of `mgca parity metrics` as a user runs them:
//! the cases made by the reference's own `segmentation_loss.py` and `SSLSegmenter.get_dice`
//! (`golden/reference/segmentation/gen_segloss_cases.py`, `golden/python/dice/gen_dice_cases.py`),
//! and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::parity::metrics::REFERENCE_DICE;
use mgca::parity::{SEG_GRADIENTS, SEG_LOSS};
use mgca::tensor_file::{HostTensor, TensorFile};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-segmentation", name)
}

fn mgca(command: &str, input: &Path, output: &Path) -> Output {
    common::mgca().args(["parity", command, "--input"]).arg(input).arg("--output").arg(output).output().unwrap()
}

/// The f32 tensors of a safetensors file (the Dice cases also hold an i64 batch size, which
/// `TensorFile` does not read).
fn floats(path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(n, v)| (n, v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        .collect()
}

/// An output's name and the tolerance it is held to.
type Checked = (&'static str, mgca::parity::Tolerance);

fn cases(folder: &str) -> Vec<PathBuf> {
    common::golden_cases(folder)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("case_"))
        .collect()
}

/// Every committed case: exit 0, `PASS`, and each output within its tolerance of the
/// reference's, checked here on the written file independently of the command's verdict.
#[test]
fn reproduces_the_reference_on_every_case() {
    let dir = scratch("reference");
    let segloss = cases("reference/segmentation");
    let dice = cases("python/dice");
    assert_eq!((segloss.len(), dice.len()), (5, 4));
    let checks: [(&str, &[PathBuf], &[Checked]); 2] = [
        (
            "segloss",
            &segloss,
            &[
                ("seg.loss", SEG_LOSS),
                ("seg.focal", SEG_LOSS),
                ("seg.dice_coef", SEG_LOSS),
                ("seg.grad.logits", SEG_GRADIENTS),
            ],
        ),
        ("metrics", &dice, &[("dice.per_image", REFERENCE_DICE), ("dice.epoch", REFERENCE_DICE)]),
    ];
    for (command, cases, outputs) in checks {
        for case in cases {
            let out = dir.join(case.file_name().unwrap());
            let run = mgca(command, case, &out);
            let stdout = String::from_utf8_lossy(&run.stdout);
            assert_eq!(
                run.status.code(),
                Some(0),
                "{}: {stdout}{}",
                case.display(),
                String::from_utf8_lossy(&run.stderr)
            );
            assert!(stdout.contains("PASS"), "{stdout}");
            let (ours, reference) = (floats(&out), floats(case));
            for (name, tol) in outputs {
                let (o, r) = (&ours[*name], &reference[*name]);
                assert_eq!(o.len(), r.len(), "{}: {name}", case.display());
                for (a, b) in o.iter().zip(r) {
                    assert!(tol.allows(*a as f64, *b as f64), "{}: {name}: {a} vs {b}", case.display());
                }
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// A missing tensor, mismatched shapes and a target outside [0, 1]: exit 2 naming the file and
/// the tensor.
#[test]
fn bad_cases_exit_2_naming_the_tensor() {
    let dir = scratch("bad");
    let good = TensorFile::read(&common::golden("reference/segmentation/case_hard_masks.safetensors")).unwrap();
    let mut missing = good.clone();
    missing.tensors.remove("seg.targets");
    let mut shape = good.clone();
    shape.tensors.insert("seg.targets".into(), HostTensor { shape: vec![3, 32, 31], values: vec![0.0; 3 * 32 * 31] });
    let mut value = good.clone();
    value.tensors.get_mut("seg.targets").unwrap().values[7] = 1.5;
    for (name, file, needle) in
        [("missing", missing, "seg.targets"), ("shape", shape, "seg.targets"), ("value", value, "seg.targets")]
    {
        let input = dir.join(format!("{name}.safetensors"));
        file.write(&input).unwrap();
        let run = mgca("segloss", &input, &dir.join("out.safetensors"));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(needle) && stderr.contains(&input.display().to_string()), "{name}: {stderr}");
    }
    // A Dice case whose probabilities leave [0, 1].
    let bytes = std::fs::read(common::golden("python/dice/case_one_batch.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        file.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    let probs = owned.iter_mut().find(|t| t.0 == "dice.probs").unwrap();
    probs.3[12..16].copy_from_slice(&(-0.5f32).to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let input = dir.join("dice.safetensors");
    std::fs::write(&input, safetensors::serialize(views, None).unwrap()).unwrap();
    let run = mgca("metrics", &input, &dir.join("out.safetensors"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dice.probs"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}
