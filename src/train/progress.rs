//! Progress for any training loop: an `indicatif` bar over the planned steps (hidden when not
//! asked for), with the run's own message.
//!
//! **Deviation:** none (the reference shows Lightning's progress bar).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `planned` steps starting at `done`; hidden unless `show`.
pub fn bar(planned: usize, done: usize, show: bool) -> ProgressBar {
    let bar = if show { ProgressBar::new(planned as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar
}

/// Print a per-epoch line above the bar, or on stderr when there is no bar and `log_epochs`.
pub fn epoch_line(bar: &ProgressBar, log_epochs: bool, line: &str) {
    if !bar.is_hidden() {
        bar.println(line);
    } else if log_epochs {
        eprintln!("{line}"); // no bar (not asked for, or not a terminal)
    }
}
