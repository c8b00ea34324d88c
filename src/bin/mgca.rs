//! The `mgca` command line.
//!
//! `mgca parity losses --input IN.safetensors --output OUT.safetensors` runs the MGCA objective
//! (forward and backward, CPU) on a case laid out like the reference fixtures and writes our
//! outputs and gradients in the same layout; if the input carries the reference's outputs, it
//! also prints how closely they agree. Spec: `losses.md`; the fixtures' README.
//!
//! **Deviation:** none. Exit status: 0 agreement (or nothing to compare), 1 disagreement,
//! 2 bad input (the message names the file or tensor).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mgca::loss::CtaEngine;
use mgca::parity::{LossCase, SCALARS};

#[derive(Parser)]
#[command(name = "mgca", version, about = "MGCA reproduced in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a component against tensors produced by the reference implementation.
    #[command(subcommand)]
    Parity(Parity),
}

#[derive(Subcommand)]
enum Parity {
    /// The whole objective (ITA, CTA, CPA with Sinkhorn), forward and backward.
    Losses {
        /// A case: `in.*` tensors and the JSON metadata key `fixture` (`encoder`, `hparams`).
        #[arg(long)]
        input: PathBuf,
        /// Where to write `out.*` scalars and `grad.*` gradients (float32 safetensors).
        #[arg(long)]
        output: PathBuf,
        /// How CTA is computed: the fused CPU kernel, or burn's autodiff graph.
        #[arg(long, value_enum, default_value_t = Engine::Fused)]
        engine: Engine,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Engine {
    /// The fused CPU kernel with hand-written gradients (fast).
    Fused,
    /// Tensor operations differentiated by burn's autodiff.
    Graph,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Parity(Parity::Losses { input, output, engine }) => {
            let engine = match engine {
                Engine::Fused => CtaEngine::FusedCpu,
                Engine::Graph => CtaEngine::Graph,
            };
            parity_losses(&input, &output, engine)
        }
    }
}

fn parity_losses(input: &std::path::Path, output: &std::path::Path, engine: CtaEngine) -> ExitCode {
    let case = match LossCase::read(input) {
        Ok(case) => case,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let ours = case.run(engine);
    if let Err(e) = ours.write(output) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("case {} ({:?} branch, CTA engine {engine:?})", input.display(), case.encoder);
    for name in SCALARS {
        println!("  {name:<16} {:>12.6}", ours.tensors[name].values[0]);
    }
    println!("wrote {}", output.display());
    match case.compare(&ours) {
        None => ExitCode::SUCCESS,
        Some(lines) => {
            println!("agreement with the reference outputs in the input:");
            for line in &lines {
                println!("  {line}");
            }
            if lines.iter().all(|l| l.ok) {
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                println!("FAIL");
                ExitCode::from(1)
            }
        }
    }
}
