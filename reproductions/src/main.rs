//! `reproductions`: runs the paper's experiments from their configs under
//! `reproductions/configs/`. Spec: `README.md` ("Experiments a reproduction suite must
//! regenerate").
//!
//! **Deviation:** none. This binary lists the experiments; each that exists has its own binary
//! (`pretrain`), and `cargo xtask reproduce` runs them.

use std::process::ExitCode;

/// The experiments of the paper, in the order they depend on each other.
const EXPERIMENTS: [(&str, &str); 5] = [
    ("pretrain", "MGCA pretraining, ViT-B/16 and ResNet-50, on MIMIC-CXR-JPG"),
    ("classification", "linear probes: CheXpert, RSNA, COVIDx at 1/10/100 % labels"),
    ("detection", "YOLOv3 on RSNA and Object-CXR at 1/10/100 % labels"),
    ("segmentation", "U-Net / SETR on SIIM and RSNA at 1/10/100 % labels"),
    ("ablations", "loss components, CTA direction, number of prototypes"),
];

/// The experiments that can run today.
const AVAILABLE: [&str; 1] = ["pretrain"];

fn main() -> ExitCode {
    eprintln!("reproductions: the experiments of the paper:");
    for (name, what) in EXPERIMENTS {
        let state = if AVAILABLE.contains(&name) { "runs" } else { "not yet" };
        eprintln!("  {name:<15} {state:<8} {what}");
    }
    eprintln!("Run them with `cargo xtask reproduce all` (smoke tier) or `--tier paper --data DIR`.");
    ExitCode::SUCCESS
}
