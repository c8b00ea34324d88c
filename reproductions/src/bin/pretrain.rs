//! `pretrain`: MGCA pretraining from an experiment file (`reproductions/configs/pretrain/`).
//!
//! The smoke tier generates the synthetic MIMIC-CXR if absent and trains on the CPU; the paper
//! tier reads MIMIC-CXR-JPG (`--data`), starts the encoders from DeiT/torchvision and
//! Bio_ClinicalBERT, and runs on the GPUs given (`--features cuda`). The run folder
//! `OUT/<name>/` receives `config.toml`, `metrics.csv`, `valid.csv`, `plot.svg`,
//! `checkpoints/` and `summary.json`.
//!
//! Exit status: 0 on success (a resumed run that had already finished included), 2 for bad
//! input (experiment file, configuration, data, a refused `--resume`), 1 for other failures
//! (I/O, devices, a non-finite loss).
//!
//! Spec: `hyperparameters.md` §1 (the published run).
//!
//! **Deviation:** none beyond the trainer's (see `mgca::pretrain`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use mgca::experiment::{Experiment, Tier};
use mgca::model::mgca::EncoderWeights;
use mgca::pretrain::data::{TextSource, mimic_pairs, synthetic_pairs};
use mgca::pretrain::{RunOptions, RunSummary, TrainError, pretrain};

#[derive(Parser)]
#[command(name = "pretrain", about = "MGCA pretraining from an experiment file")]
struct Args {
    /// The experiment file.
    #[arg(long, default_value = "reproductions/configs/pretrain/smoke.toml")]
    config: PathBuf,
    /// Where run folders go.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// The MIMIC-CXR-JPG 2.0.0 folder (paper tier); without it, the experiment's synthetic data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Device indices, e.g. `0,1` (default: the experiment's; one device runs the shards one
    /// after another).
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<usize>>,
    /// Continue the run in the run folder from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --resume: continue even if the configuration differs from the run's saved
    /// `config.toml` (the differing fields are listed).
    #[arg(long, requires = "resume")]
    force_config_change: bool,
    /// Testing aid: exit (status 86) at this operation of the checkpoint protocol, as a kill
    /// would.
    #[arg(long, hide = true)]
    crash_at_write: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn write_summary(run: &Path, experiment: &Experiment, summary: &RunSummary, data: &str) -> Result<(), String> {
    let last = summary.last.unwrap_or_default();
    let json = serde_json::json!({
        "experiment": experiment.name,
        "reproduces": experiment.reproduces,
        "tier": format!("{:?}", experiment.tier).to_lowercase(),
        "data": data,
        "steps": summary.steps,
        "epochs_completed": summary.epochs_completed,
        "finished": summary.finished,
        "stop_reason": summary.stop_reason,
        "best_val_loss": summary.best_val,
        "last_loss": last.loss,
        "last_acc1": last.acc1,
        "skipped_pairs": summary.skipped,
        "pairs_per_s": summary.pairs_per_s,
    });
    let path = run.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Why `pretrain` failed: the input's fault (exit status 2) or the run's (1).
enum Failure {
    BadInput(String),
    Other(String),
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        if e.is_bad_input() { Failure::BadInput(e.to_string()) } else { Failure::Other(e.to_string()) }
    }
}

/// Plain messages are the input's: the experiment file, arguments and data.
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::BadInput(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::BadInput(message.to_string())
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let experiment = Experiment::read(&args.config)?;
    let config = experiment.resolve()?;
    // Before anything is written (the data folder, the run folder).
    config.validate().map_err(|e| format!("{}: {e}", args.config.display()))?;
    let run_dir = args.out.join(&experiment.name);
    let devices = args.devices.clone().unwrap_or_else(|| experiment.devices.clone());
    let data_root = args.data.clone().or_else(|| experiment.data.mimic_root.clone());
    let (data, described) = match (&data_root, experiment.data.synthetic) {
        (Some(root), _) => {
            let text =
                experiment.weights.text.clone().ok_or("a real-data run needs `weights.text` (Bio_ClinicalBERT)")?;
            let source = TextSource::Pretrained { path: text.join("vocab.txt"), lowercase: false };
            let prepared = args.out.join("data").join(format!("mimic-{}", experiment.name));
            (mimic_pairs(root, &prepared, &config, &source)?, format!("MIMIC-CXR-JPG at {}", root.display()))
        }
        (None, Some(spec)) => {
            let dir = args.out.join("data").join(format!("synthetic-{:?}-{}", spec.scale, spec.seed).to_lowercase());
            eprintln!("pretrain: no real data configured: using the synthetic MIMIC-CXR in {}", dir.display());
            (
                synthetic_pairs(&dir, spec.scale, spec.seed, &config)?,
                format!("synthetic MIMIC-CXR ({:?}, seed {})", spec.scale, spec.seed),
            )
        }
        (None, None) => {
            return Err(format!("{}: no data: pass --data DIR (MIMIC-CXR-JPG 2.0.0)", args.config.display()).into());
        }
    };
    eprintln!(
        "pretrain: {} — {} training pairs, {} validation pairs, {} × {} per step, {} epochs at most",
        experiment.name,
        data.train.usable_rows().len(),
        data.valid.as_ref().map_or(0, |v| v.usable_rows().len()),
        config.train.shards,
        config.train.shard_batch,
        config.train.epochs
    );
    let weights = EncoderWeights {
        image: experiment.weights.image.clone(),
        text: experiment.weights.text.as_ref().map(|t| t.join("pytorch_model.bin")),
    };
    let summary = if cfg!(feature = "cuda") && experiment.tier == Tier::Paper {
        run_on_gpu(&config, &weights, &data, &run_dir, &devices, &args)?
    } else {
        if experiment.tier == Tier::Paper {
            eprintln!("pretrain: built without `--features cuda`: the paper tier runs on the CPU (very slowly)");
        }
        use mgca::backend::{CpuAutodiff, cpu_device};
        let mut model = config.init_model_seeded::<CpuAutodiff>(config.train.seed as u64, &cpu_device());
        if experiment.tier == Tier::Paper {
            model = model.with_encoders(&config, &weights, &cpu_device())?;
        }
        let options = RunOptions {
            engine: mgca::loss::CtaEngine::FusedCpu,
            ..options(&args, &run_dir, devices.iter().map(|_| cpu_device()).collect())
        };
        pretrain(&config, model, &data, &options)?
    };
    if summary.already_finished {
        eprintln!(
            "pretrain: {} already finished ({}, {} steps): nothing to do; run folder {}",
            experiment.name,
            summary.stop_reason.as_deref().unwrap_or("finished"),
            summary.steps,
            run_dir.display()
        );
        // A run stopped between its last checkpoint and its summary gets the summary now.
        if !run_dir.join("summary.json").exists() {
            write_summary(&run_dir, &experiment, &summary, &described).map_err(Failure::Other)?;
        }
        return Ok(());
    }
    write_summary(&run_dir, &experiment, &summary, &described).map_err(Failure::Other)?;
    let last = summary.last.unwrap_or_default();
    eprintln!(
        "pretrain: {} steps, {}; last loss {:.4}, acc1 {:.1} %; best val_loss {}; {} pairs skipped; {:.1} pairs/s; run folder {}",
        summary.steps,
        summary.stop_reason.as_deref().unwrap_or("interrupted"),
        last.loss,
        last.acc1,
        summary.best_val.map_or("-".into(), |v| format!("{v:.4}")),
        summary.skipped,
        summary.pairs_per_s,
        run_dir.display()
    );
    Ok(())
}

#[cfg(feature = "cuda")]
fn run_on_gpu(
    config: &mgca::config::MgcaConfig,
    weights: &EncoderWeights,
    data: &mgca::pretrain::PretrainData,
    run_dir: &Path,
    devices: &[usize],
    args: &Args,
) -> Result<RunSummary, Failure> {
    use burn::backend::cuda::CudaDevice;
    type Gpu = mgca::backend::CudaAutodiff;
    if !mgca::backend::cuda_driver_present() {
        return Err(Failure::Other("no CUDA driver (libcuda.so.1) on this machine".into()));
    }
    let devices: Vec<CudaDevice> = devices.iter().map(|&i| CudaDevice::new(i)).collect();
    let model = config.init_model_seeded::<Gpu>(config.train.seed as u64, &devices[0]);
    let model = model.with_encoders(config, weights, &devices[0])?;
    Ok(pretrain(config, model, data, &options(args, run_dir, devices))?)
}

/// The run options the arguments ask for.
fn options<D>(args: &Args, run_dir: &Path, devices: Vec<D>) -> RunOptions<D> {
    RunOptions {
        resume: args.resume,
        force_config_change: args.force_config_change,
        crash_at_write: args.crash_at_write,
        progress: !args.no_progress,
        log_epochs: true,
        ..RunOptions::new(run_dir, devices)
    }
}

#[cfg(not(feature = "cuda"))]
fn run_on_gpu(
    _: &mgca::config::MgcaConfig,
    _: &EncoderWeights,
    _: &mgca::pretrain::PretrainData,
    _: &Path,
    _: &[usize],
    _: &Args,
) -> Result<RunSummary, Failure> {
    unreachable!("only with the cuda feature")
}

fn main() -> ExitCode {
    mgca::backend::tune_allocator();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("pretrain: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("pretrain: {e}");
            ExitCode::FAILURE
        }
    }
}
