//! `report`: `OUT/report.md` from the run folders under `OUT` — what ran, its numbers, and
//! the statistical checks of `mgca::report`.
//!
//! Book: "Linear probing" (the report). **Deviation:** none (reporting only).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "report", about = "Write OUT/report.md from the run folders in OUT")]
struct Args {
    /// The folder holding the run folders.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runs: Vec<PathBuf> = match std::fs::read_dir(&args.out) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.join("summary.json").exists() && p.join("metrics.csv").exists())
            .collect(),
        Err(e) => {
            eprintln!("report: {}: {e}", args.out.display());
            return ExitCode::FAILURE;
        }
    };
    runs.sort();
    let mut text = String::from("# mgca-rs reproduction report\n\n");
    text.push_str(&format!("{} run(s) in `{}`.\n\n", runs.len(), args.out.display()));
    let mut failed = false;
    for run in &runs {
        match mgca::report::pretrain_section(run) {
            Ok(section) => {
                failed |= section.contains("**FAIL**");
                text.push_str(&section);
                text.push('\n');
            }
            Err(e) => {
                failed = true;
                text.push_str(&format!("## {}\n\nCould not read the run: {e}\n\n", run.display()));
            }
        }
    }
    match mgca::report::table1_section(&args.out) {
        Ok(section) => text.push_str(&section),
        Err(e) => {
            failed = true;
            text.push_str(&format!("## Table 1: linear classification\n\nCould not read the cells: {e}\n\n"));
        }
    }
    match mgca::report::detection_section(&args.out) {
        Ok(section) => {
            failed |= section.contains("**FAIL**");
            text.push_str(&section);
        }
        Err(e) => {
            failed = true;
            text.push_str(&format!("## Table 2: object detection\n\nCould not read the cells: {e}\n\n"));
        }
    }
    match mgca::report::segmentation_section(&args.out) {
        Ok(section) => {
            failed |= section.contains("**FAIL**");
            text.push_str(&section);
        }
        Err(e) => {
            failed = true;
            text.push_str(&format!("## Table 2: semantic segmentation\n\nCould not read the cells: {e}\n\n"));
        }
    }
    let path = args.out.join("report.md");
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!("report: {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("{text}");
    eprintln!("report: written to {}", path.display());
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
