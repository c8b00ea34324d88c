//! Model selection for any training loop: early stopping on a monitored validation quantity
//! and the best-k checkpoints by that quantity.
//!
//! Lightning's `EarlyStopping` (`min_delta` 0): a strictly better value resets the count,
//! anything else adds one, and training stops when the count reaches the patience.
//! `ModelCheckpoint(save_top_k = k)`: a new checkpoint enters the kept set when it is better
//! than the worst kept one.
//!
//! Book: "Pretraining" (early stopping and checkpoints) and "Linear probing" (selection by
//! `val_loss`). Reference: `mgca/models/mgca/mgca_module.py`, `cli_main` (pretraining:
//! `val_loss`, patience 5, best 5) and `mgca/models/mgca/mgca_finetuner.py`, `cli()`
//! (downstream: patience 10, best 1), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none.

use super::checkpoint::{BEST_PREFIX, TrainState};

/// Whether lower or higher values of the monitored quantity are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Losses (`val_loss`).
    Min,
    /// Scores (`val_mAP`).
    Max,
}

impl Goal {
    /// Whether `value` is strictly better than `than`.
    pub fn better(self, value: f64, than: f64) -> bool {
        match self {
            Goal::Min => value < than,
            Goal::Max => value > than,
        }
    }
}

/// The monitored quantity: its name in logs and folder names, and its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitor {
    pub name: &'static str,
    pub goal: Goal,
}

impl Monitor {
    /// `val_loss`, lower is better (pretraining, linear probing, segmentation).
    pub const VAL_LOSS: Monitor = Monitor { name: "val_loss", goal: Goal::Min };
}

// ANCHOR: early_stop
/// Record `value` and say whether training should stop: the count of validations without a
/// strictly better value reaches `patience`.
pub fn early_stop(state: &mut TrainState, monitor: Monitor, value: f64, patience: usize) -> bool {
    if state.best_val.is_none_or(|b| monitor.goal.better(value, b)) {
        state.best_val = Some(value);
        state.wait = 0;
    } else {
        state.wait += 1;
    }
    state.wait >= patience
}
// ANCHOR_END: early_stop

/// Keep the `keep` checkpoints with the best values (a new one enters if it beats the worst
/// kept): the folder name of the new one if it enters (listed in `state.best`, best first), and
/// the names it pushes out (to be removed once `last` no longer lists them).
pub fn keep_best(
    state: &mut TrainState,
    monitor: Monitor,
    epoch: usize,
    value: f64,
    keep: usize,
) -> (Option<String>, Vec<String>) {
    if keep == 0 || !value.is_finite() {
        return (None, Vec::new());
    }
    let enters = state.best.len() < keep || state.best.last().is_some_and(|w| monitor.goal.better(value, w.0));
    if !enters {
        return (None, Vec::new());
    }
    let name = format!("{BEST_PREFIX}{epoch:03}-{}={value:.4}", monitor.name);
    state.best.push((value, epoch, name.clone()));
    state.best.sort_by(|a, b| {
        let order = a.0.total_cmp(&b.0);
        let order = if monitor.goal == Goal::Max { order.reverse() } else { order };
        order.then(a.1.cmp(&b.1))
    });
    // The new one is strictly better than the worst kept, so it is never the one pushed out.
    let mut superseded = Vec::new();
    while state.best.len() > keep {
        superseded.push(state.best.pop().expect("non-empty").2);
    }
    (Some(name), superseded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_counts_validations_without_a_strictly_better_value() {
        let mut state = TrainState::default();
        let m = Monitor::VAL_LOSS;
        assert!(!early_stop(&mut state, m, 1.0, 2));
        assert!(!early_stop(&mut state, m, 1.0, 2), "equal is not better");
        assert!(early_stop(&mut state, m, 1.5, 2));
        let mut state = TrainState::default();
        let map = Monitor { name: "val_mAP", goal: Goal::Max };
        assert!(!early_stop(&mut state, map, 0.2, 1));
        assert!(!early_stop(&mut state, map, 0.3, 1));
        assert!(early_stop(&mut state, map, 0.1, 1));
        assert_eq!(state.best_val, Some(0.3));
    }

    #[test]
    fn best_k_keeps_the_best_values_and_names_the_pushed_out() {
        let mut state = TrainState::default();
        let m = Monitor::VAL_LOSS;
        assert_eq!(keep_best(&mut state, m, 0, 2.0, 2).0.as_deref(), Some("epoch=000-val_loss=2.0000"));
        keep_best(&mut state, m, 1, 1.0, 2);
        let (new, out) = keep_best(&mut state, m, 2, 1.5, 2);
        assert_eq!(
            (new.as_deref(), out),
            (Some("epoch=002-val_loss=1.5000"), vec!["epoch=000-val_loss=2.0000".into()])
        );
        assert_eq!(keep_best(&mut state, m, 3, 3.0, 2), (None, vec![]));
        let mut state = TrainState::default();
        let map = Monitor { name: "val_mAP", goal: Goal::Max };
        keep_best(&mut state, map, 0, 0.1, 1);
        let (new, out) = keep_best(&mut state, map, 1, 0.4, 1);
        assert_eq!((new.as_deref(), out), (Some("epoch=001-val_mAP=0.4000"), vec!["epoch=000-val_mAP=0.1000".into()]));
        assert_eq!(keep_best(&mut state, map, 2, 0.2, 1), (None, vec![]));
    }
}
