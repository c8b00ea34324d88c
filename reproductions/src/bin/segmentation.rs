//! `segmentation`: segmentation cells of the paper's Table 2 from experiment files.
//!
//! `segmentation --config reproductions/configs/segmentation/rsna_1pct.toml [--config …] --tier
//! smoke|paper [--data DIR] [--encoder-from SRC] [--seeds N] [--fix-leaks]
//! [--backbone-norm train|frozen] [--out runs] [--resume]`. Each cell and seed runs into
//! `OUT/<name>/seed-<s>/` (`config.toml`, `metrics.csv`, `checkpoints/`, `pictures/`,
//! `test.json`); with `--fix-leaks` (SIIM: split by image) the run names end in `-fixed`; a
//! finished cell is skipped on `--resume`.
//!
//! Exit status: 0 when every cell finished, 2 on bad input (an experiment file, arguments,
//! data, a checkpoint that does not fit), 1 when a run failed (I/O, a non-finite loss).
//!
//! Book: "Segmentation". **Deviation:** none beyond the task's (see `mgca::downstream::segmentation`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mgca::downstream::detection::BackboneNorm;
use mgca::downstream::encoder::EncoderSource;
use mgca::downstream::segmentation::experiment::{
    CellOptions, CellResult, ResolvedCell, SegmentationExperiment, read_results, run_cell,
};
use mgca::experiment::Tier;
use mgca::train::TrainError;

#[derive(Parser)]
#[command(name = "segmentation", about = "Segmentation (the paper's Table 2) from experiment files")]
struct Args {
    /// Experiment files (one per cell).
    #[arg(long, required = true)]
    config: Vec<PathBuf>,
    /// smoke: synthetic data, smoke loop values, the smoke pretraining of each file's encoder;
    /// paper: the files as written on the real data.
    #[arg(long, value_enum, default_value = "smoke")]
    tier: Tier,
    /// The folder holding `rsna/` and `SIIM_Pneumothorax/` (paper tier).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Replace every file's encoder: pretrained:RUN, released:FILE, imagenet:FILE or random[:SEED].
    #[arg(long)]
    encoder_from: Option<String>,
    /// Seeds per cell (42, 43, …).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Split SIIM by image instead of by CSV row (the reference's leak fixed); runs as
    /// `<name>-fixed`.
    #[arg(long)]
    fix_leaks: bool,
    /// The frozen backbone's BatchNorm during training: `train` (the reference) or `frozen`.
    #[arg(long, value_enum)]
    backbone_norm: Option<BackboneNorm>,
    /// Where run folders go (the pretraining runs are looked up here too).
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Continue unfinished cells from their last checkpoints; skip finished ones.
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

enum Failure {
    BadInput(String),
    Other(String),
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        if e.is_bad_input() { Failure::BadInput(e.to_string()) } else { Failure::Other(e.to_string()) }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::BadInput(message)
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".to_string().into());
    }
    let encoder = args.encoder_from.as_deref().map(EncoderSource::parse).transpose()?;
    // Every file is read and resolved before any cell runs.
    let mut cells = Vec::new();
    for path in &args.config {
        let experiment = SegmentationExperiment::read(path)?;
        for k in 0..args.seeds {
            let mut file = experiment.clone();
            file.fix_leaks |= args.fix_leaks;
            let mut cell =
                file.resolve(args.tier, encoder.as_ref(), 0).map_err(|e| format!("{}: {e}", path.display()))?;
            // Seeds 42, 43, … on top of the file's own (SIIM 10 %: 0, 1, …).
            cell.seed += k;
            cell.finetune.seed = cell.seed;
            if let Some(norm) = args.backbone_norm {
                cell.backbone_norm = norm;
            }
            cells.push(cell);
        }
    }
    let options = CellOptions {
        data: args.data.clone(),
        resume: args.resume,
        progress: !args.no_progress,
        ..CellOptions::default()
    };
    for cell in &cells {
        let done = read_results(&args.out, &cell.name)?.into_iter().any(|r| r.seed == cell.seed);
        if args.resume && done {
            eprintln!("segmentation: {} seed {}: finished, skipped", cell.name, cell.seed);
            continue;
        }
        match run_on_device(cell, args, &options)? {
            Some(r) => eprintln!(
                "segmentation: {} seed {}: test Dice {:.2} (image mean {}), untrained {:.2}; best epoch {}, {:.1} s",
                r.name,
                r.seed,
                r.test_dice,
                shown(r.test_dice_images.value),
                r.untrained_dice,
                r.best_epoch,
                r.seconds
            ),
            None => return Err(Failure::Other(format!("{}: stopped before finishing", cell.name))),
        }
    }
    Ok(())
}

fn shown(value: Option<f64>) -> String {
    value.map_or("undefined".into(), |v| format!("{v:.2}"))
}

fn run_on_device(cell: &ResolvedCell, args: &Args, options: &CellOptions) -> Result<Option<CellResult>, Failure> {
    #[cfg(feature = "cuda")]
    if args.tier == Tier::Paper && mgca::backend::cuda_driver_present() {
        let device = burn::backend::cuda::CudaDevice::new(0);
        return Ok(run_cell::<mgca::backend::CudaAutodiff>(cell, &args.out, options, &device)?);
    }
    let _ = args;
    Ok(run_cell::<mgca::backend::CpuAutodiff>(cell, &args.out, options, &mgca::backend::cpu_device())?)
}

fn main() -> ExitCode {
    mgca::backend::tune_allocator();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(m)) => {
            eprintln!("segmentation: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Other(m)) => {
            eprintln!("segmentation: {m}");
            ExitCode::FAILURE
        }
    }
}
