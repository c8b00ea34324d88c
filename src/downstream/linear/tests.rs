//! Linear probing on the synthetic datasets (CPU): the losses against their closed forms, a
//! whole cell end to end, its determinism, resume and the feature cache.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::{Tensor, TensorData};

use super::experiment::{CellOptions, Fraction, LinearExperiment, ResolvedCell, run_cell, run_folder};
use super::*;
use crate::backend::{Cpu, CpuAutodiff, cpu_device};
use crate::downstream::encoder::EncoderSource;
use crate::experiment::Tier;

/// The losses in f32 against the f64 formulas.
const LOSS_TOLERANCE: f64 = 1e-6;

fn logits() -> (Vec<f32>, Tensor<Cpu, 2>) {
    let v = vec![2.5f32, -1.0, 0.3, -40.0, 35.0, 0.0];
    (v.clone(), Tensor::from_data(TensorData::new(v, [2, 3]), &cpu_device()))
}

#[test]
fn bce_with_logits_is_the_stable_closed_form() {
    let (x, t) = logits();
    let y = [1.0f32, 0.0, 1.0, 0.0, 1.0, 1.0];
    let want: f64 = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            let p = 1.0 / (1.0 + (-x).exp());
            // −[y log p + (1 − y) log(1 − p)], with log(1 − p) = −x − log(1 + e^{−x}).
            -(y * p.ln() + (1.0 - y) * (-x - (1.0 + (-x).exp()).ln()))
        })
        .sum::<f64>()
        / 6.0;
    let got: f32 = head_loss(HeadLoss::Bce, t, &y).into_scalar();
    assert!((got as f64 - want).abs() < LOSS_TOLERANCE * want.abs().max(1.0), "{got} vs {want}");
}

#[test]
fn cross_entropy_picks_the_label() {
    let (x, t) = logits();
    let labels = [0.0f32, 2.0];
    let want: f64 = (0..2)
        .map(|r| {
            let row: Vec<f64> = x[r * 3..r * 3 + 3].iter().map(|&v| v as f64).collect();
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - row[labels[r] as usize]
        })
        .sum::<f64>()
        / 2.0;
    let got: f32 = head_loss(HeadLoss::CrossEntropy, t, &labels).into_scalar();
    assert!((got as f64 - want).abs() < LOSS_TOLERANCE * want.abs().max(1.0), "{got} vs {want}");
}

#[test]
fn the_head_starts_as_pytorch_initialises_and_is_seeded() {
    let a = LinearHead::<Cpu>::new(64, 3, 42, &cpu_device());
    let b = LinearHead::<Cpu>::new(64, 3, 42, &cpu_device());
    let w: Vec<f32> = a.linear.weight.val().into_data().to_vec().unwrap();
    assert_eq!(w, b.linear.weight.val().into_data().to_vec::<f32>().unwrap());
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 8.0) && w.iter().any(|v| v.abs() > 0.1), "U(-1/8, 1/8)");
}

/// The tests that prepare and cache the shared synthetic data hold this lock (two builds of
/// the same cache at once would read each other's half-written files).
static DATA: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn data_lock() -> std::sync::MutexGuard<'static, ()> {
    DATA.lock().unwrap_or_else(|e| e.into_inner())
}

/// Synthetic data shared by the tests of this module (prepared once per process).
fn out() -> &'static PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mgca-linear-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn cell(dataset: Dataset, features: FeatureMode, name: &str) -> ResolvedCell {
    let experiment = LinearExperiment {
        name: name.into(),
        reproduces: "a test".into(),
        dataset,
        fraction: Fraction::Ten,
        image_encoder: crate::config::ImageEncoderKind::VitBase,
        features,
        encoder: EncoderSource::Random { seed: 3 },
        finetune: toml::Table::new(),
    };
    let mut cell = experiment.resolve(Tier::Smoke, Some(&EncoderSource::Random { seed: 3 }), 0).unwrap();
    cell.finetune.max_epochs = 3;
    cell
}

fn head_bytes(name: &str, seed: u64) -> Vec<u8> {
    std::fs::read(run_folder(out(), name, seed).join("checkpoints/last/model.mpk")).unwrap()
}

/// RSNA (1 output, BCE, AUROC), CheXpert (5, macro AUROC), COVIDx (3 classes, accuracy): a cell
/// runs end to end, twice the same, and a run stopped after one epoch and resumed ends where
/// the uninterrupted one does.
#[test]
fn cells_run_deterministically_and_resume_exactly() {
    let _data = data_lock();
    let device = cpu_device();
    for dataset in [Dataset::Rsna, Dataset::Chexpert, Dataset::Covidx] {
        let name = format!("{dataset:?}-whole");
        let whole = run_cell::<CpuAutodiff>(
            &cell(dataset, FeatureMode::Faithful, &name),
            out(),
            &CellOptions::default(),
            &device,
        )
        .unwrap()
        .expect("finished");
        assert!(
            (0.0..=100.0).contains(&whole.test) && whole.ci_low <= whole.test && whole.test <= whole.ci_high,
            "{whole:?}"
        );
        assert_eq!(whole.epochs, 3);
        assert_eq!(whole.metric, if dataset == Dataset::Covidx { "acc" } else { "auc" });
        // Stopped after one epoch, then resumed.
        let name2 = format!("{dataset:?}-resumed");
        let c2 = cell(dataset, FeatureMode::Faithful, &name2);
        let stopped = CellOptions { stop_after_epochs: Some(1), ..CellOptions::default() };
        assert!(run_cell::<CpuAutodiff>(&c2, out(), &stopped, &device).unwrap().is_none());
        let resumed = CellOptions { resume: true, ..CellOptions::default() };
        let again = run_cell::<CpuAutodiff>(&c2, out(), &resumed, &device).unwrap().unwrap();
        assert_eq!((again.test, again.test_loss, again.best_epoch), (whole.test, whole.test_loss, whole.best_epoch));
        assert_eq!(head_bytes(&name, 42), head_bytes(&name2, 42), "{dataset:?}: same head bytes");
    }
}

/// Cached features: validation and test features equal the faithful ones (centre crops both
/// ways), so an untrained head scores the same; training differs (one fixed view per image).
#[test]
fn cached_features_equal_faithful_ones_where_the_transform_is_fixed() {
    let _data = data_lock();
    let device = cpu_device();
    let c = cell(Dataset::Rsna, FeatureMode::Cached, "rsna-cached");
    let faithful = run_cell::<CpuAutodiff>(&c, out(), &CellOptions::default(), &device).unwrap().unwrap();
    assert_eq!(faithful.features, FeatureMode::Cached);
    // The same head on both kinds of features: identical validation outputs.
    let preset = crate::config::MgcaConfig::smoke_for(c.image_encoder);
    let load = || {
        crate::downstream::encoder::load_encoder::<Cpu>(
            &EncoderSource::Random { seed: 3 },
            c.image_encoder,
            &preset,
            &device,
        )
        .unwrap()
    };
    let task = ProbeTask::of(Dataset::Rsna).unwrap();
    let splits = || experiment::open_splits(&c, out(), None, preset.train.cache_side).unwrap();
    let crop = preset.image_size();
    let a = LinearProbe::<CpuAutodiff>::new(task, load().encoder, splits(), crop, 8, FeatureMode::Faithful, &device)
        .unwrap();
    let b =
        LinearProbe::<CpuAutodiff>::new(task, load().encoder, splits(), crop, 8, FeatureMode::Cached, &device).unwrap();
    let head = LinearHead::<Cpu>::new(a.feature_dim(), 1, 5, &device);
    use crate::downstream::finetune::{Stage, Task};
    for stage in [Stage::Valid, Stage::Test] {
        let (x, y) = (a.evaluate(&head, stage).unwrap(), b.evaluate(&head, stage).unwrap());
        assert_eq!(x.targets, y.targets);
        let gap = x.outputs.iter().zip(&y.outputs).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!((gap as f64) < crate::parity::CACHED_PROBE, "{stage:?}: {gap}");
    }
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_the_step() {
    let _data = data_lock();
    let device = cpu_device();
    let c = cell(Dataset::Rsna, FeatureMode::Cached, "rsna-nan");
    let preset = crate::config::MgcaConfig::smoke_for(c.image_encoder);
    let encoder =
        crate::downstream::encoder::load_encoder::<Cpu>(&c.encoder, c.image_encoder, &preset, &device).unwrap();
    let splits = experiment::open_splits(&c, out(), None, preset.train.cache_side).unwrap();
    let task = ProbeTask::of(Dataset::Rsna).unwrap();
    let probe = LinearProbe::<CpuAutodiff>::new(
        task,
        encoder.encoder,
        splits,
        preset.image_size(),
        8,
        FeatureMode::Cached,
        &device,
    )
    .unwrap();
    let head = LinearHead::<CpuAutodiff>::new(probe.feature_dim(), 1, 1, &device);
    let dir = out().join("nan-run");
    let mut options = crate::downstream::finetune::FinetuneOptions::new(&dir, "x = 1\n".into());
    options.inject_nan_at = Some(2);
    let err = crate::downstream::finetune::finetune(
        &probe,
        head,
        &c.finetune,
        crate::train::stopping::Monitor::VAL_LOSS,
        &options,
    )
    .unwrap_err();
    assert!(matches!(err, crate::train::TrainError::NonFinite { step: 2, .. }), "{err}");
    // The split gives 2 batches an epoch: step 2 opens epoch 1, after epoch 0's checkpoint.
    assert!(err.to_string().contains("the last good checkpoint is"), "{err}");
    let last = crate::train::checkpoint::load_state(&dir.join("checkpoints/last")).unwrap();
    assert_eq!((last.step, last.epoch), (2, 1), "the last checkpoint is epoch 0's, intact");
}

/// The released-checkpoint path: a small checkpoint in the released Lightning key layout
/// (`golden/pytorch/checkpoints/`, written by `make_checkpoints.py`) becomes the frozen encoder
/// of a cell; a checkpoint of the other backbone is refused, naming the file.
#[test]
fn a_released_lightning_checkpoint_is_a_cells_encoder() {
    let _data = data_lock();
    let device = cpu_device();
    let ckpt = |name: &str| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/pytorch/checkpoints").join(name);
    let mut c = cell(Dataset::Rsna, FeatureMode::Cached, "rsna-released");
    c.encoder = EncoderSource::Released { checkpoint: ckpt("mgca_vit_style.ckpt") };
    let result = run_cell::<CpuAutodiff>(&c, out(), &CellOptions::default(), &device).unwrap().unwrap();
    assert_eq!(result.encoder, "released");
    assert!(result.encoder_provenance.ends_with("mgca_vit_style.ckpt"), "{}", result.encoder_provenance);
    assert!((0.0..=100.0).contains(&result.test));
    c.encoder = EncoderSource::Released { checkpoint: ckpt("mgca_resnet_style.ckpt") };
    let err = match run_cell::<CpuAutodiff>(&c, out(), &CellOptions::default(), &device) {
        Err(e) => e,
        Ok(_) => panic!("a ResNet checkpoint accepted as a ViT encoder"),
    };
    assert!(err.is_bad_input() && err.to_string().contains("mgca_resnet_style.ckpt"), "{err}");
}
