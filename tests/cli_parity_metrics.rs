//! `mgca parity metrics` as a user runs it: the scikit-learn cases committed in
//! `golden/python/metrics/` (inputs and sklearn's outputs under the same names), one group
//! alone, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use mgca::metrics::SKLEARN_TOLERANCE;
use mgca::tensor_file::{HostTensor, TensorFile};

fn scratch(name: &str) -> PathBuf {
    common::scratch("cli-metrics", name)
}

fn mgca_metrics(input: &Path, output: &Path) -> Output {
    common::mgca().args(["parity", "metrics", "--input"]).arg(input).arg("--output").arg(output).output().unwrap()
}

/// Every committed case: exit 0, `PASS`, and each output within [`SKLEARN_TOLERANCE`] of
/// scikit-learn's, checked here on the written file independently of the command's verdict.
#[test]
fn reproduces_scikit_learn_on_every_case() {
    let cases = common::golden_cases("python/metrics");
    assert_eq!(cases.len(), 3);
    let dir = scratch("sklearn");
    for case in cases {
        let out = dir.join(case.file_name().unwrap());
        let run = mgca_metrics(&case, &out);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert_eq!(run.status.code(), Some(0), "{}: {stdout}{}", case.display(), String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("PASS"), "{stdout}");
        let ours = TensorFile::read(&out).unwrap();
        let sklearn = TensorFile::read_numeric(&case).unwrap();
        for (name, shape) in [("auroc.per_class", None), ("auroc.macro", Some(vec![])), ("accuracy", Some(vec![]))] {
            let (o, s) = (&ours.tensors[name], &sklearn.tensors[name]);
            assert_eq!(o.shape, shape.unwrap_or_else(|| s.shape.clone()), "{name}");
            for (a, b) in o.values.iter().zip(&s.values) {
                assert!(((a - b).abs() as f64) <= SKLEARN_TOLERANCE, "{}: {name}: {a} vs {b}", case.display());
            }
        }
        let accuracy = ours.tensors["accuracy"].values[0];
        assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Inputs of one group, no reference outputs: that group's outputs only, nothing compared.
#[test]
fn one_group_alone_writes_its_outputs() {
    let dir = scratch("alone");
    let case = TensorFile::read_numeric(&common::golden("python/metrics/case_covidx_ties.safetensors")).unwrap();
    let mut file = TensorFile::default();
    file.tensors.insert("accuracy.scores".into(), case.tensors["accuracy.scores"].clone());
    let labels = &case.tensors["accuracy.labels"];
    file.ints
        .insert("accuracy.labels".into(), (labels.shape.clone(), labels.values.iter().map(|v| *v as i64).collect()));
    file.write(&dir.join("in.safetensors")).unwrap();
    let run = mgca_metrics(&dir.join("in.safetensors"), &dir.join("out.safetensors"));
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!String::from_utf8_lossy(&run.stdout).contains("PASS"));
    let out = TensorFile::read(&dir.join("out.safetensors")).unwrap();
    assert_eq!(out.tensors.keys().collect::<Vec<_>>(), ["accuracy"]);
    std::fs::remove_dir_all(dir).ok();
}

/// Bad input exits 2, names the tensor and the problem, and writes nothing.
#[test]
fn bad_input_exits_2_and_names_it() {
    let dir = scratch("bad");
    let case = common::golden("python/metrics/case_chexpert_like.safetensors");
    let edited = |name: &str, edit: &dyn Fn(&mut TensorFile)| {
        let mut file = TensorFile::read_numeric(&case).unwrap();
        // read_numeric turned the i64 labels into f32: write them back as i64.
        let labels = file.tensors.remove("accuracy.labels").unwrap();
        file.ints.insert("accuracy.labels".into(), (labels.shape, labels.values.iter().map(|v| *v as i64).collect()));
        edit(&mut file);
        let path = dir.join(name);
        file.write(&path).unwrap();
        path
    };
    let column = |f: &mut TensorFile, c: usize, value: f32| {
        let t = f.tensors.get_mut("auroc.labels").unwrap();
        let classes = t.shape[1];
        t.values.iter_mut().skip(c).step_by(classes).for_each(|v| *v = value);
    };
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            edited("nothing.safetensors", &|f| {
                f.tensors.clear();
                f.ints.clear();
                f.tensors.insert("other".into(), HostTensor { shape: vec![1], values: vec![0.0] });
            }),
            vec!["nothing.safetensors", "auroc.scores", "accuracy.scores"],
        ),
        (
            edited("one_class.safetensors", &|f| column(f, 2, 1.0)),
            vec!["one_class.safetensors", "`auroc.labels`", "class 2 has only one label value"],
        ),
        (
            edited("label.safetensors", &|f| f.tensors.get_mut("auroc.labels").unwrap().values[7] = 0.5),
            vec!["`auroc.labels`", "not 0 or 1"],
        ),
        (
            edited("nan.safetensors", &|f| f.tensors.get_mut("auroc.scores").unwrap().values[3] = f32::NAN),
            vec!["`auroc.scores`", "NaN", "flat index 3"],
        ),
        (
            edited("dtype.safetensors", &|f| {
                let (shape, v) = f.ints.remove("accuracy.labels").unwrap();
                f.tensors.insert(
                    "accuracy.labels".into(),
                    HostTensor { shape, values: v.iter().map(|x| *x as f32).collect() },
                );
            }),
            vec!["`accuracy.labels` is F32, expected I64"],
        ),
        (
            edited("shape.safetensors", &|f| f.tensors.get_mut("accuracy.scores").unwrap().shape.insert(0, 1)),
            vec!["`accuracy.scores`", "expected [N, C]"],
        ),
        (
            edited("missing.safetensors", &|f| drop(f.tensors.remove("auroc.labels"))),
            vec!["missing tensor `auroc.labels`"],
        ),
    ];
    for (input, words) in cases {
        let out = dir.join("out.safetensors");
        let run = mgca_metrics(&input, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{}: {stderr}", input.display());
        for word in words {
            assert!(stderr.contains(word), "`{stderr}` does not name `{word}`");
        }
        assert!(!out.exists(), "{}: wrote an output", input.display());
    }
    std::fs::remove_dir_all(dir).ok();
}
