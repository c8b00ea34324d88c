//! `mgca parity yolo` as a user runs it: the cases made by the reference's own `yolo_loss.py`
//! (`golden/reference/detection/gen_yolo_cases.py`), and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::parity::{YOLO_DETECTIONS, YOLO_GRADIENTS, YOLO_LOSS};
use mgca::tensor_file::{HostTensor, TensorFile};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-yolo", name)
}

fn mgca_yolo(input: &Path, output: &Path) -> Output {
    common::mgca().args(["parity", "yolo", "--input"]).arg(input).arg("--output").arg(output).output().unwrap()
}

/// Every committed case: exit 0, `PASS`, and each output within its tolerance of the
/// reference's, checked here on the written file independently of the command's verdict.
#[test]
fn reproduces_the_reference_on_every_case() {
    let cases: Vec<PathBuf> = common::golden_cases("reference/detection")
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("case_"))
        .collect();
    assert_eq!(cases.len(), 4);
    let dir = scratch("reference");
    let mut detections = 0;
    for case in cases {
        let out = dir.join(case.file_name().unwrap());
        let run = mgca_yolo(&case, &out);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(run.status.code(), Some(0), "{}: {stdout}{}", case.display(), String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("PASS"), "{stdout}");
        let (ours, reference) = (TensorFile::read(&out).unwrap(), TensorFile::read(&case).unwrap());
        for (name, tol) in [
            ("yolo.loss", YOLO_LOSS),
            ("yolo.grad.out0", YOLO_GRADIENTS),
            ("yolo.grad.out1", YOLO_GRADIENTS),
            ("yolo.grad.out2", YOLO_GRADIENTS),
            ("yolo.detections", YOLO_DETECTIONS),
        ] {
            let (o, r) = (&ours.tensors[name], &reference.tensors[name]);
            assert_eq!(o.shape, r.shape, "{}: {name}", case.display());
            for (a, b) in o.values.iter().zip(&r.values) {
                assert!(tol.allows(*a as f64, *b as f64), "{}: {name}: {a} vs {b}", case.display());
            }
        }
        detections += ours.tensors["yolo.detections"].shape[0];
    }
    assert!(detections > 100, "the cases exercise NMS ({detections} detections)");
    std::fs::remove_dir_all(dir).ok();
}

/// A missing tensor, a wrong grid and a target outside [0, 1]: exit 2 naming the file and tensor.
#[test]
fn bad_cases_exit_2_naming_the_tensor() {
    let dir = scratch("bad");
    let good = TensorFile::read(&common::golden("reference/detection/case_small.safetensors")).unwrap();
    let mut missing = good.clone();
    missing.tensors.remove("yolo.out1");
    let mut grid = good.clone();
    grid.tensors.insert("yolo.out2".into(), HostTensor { shape: vec![2, 18, 14, 14], values: vec![0.0; 2 * 18 * 196] });
    let mut coordinate = good.clone();
    coordinate.tensors.get_mut("yolo.targets").unwrap().values[1] = 1.5;
    for (name, file, needle) in
        [("missing", missing, "yolo.out1"), ("grid", grid, "yolo.out2"), ("coordinate", coordinate, "yolo.targets")]
    {
        let input = dir.join(format!("{name}.safetensors"));
        file.write(&input).unwrap();
        let run = mgca_yolo(&input, &dir.join("out.safetensors"));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(needle) && stderr.contains(&input.display().to_string()), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(dir).ok();
}
