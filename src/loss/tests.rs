//! Parity of the whole objective with the reference implementation, on the cases in
//! `golden/reference/losses/` (computed by the reference's own code; see their README).

use std::path::PathBuf;

use crate::loss::{CtaEngine, ObjectiveConfig};
use crate::parity::{ENGINES_AGREE, GRADIENTS, LOSS_GRADIENT_NORM, LOSS_SCALARS, LossCase, SCALARS};

/// A change to a configuration.
type Edit = fn(&mut ObjectiveConfig);

const ENGINES: [CtaEngine; 2] = [CtaEngine::Graph, CtaEngine::FusedCpu];

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/reference/losses");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("index.json")).unwrap();
    let cases: Vec<PathBuf> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|c| dir.join(format!("{}.safetensors", c["case"].as_str().unwrap())))
        .collect();
    assert_eq!(cases.len(), 5, "every reference case is checked");
    cases
}

/// Every case, with both CTA engines: the three losses, the total and both accuracies within
/// `parity::LOSS_SCALARS`; every gradient within `parity::LOSS_GRADIENTS`, element by element.
#[test]
fn every_reference_case_agrees() {
    for path in cases() {
        let case = LossCase::read(&path).unwrap();
        for engine in ENGINES {
            let ours = case.run(engine);
            let lines = case.compare(&ours).expect("the case carries reference outputs");
            assert_eq!(lines.len(), SCALARS.len() + GRADIENTS.len());
            for line in &lines {
                assert!(line.ok, "{} ({engine:?}): {line}", path.display());
            }
        }
    }
}

/// The element-wise gradient tolerance has an absolute floor (1e-6) that is not small against
/// the gradients of the paper-sized cases (entries of 1e-4 to 1e-3). So also require the
/// gradient *as a whole* to agree: ‖ours − ref‖₂ ≤ `LOSS_GRADIENT_NORM` · ‖ref‖₂.
#[test]
fn gradients_agree_as_vectors() {
    for (path, engine) in cases().into_iter().flat_map(|p| ENGINES.map(|e| (p.clone(), e))) {
        let case = LossCase::read(&path).unwrap();
        let ours = case.run(engine);
        for line in case.compare(&ours).unwrap().iter().filter(|l| l.name.starts_with("grad.")) {
            assert!(line.norm_rel <= LOSS_GRADIENT_NORM, "{} ({engine:?}): {line}", path.display());
            let reference = &case.file.tensors[&line.name].values;
            assert!(reference.iter().any(|v| *v != 0.0), "{} of {} is zero", line.name, path.display());
        }
    }
}

/// The reference quirks matter on these cases: flipping any one of them moves the local loss
/// well outside the tolerance, ten times `LOSS_SCALARS` (so the parity test above could fail).
#[test]
fn each_quirk_is_visible_in_the_fixtures() {
    let path = cases().into_iter().find(|p| p.ends_with("tiny_vit.safetensors")).unwrap();
    let case = LossCase::read(&path).unwrap();
    let reference = case.file.tensors["out.loss_local"].values[0];
    let flips: [(&str, Edit); 4] = [
        ("no word-weight clipping", |c| c.cta.word_weight_clip = None),
        ("no patch-weight clipping", |c| c.cta.patch_weight_clip = None),
        ("re-normalised ViT patch context", |c| c.cta.normalize_patch_context = true),
        ("averaged CTA sides", |c| c.cta.side_reduction = crate::loss::Reduction::Mean),
    ];
    for ((what, flip), engine) in flips.into_iter().flat_map(|f| ENGINES.map(|e| (f, e))) {
        let mut flipped = case.clone();
        flip(&mut flipped.config);
        let local = flipped.run(engine).tensors["out.loss_local"].values[0];
        assert!(
            ((local - reference) / reference).abs() > 10.0 * LOSS_SCALARS.rel as f32,
            "{what} ({engine:?}) left loss_local at {local}"
        );
    }
}

/// The two engines agree with each other, tightly, on configurations the reference cases do
/// not exercise: averaged sides, the word side alone, ResNet-style renormalised context on
/// ViT-style weights, other temperatures.
#[test]
fn engines_agree_beyond_the_reference_configuration() {
    use crate::backend::{CpuAutodiff, cpu_device};
    use crate::config::ImageEncoderKind;
    use crate::loss::{BatchShape, Objective, ObjectiveInputs, Reduction};
    use burn::tensor::Tensor;

    let shape = BatchShape { samples: 7, dim: 12, patches: 10, words: 9, heads: 3, prototypes: 6 };
    let variants: [(&str, Edit); 4] = [
        ("mean sides", |c| c.cta.side_reduction = Reduction::Mean),
        ("word side only", |c| c.cta.bidirectional = false),
        ("normalised context", |c| c.cta.normalize_patch_context = true),
        ("tau 0.07, no clipping", |c| {
            c.cta.temperature = 0.07;
            c.cta.word_weight_clip = None;
            c.cta.patch_weight_clip = None;
        }),
    ];
    for (what, edit) in variants {
        let mut config = ObjectiveConfig::reference(ImageEncoderKind::VitBase);
        edit(&mut config);
        let run = |engine: CtaEngine| {
            let mut x = ObjectiveInputs::<CpuAutodiff>::random(shape, true, 7, &cpu_device());
            x.patch_emb = Tensor::from_inner(x.patch_emb.inner()).require_grad();
            x.word_emb = Tensor::from_inner(x.word_emb.inner()).require_grad();
            let (p, w) = (x.patch_emb.clone(), x.word_emb.clone());
            let out = Objective::new(config.clone()).with_engine(engine).forward(x);
            let local: f32 = out.local.clone().into_scalar();
            let grads = out.total.backward();
            let flat = |t: Tensor<crate::backend::Cpu, 3>| t.into_data().to_vec::<f32>().unwrap();
            (local, flat(p.grad(&grads).unwrap()), flat(w.grad(&grads).unwrap()))
        };
        let (graph, fused) = (run(CtaEngine::Graph), run(CtaEngine::FusedCpu));
        assert!(
            (graph.0 - fused.0).abs() as f64 <= ENGINES_AGREE * graph.0.abs() as f64,
            "{what}: {} vs {}",
            graph.0,
            fused.0
        );
        for (g, f) in [(&graph.1, &fused.1), (&graph.2, &fused.2)] {
            let scale = g.iter().fold(0.0f32, |a, b| a.max(b.abs()));
            let worst = g.iter().zip(f).fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(
                scale > 0.0 && worst as f64 <= ENGINES_AGREE * scale as f64,
                "{what}: gradient differs by {worst} (scale {scale})"
            );
        }
    }
}
