//! The trainer's guarantees on the CPU backend, on the tiny synthetic MIMIC-CXR.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::*;
use crate::backend::{CpuAutodiff, cpu_device};
use crate::data::synth::Scale;

/// The smoke model with a tiny step: 2 shards of 4 pairs, 2 epochs, a checkpoint every 2 steps.
fn config() -> MgcaConfig {
    let mut c = MgcaConfig::smoke();
    c.train.shard_batch = 4;
    c.train.epochs = 2;
    c.train.checkpoint_every = 2;
    c
}

/// The data, generated and prepared once for all tests of this module.
fn data_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mgca-train-{}", std::process::id()));
        data::synthetic_pairs(&dir, Scale::Tiny, 11, &config()).unwrap();
        dir
    })
}

fn pairs() -> PretrainData {
    data::synthetic_pairs(data_dir(), Scale::Tiny, 11, &config()).unwrap()
}

fn fresh_model(config: &MgcaConfig) -> Mgca<CpuAutodiff> {
    config.init_model_seeded::<CpuAutodiff>(config.train.seed as u64, &cpu_device())
}

/// Every float parameter's values, in visiting order.
struct Values(Vec<Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().into_data().to_vec::<f32>().unwrap());
    }
}

fn values(model: &Mgca<CpuAutodiff>) -> Vec<Vec<f32>> {
    let mut v = Values(Vec::new());
    model.visit(&mut v);
    v.0
}

fn weights_of(run: &Path, config: &MgcaConfig) -> Vec<Vec<f32>> {
    let dir = checkpoint::resolve(&run.join("checkpoints/last")).unwrap();
    values(&checkpoint::load_model(&dir, fresh_model(config), &cpu_device()).unwrap())
}

/// Panics with the first differing parameter and position, if any.
fn assert_same(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: parameter counts");
    for (k, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: parameter {k} sizes");
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            panic!("{what}: parameter {k} differs at {i}: {} vs {}", x[i], y[i]);
        }
    }
}

/// Every file under `dir` and its bytes, by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Panics naming the files that differ between two trees.
fn assert_same_files(a: &Path, b: &Path) {
    let (x, y) = (tree(a), tree(b));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{} vs {}", a.display(), b.display());
    let differ: Vec<&String> = x.iter().filter(|(k, v)| y[*k] != **v).map(|(k, _)| k).collect();
    assert!(differ.is_empty(), "{} vs {}: {differ:?} differ", a.display(), b.display());
}

fn losses_of(run: &Path) -> Vec<f64> {
    losses::read_column(&run.join("metrics.csv"), "loss").unwrap()
}

fn run_dir(name: &str) -> PathBuf {
    let dir = data_dir().join("runs").join(name);
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn train(config: &MgcaConfig, options: &RunOptions<burn::tensor::Device<CpuAutodiff>>) -> RunSummary {
    pretrain(config, fresh_model(config), &pairs(), options).unwrap()
}

/// Same seed, same run; a run stopped after 3 steps and resumed ends with the same weights,
/// bit for bit, and the same losses as the run that was never stopped; the run folder holds
/// what a user expects.
#[test]
fn determinism_and_exact_resume() {
    let config = config();
    let whole = run_dir("whole");
    let summary =
        train(&config, &RunOptions { engine: CtaEngine::FusedCpu, ..RunOptions::new(&whole, vec![cpu_device()]) });
    assert!(summary.finished && summary.steps >= 4, "{summary:?}");
    assert_eq!(summary.epochs_completed, 2);
    for file in ["metrics.csv", "valid.csv", "config.toml", "plot.svg", "checkpoints/last/model.mpk"] {
        assert!(whole.join(file).exists(), "{file}");
    }
    let saved: MgcaConfig = toml::from_str(&std::fs::read_to_string(whole.join("config.toml")).unwrap()).unwrap();
    assert_eq!(saved, config);
    let best = checkpoint::load_state(&whole.join("checkpoints/last")).unwrap().best;
    assert_eq!(best.len(), 2, "both epochs are among the best 5");
    assert!(whole.join("checkpoints").join(&best[0].2).join("model.mpk").exists());

    let again = run_dir("again");
    train(&config, &RunOptions { engine: CtaEngine::FusedCpu, ..RunOptions::new(&again, vec![cpu_device()]) });
    assert_same(&weights_of(&again, &config), &weights_of(&whole, &config), "same seed, same weights");
    // Byte for byte: no random parameter ids, no hash-map order.
    assert_same_files(&again.join("checkpoints"), &whole.join("checkpoints"));

    let resumed = run_dir("resumed");
    let first = train(
        &config,
        &RunOptions {
            engine: CtaEngine::FusedCpu,
            stop_after: Some(3),
            ..RunOptions::new(&resumed, vec![cpu_device()])
        },
    );
    assert_eq!((first.steps, first.finished), (3, false));
    assert!(weights_of(&resumed, &config) != weights_of(&whole, &config));
    let rest = train(
        &config,
        &RunOptions { engine: CtaEngine::FusedCpu, resume: true, ..RunOptions::new(&resumed, vec![cpu_device()]) },
    );
    assert_eq!(rest.steps, summary.steps);
    assert_same(&weights_of(&resumed, &config), &weights_of(&whole, &config), "resumed = never stopped");
    assert_same_files(&resumed.join("checkpoints"), &whole.join("checkpoints"));
    assert_eq!(losses_of(&resumed), losses_of(&whole));
    assert_eq!(
        losses::read_column(&resumed.join("valid.csv"), "val_loss").unwrap(),
        losses::read_column(&whole.join("valid.csv"), "val_loss").unwrap()
    );
}

/// Two devices (one shard each, gradients all-reduced by burn's collective) give the same
/// weights as two virtual shards on one device.
#[test]
fn two_devices_equal_virtual_shards() {
    let mut config = config();
    config.train.epochs = 1;
    let virtual_run = run_dir("virtual");
    train(&config, &RunOptions::new(&virtual_run, vec![cpu_device()]));
    let devices_run = run_dir("devices");
    train(&config, &RunOptions::new(&devices_run, vec![cpu_device(), cpu_device()]));
    assert_same(&weights_of(&devices_run, &config), &weights_of(&virtual_run, &config), "2 devices = 2 virtual shards");
    assert_eq!(losses_of(&devices_run), losses_of(&virtual_run));
    // Interrupted and resumed on two devices: the replicas get the optimiser's moments back.
    let resumed = run_dir("devices-resumed");
    let two = || vec![cpu_device(), cpu_device()];
    train(&config, &RunOptions { stop_after: Some(2), ..RunOptions::new(&resumed, two()) });
    train(&config, &RunOptions { resume: true, ..RunOptions::new(&resumed, two()) });
    assert_same(&weights_of(&resumed, &config), &weights_of(&virtual_run, &config), "2 devices, resumed");
    // A run that fails on two devices unregisters them: the next two-device run starts.
    let failed = run_dir("devices-nan");
    let options = RunOptions { inject_nan_at: Some(1), ..RunOptions::new(&failed, two()) };
    assert!(pretrain(&config, fresh_model(&config), &pairs(), &options).is_err());
    train(&config, &RunOptions { stop_after: Some(1), ..RunOptions::new(&failed, two()) });
    // And the two engines of CTA agree on the losses of a short run.
    let fused = run_dir("fused");
    train(&config, &RunOptions { engine: CtaEngine::FusedCpu, ..RunOptions::new(&fused, vec![cpu_device()]) });
    for (a, b) in losses_of(&fused).iter().zip(losses_of(&virtual_run)) {
        assert!((a - b).abs() <= crate::parity::ENGINES_AGREE_OVER_A_RUN * b.abs(), "{a} vs {b}");
    }
}

/// A NaN loss stops the run with a message naming the step and the last good checkpoint,
/// which is left as it was.
#[test]
fn a_non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let config = config();
    let run = run_dir("nan");
    let options =
        RunOptions { inject_nan_at: Some(4), engine: CtaEngine::FusedCpu, ..RunOptions::new(&run, vec![cpu_device()]) };
    let err = pretrain(&config, fresh_model(&config), &pairs(), &options).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TrainError::NonFinite { step: 4, .. }), "{message}");
    assert!(message.contains("step 4") && message.contains("checkpoints/last"), "{message}");
    let state = checkpoint::load_state(&run.join("checkpoints/last")).unwrap();
    assert_eq!(state.step, 4, "the checkpoint of step 4 is intact");
    assert_eq!(losses_of(&run).len(), 4, "no row for the failed step");
}

/// The prototypes get no update in epoch 0 (they stay the normalised initial ones) and move
/// from epoch 1 on.
#[test]
fn prototypes_are_frozen_in_the_first_epoch() {
    let config = config();
    let initial = fresh_model(&config).renormalize_prototypes().prototypes().into_data().to_vec::<f32>().unwrap();
    let steps_per_epoch = {
        let d = pairs();
        d.train.usable_rows().len() / (config.train.shard_batch * config.train.shards)
    };
    let run = run_dir("freeze");
    let options = RunOptions {
        stop_after: Some(steps_per_epoch),
        engine: CtaEngine::FusedCpu,
        ..RunOptions::new(&run, vec![cpu_device()])
    };
    train(&config, &options);
    let load = || {
        let dir = checkpoint::resolve(&run.join("checkpoints/last")).unwrap();
        checkpoint::load_model(&dir, fresh_model(&config), &cpu_device()).unwrap()
    };
    // Re-normalising every step moves the last bits only; one AdamW step would move them by
    // about the learning rate (2e-3), and weight decay alone by 1e-4 of their size.
    let drift = |p: &[f32]| p.iter().zip(&initial).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let frozen = load().prototypes().into_data().to_vec::<f32>().unwrap();
    assert!(drift(&frozen) < 1e-6, "{}", drift(&frozen));
    train(&config, &RunOptions { resume: true, stop_after: Some(steps_per_epoch + 1), ..options });
    let moved = load().prototypes().into_data().to_vec::<f32>().unwrap();
    assert!(drift(&moved) > 1e-4, "{}", drift(&moved));
}

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Param<Tensor<B, 2>>,
    b: Param<Tensor<B, 1>>,
}

/// Our AdamW against `torch.optim.AdamW` (`golden/pytorch/adamw/`): 6 steps at the schedule's
/// learning rates, the second parameter without gradient for the first 3 (its step count
/// starts late, as the frozen prototypes' does).
#[test]
fn adamw_matches_pytorch() {
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::TensorData;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/pytorch/adamw/expected.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vec =
        |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let dev = cpu_device();
    let mut two = Two::<CpuAutodiff> {
        a: Param::from_tensor(Tensor::from_data(TensorData::new(vec(&json["init"]["a"]), [3, 4]), &dev)),
        b: Param::from_tensor(Tensor::from_data(TensorData::new(vec(&json["init"]["b"]), [5]), &dev)),
    };
    let mut optim = adamw(&MgcaConfig::reference()).init::<CpuAutodiff, Two<CpuAutodiff>>();
    for step in json["steps"].as_array().unwrap() {
        let mut grads = GradientsParams::new();
        grads.register::<crate::backend::Cpu, 2>(
            two.a.id,
            Tensor::from_data(TensorData::new(vec(&step["a"]), [3, 4]), &dev),
        );
        if !step["b"].is_null() {
            grads.register::<crate::backend::Cpu, 1>(
                two.b.id,
                Tensor::from_data(TensorData::new(vec(&step["b"]), [5]), &dev),
            );
        }
        two = optim.step(step["lr"].as_f64().unwrap(), two, grads);
    }
    for (name, got) in [
        ("a", two.a.val().into_data().to_vec::<f32>().unwrap()),
        ("b", two.b.val().into_data().to_vec::<f32>().unwrap()),
    ] {
        let want = vec(&json["final"][name]);
        for (g, w) in got.iter().zip(&want) {
            assert!(crate::parity::SHALLOW.allows(*g as f64, *w as f64), "{name}: {g} vs {w}");
        }
    }
}

/// Early stopping counts epochs without a strictly lower validation loss; the best-k folder
/// keeps the lowest k and deletes the one pushed out.
#[test]
fn early_stopping_and_best_checkpoints() {
    let mut state = TrainState::default();
    let stops: Vec<bool> =
        [5.0, 4.0, 4.0, 4.5, 3.9, 4.0, 4.0].iter().map(|&v| early_stop(&mut state, Monitor::VAL_LOSS, v, 2)).collect();
    assert_eq!(stops, vec![false, false, false, true, false, false, true]);
    assert_eq!(state.best_val, Some(3.9));

    let dir = data_dir().join("best");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let config = config();
    let model = fresh_model(&config);
    let optim = optimizer::<CpuAutodiff>(&config);
    let mut state = TrainState::default();
    let mut protocol = checkpoint::Protocol::new(&dir, None);
    let mut entered = Vec::new();
    for (epoch, val) in [3.0, 2.0, 4.0, 1.0].into_iter().enumerate() {
        let (new, superseded) = keep_best(&mut state, Monitor::VAL_LOSS, epoch, val, 2);
        entered.push((new.is_some(), superseded.clone()));
        save(&mut protocol, &model, &optim, &state, new.as_deref(), &superseded).unwrap();
    }
    let none = Vec::<String>::new;
    assert_eq!(
        entered,
        vec![(true, none()), (true, none()), (false, none()), (true, vec!["epoch=000-val_loss=3.0000".to_string()])]
    );
    let kept: Vec<(f64, usize)> = state.best.iter().map(|b| (b.0, b.1)).collect();
    assert_eq!(kept, vec![(1.0, 3), (2.0, 1)]);
    let mut folders: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    folders.sort();
    assert_eq!(folders, vec!["epoch=001-val_loss=2.0000", "epoch=003-val_loss=1.0000", "last"]);
    assert_eq!(checkpoint::load_state(&dir.join("last")).unwrap(), state);
}

/// The paper tier's data path: a prepared MIMIC-CXR split with a pretrained tokenizer (here
/// all-MiniLM-L6-v2's, from the asset cache), batches at the encoder's crop size.
#[test]
fn pretrained_tokenizer_data_path() {
    let dir = data_dir();
    let mut config = config();
    config.train.max_tokens = 40;
    let tokenizer = crate::assets::minilm_dir().unwrap_or_else(|e| panic!("{e}")).join("tokenizer.json");
    let source = data::TextSource::Pretrained { path: tokenizer, lowercase: true };
    let pairs = data::mimic_pairs(&dir.join("mimic"), &dir.join("mimic-prepared"), &config, &source).unwrap();
    let rows = pairs.train.usable_rows();
    let batch = pairs
        .train
        .batches_from(&pairs.tokenizer, rows, 4, Crop::Random, config.image_size(), 1, 0, 1)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(batch.text.length, 40);
    assert_eq!(batch.images.len(), 4 * 3 * 32 * 32);
    // MiniLM's ids, not the caption vocabulary's: [CLS] is 101.
    assert!(batch.text.ids.chunks(40).all(|row| row[0] == 101));
}

/// A resume runs the configuration the run started with, or is refused naming the fields
/// (unless forced); a finished run resumed is reported and left as it is; a configuration
/// that cannot run changes nothing in an existing run folder.
#[test]
fn resume_guards_the_run_folder() {
    let mut config = config();
    config.train.epochs = 1;
    let one = || vec![cpu_device()];
    let run = run_dir("guards");
    let stopped = train(&config, &RunOptions { stop_after: Some(2), ..RunOptions::new(&run, one()) });
    assert!(!stopped.finished);
    let before = tree(&run);
    let mut changed = config.clone();
    changed.train.epochs = 3;
    changed.train.max_steps = Some(50);
    let err = pretrain(
        &changed,
        fresh_model(&changed),
        &pairs(),
        &RunOptions { resume: true, ..RunOptions::new(&run, one()) },
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TrainError::Resume(_)) && err.is_bad_input(), "{message}");
    for needle in
        ["train.epochs: 1 (saved) vs 3 (now)", "train.max_steps: (unset) (saved) vs 50 (now)", "--force-config-change"]
    {
        assert!(message.contains(needle), "{needle}: {message}");
    }
    assert!(tree(&run) == before, "a refused resume changed the run folder");
    // A configuration that cannot run (no step fits the data), without --resume: nothing goes.
    let mut bad = config.clone();
    bad.train.shard_batch = 100_000;
    let err = pretrain(&bad, fresh_model(&bad), &pairs(), &RunOptions::new(&run, one())).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(tree(&run) == before, "a refused run changed the run folder");
    // Forced: the run goes on with the new configuration.
    let forced =
        train(&changed, &RunOptions { resume: true, force_config_change: true, ..RunOptions::new(&run, one()) });
    assert!(forced.finished && !forced.already_finished && forced.steps > stopped.steps, "{forced:?}");
    // Finished: resuming reports it and writes nothing.
    let done = tree(&run);
    let again = train(&changed, &RunOptions { resume: true, ..RunOptions::new(&run, one()) });
    assert!(again.already_finished && again.finished, "{again:?}");
    assert_eq!((again.steps, &again.stop_reason), (forced.steps, &forced.stop_reason));
    assert!(tree(&run) == done, "resuming a finished run changed the run folder");
}

/// A prepared folder whose validation split is missing is an error naming the file.
#[test]
fn a_missing_validation_split_is_an_error() {
    let prepared = data_dir().join("prepared-no-valid");
    std::fs::remove_dir_all(&prepared).ok();
    std::fs::create_dir_all(&prepared).unwrap();
    std::fs::copy(data_dir().join("mimic-prepared/train.csv"), prepared.join("train.csv")).unwrap();
    let text = data::TextSource::CaptionWords { size: 64 };
    let err = data::mimic_pairs(&data_dir().join("mimic"), &prepared, &config(), &text).err().expect("an error");
    let message = err.to_string();
    assert!(err.is_bad_input() && message.contains("valid.csv") && message.contains("missing"), "{message}");
}
