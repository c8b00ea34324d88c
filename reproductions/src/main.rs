//! `reproductions`: runs the paper's experiments from their configs under
//! `reproductions/configs/`. Spec: `README.md` ("Experiments a reproduction suite must
//! regenerate").
//!
//! **Deviation:** none. The experiments arrive with the pretraining loop and the downstream
//! tasks; until then this binary lists them and says that none can run yet.

use std::process::ExitCode;

/// The experiments of the paper, in the order they depend on each other.
const EXPERIMENTS: [(&str, &str); 5] = [
    ("pretrain", "MGCA pretraining, ViT-B/16 and ResNet-50, on MIMIC-CXR-JPG"),
    ("classification", "linear probes: CheXpert, RSNA, COVIDx at 1/10/100 % labels"),
    ("detection", "YOLOv3 on RSNA and Object-CXR at 1/10/100 % labels"),
    ("segmentation", "U-Net / SETR on SIIM and RSNA at 1/10/100 % labels"),
    ("ablations", "loss components, CTA direction, number of prototypes"),
];

fn main() -> ExitCode {
    eprintln!("reproductions: the experiments of the paper; none is implemented yet:");
    for (name, what) in EXPERIMENTS {
        eprintln!("  {name:<15} {what}");
    }
    eprintln!("What runs today: `mgca parity losses` (the objective against the reference).");
    ExitCode::from(2)
}
