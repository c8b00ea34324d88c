//! Pretraining's logged quantities: `loss`, `loss_ita`, `loss_local`, `loss_proto`, `acc1`,
//! `acc5` (averaged over shards), their rows in `metrics.csv` (per step) and `valid.csv` (per
//! epoch), and the loss-curve plot (through the generic [`crate::train::log`]).
//!
//! Book: "Pretraining" (the run folder). Reference: `mgca/models/mgca/mgca_module.py`,
//! `MGCA.training_step` and `MGCA.validation_step` (their `self.log` calls), at HKU-MedAI/MGCA
//! `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use std::path::Path;

pub use crate::train::log::{CsvLog, read_column};
use crate::train::log::{Plot, plot as plot_curves};

/// The losses and accuracies of one batch (or the mean over shards or batches).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Losses {
    pub loss: f64,
    pub loss_ita: f64,
    pub loss_local: f64,
    pub loss_proto: f64,
    pub acc1: f64,
    pub acc5: f64,
}

impl Losses {
    /// The element-wise mean.
    pub fn mean(items: &[Losses]) -> Losses {
        let n = items.len().max(1) as f64;
        let sum = |f: fn(&Losses) -> f64| items.iter().map(f).sum::<f64>() / n;
        Losses {
            loss: sum(|l| l.loss),
            loss_ita: sum(|l| l.loss_ita),
            loss_local: sum(|l| l.loss_local),
            loss_proto: sum(|l| l.loss_proto),
            acc1: sum(|l| l.acc1),
            acc5: sum(|l| l.acc5),
        }
    }

    /// Whether every loss is finite.
    pub fn is_finite(&self) -> bool {
        [self.loss, self.loss_ita, self.loss_local, self.loss_proto].iter().all(|v| v.is_finite())
    }

    /// The losses in words, for error messages.
    pub fn describe(&self) -> String {
        format!("loss {} (ita {}, local {}, proto {})", self.loss, self.loss_ita, self.loss_local, self.loss_proto)
    }

    fn fields(&self) -> [f64; 6] {
        [self.loss, self.loss_ita, self.loss_local, self.loss_proto, self.acc1, self.acc5]
    }
}

/// `metrics.csv`'s header.
pub const STEP_HEADER: &str = "step,epoch,lr,loss,loss_ita,loss_local,loss_proto,acc1,acc5,pairs_per_s";
/// `valid.csv`'s header.
pub const VALID_HEADER: &str = "epoch,step,val_loss,val_loss_ita,val_loss_local,val_loss_proto,val_acc1,val_acc5";

/// One row of `metrics.csv`.
pub fn step_row(step: usize, epoch: usize, lr: f64, l: &Losses, pairs_per_s: f64) -> String {
    let f = l.fields();
    format!(
        "{step},{epoch},{lr:e},{:.7},{:.7},{:.7},{:.7},{:.4},{:.4},{pairs_per_s:.2}",
        f[0], f[1], f[2], f[3], f[4], f[5]
    )
}

/// One row of `valid.csv`.
pub fn valid_row(epoch: usize, step: usize, l: &Losses) -> String {
    let f = l.fields();
    format!("{epoch},{step},{:.7},{:.7},{:.7},{:.7},{:.4},{:.4}", f[0], f[1], f[2], f[3], f[4], f[5])
}

/// The training curves of the plot and their colours.
const SERIES: [(&str, &str); 4] =
    [("loss", "#000000"), ("loss_ita", "#1f77b4"), ("loss_local", "#2ca02c"), ("loss_proto", "#d62728")];

/// Write `plot.svg` from `metrics.csv` and `valid.csv` in `run`: the training losses per step,
/// the validation loss per epoch, and the learning rate.
pub fn plot(run: &Path) -> Result<(), String> {
    let spec = Plot {
        log: "metrics.csv",
        x: "step",
        x_label: "optimiser step",
        series: &SERIES,
        lr: "lr",
        valid: Some(("valid.csv", "step", "val_loss")),
    };
    plot_curves(run, &spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_truncate_on_resume_and_plot() {
        let dir = std::env::temp_dir().join(format!("mgca-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = Losses { loss: 3.0, loss_ita: 1.0, loss_local: 1.5, loss_proto: 0.5, acc1: 12.5, acc5: 50.0 };
        let mut log = CsvLog::open(&dir.join("metrics.csv"), STEP_HEADER, 0).unwrap();
        for s in 0..5 {
            log.push(&step_row(s, 0, 1e-3, &Losses { loss: 3.0 - s as f64 * 0.1, ..l }, 10.0)).unwrap();
        }
        drop(log);
        // A run resumed from step 3 keeps rows 0–2 only.
        let mut log = CsvLog::open(&dir.join("metrics.csv"), STEP_HEADER, 3).unwrap();
        log.push(&step_row(3, 0, 1e-3, &l, 10.0)).unwrap();
        assert_eq!(read_column(&dir.join("metrics.csv"), "step").unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(read_column(&dir.join("metrics.csv"), "loss").unwrap()[1], 2.9);
        let mut valid = CsvLog::open(&dir.join("valid.csv"), VALID_HEADER, 0).unwrap();
        valid.push(&valid_row(0, 3, &l)).unwrap();
        plot(&dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 6, "{svg}");
        assert!(read_column(&dir.join("metrics.csv"), "nope").unwrap_err().contains("no `nope` column"));
        std::fs::remove_dir_all(dir).ok();
    }
}
