//! A run's outputs besides checkpoints: the per-step metrics CSV, the per-epoch validation CSV
//! and the loss-curve plot (SVG, written by hand: three panels, no plotting dependency).
//!
//! Spec: `losses.md` §5 (the logged quantities: `loss`, `loss_ita`, `loss_local`,
//! `loss_proto`, `acc1`, `acc5`, averaged over shards).
//!
//! **Deviation:** none.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

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

/// An append-only CSV whose rows are keyed by their first column.
pub struct CsvLog {
    file: File,
}

impl CsvLog {
    /// Open `path` for appending, creating it with `header`; rows whose first column is
    /// `keep_below` or more are dropped first (what a resumed run will write again).
    pub fn open(path: &Path, header: &str, keep_below: usize) -> std::io::Result<Self> {
        let mut kept = vec![header.to_string()];
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines().skip(1) {
                let line = line?;
                let key: Option<usize> = line.split(',').next().and_then(|k| k.parse().ok());
                if key.is_some_and(|k| k < keep_below) {
                    kept.push(line);
                }
            }
        }
        let tmp = path.with_extension("csv.part");
        std::fs::write(&tmp, kept.join("\n") + "\n")?;
        std::fs::rename(&tmp, path)?;
        Ok(Self { file: OpenOptions::new().append(true).open(path)? })
    }

    /// Append one row and flush it.
    pub fn push(&mut self, row: &str) -> std::io::Result<()> {
        writeln!(self.file, "{row}")?;
        self.file.flush()
    }
}

/// Read a numeric column of a CSV by name.
pub fn read_column(path: &Path, name: &str) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| format!("{}: empty", path.display()))?;
    let column =
        header.split(',').position(|h| h == name).ok_or_else(|| format!("{}: no `{name}` column", path.display()))?;
    lines
        .enumerate()
        .map(|(i, line)| {
            line.split(',')
                .nth(column)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{} line {}: `{name}` is not a number", path.display(), i + 2))
        })
        .collect()
}

fn polyline(xs: &[f64], ys: &[f64], frame: (f64, f64, f64, f64), range: (f64, f64, f64, f64), colour: &str) -> String {
    let (fx, fy, fw, fh) = frame;
    let (x0, x1, y0, y1) = range;
    let points: Vec<String> = xs
        .iter()
        .zip(ys)
        .filter(|(_, y)| y.is_finite())
        .map(|(x, y)| {
            let px = fx + fw * (x - x0) / (x1 - x0).max(1e-12);
            let py = fy + fh - fh * (y - y0) / (y1 - y0).max(1e-12);
            format!("{px:.1},{py:.1}")
        })
        .collect();
    format!(r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#, points.join(" "))
}

/// The training curves of the plot and their colours.
const SERIES: [(&str, &str); 4] =
    [("loss", "#000000"), ("loss_ita", "#1f77b4"), ("loss_local", "#2ca02c"), ("loss_proto", "#d62728")];
/// The validation loss's colour.
const VAL_COLOUR: &str = "#ff7f0e";

/// Write `plot.svg` from `metrics.csv` and `valid.csv` in `run`: the training losses per step,
/// the validation loss per epoch, and the learning rate.
pub fn plot(run: &Path) -> Result<(), String> {
    let metrics = run.join("metrics.csv");
    let steps = read_column(&metrics, "step")?;
    let lr = read_column(&metrics, "lr")?;
    let series: Vec<(&str, &str, Vec<f64>)> = SERIES
        .iter()
        .map(|&(name, colour)| read_column(&metrics, name).map(|v| (name, colour, v)))
        .collect::<Result<_, _>>()?;
    let valid = run.join("valid.csv");
    let (val_steps, val_loss) = if valid.exists() {
        (read_column(&valid, "step")?, read_column(&valid, "val_loss")?)
    } else {
        (vec![], vec![])
    };
    let x1 = steps.last().copied().unwrap_or(1.0).max(1.0);
    let all: Vec<f64> = series.iter().flat_map(|s| s.2.iter().copied()).chain(val_loss.iter().copied()).collect();
    let (lo, hi) = all.iter().filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo.min(0.0), hi) } else { (0.0, 1.0) };
    let lr_hi = lr.iter().copied().fold(0.0, f64::max).max(1e-12);
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="520" font-family="sans-serif" font-size="12">
<rect width="720" height="520" fill="white"/>
"#,
    );
    let top = (60.0, 30.0, 620.0, 300.0);
    let bottom = (60.0, 380.0, 620.0, 100.0);
    for (frame, label) in
        [(top, format!("losses (0 to {hi:.3})")), (bottom, format!("learning rate (0 to {lr_hi:.2e})"))]
    {
        svg.push_str(&format!(
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#888"/><text x="{}" y="{}">{label}</text>
"##,
            frame.0,
            frame.1,
            frame.2,
            frame.3,
            frame.0,
            frame.1 - 6.0
        ));
    }
    for (_, colour, values) in &series {
        svg.push_str(&polyline(&steps, values, top, (0.0, x1, lo, hi), colour));
        svg.push('\n');
    }
    if !val_loss.is_empty() {
        svg.push_str(&polyline(&val_steps, &val_loss, top, (0.0, x1, lo, hi), VAL_COLOUR));
        for (x, y) in val_steps.iter().zip(&val_loss) {
            let px = top.0 + top.2 * x / x1;
            let py = top.1 + top.3 - top.3 * (y - lo) / (hi - lo).max(1e-12);
            svg.push_str(&format!(r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{VAL_COLOUR}"/>"#));
        }
        svg.push('\n');
    }
    svg.push_str(&polyline(&steps, &lr, bottom, (0.0, x1, 0.0, lr_hi), "#9467bd"));
    for (i, (name, colour)) in SERIES.iter().chain([&("val_loss", VAL_COLOUR)]).enumerate() {
        let x = 70.0 + 120.0 * i as f64;
        svg.push_str(&format!(
            r#"<rect x="{x}" y="345" width="12" height="12" fill="{colour}"/><text x="{}" y="355">{name}</text>"#,
            x + 16.0
        ));
    }
    svg.push_str(&format!(r#"<text x="330" y="505">optimiser step (0 to {x1})</text></svg>"#));
    svg.push('\n');
    let path = run.join("plot.svg");
    std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))
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
