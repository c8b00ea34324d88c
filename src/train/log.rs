//! A run's logs, for any training loop: append-only CSV files keyed by their first column (so
//! that a resumed run rewrites exactly the rows after its checkpoint), reading a column back,
//! and the curves plot (SVG written by hand: no plotting dependency).
//!
//! Book: "Pretraining" (the run folder and its plot). Used by pretraining and by the
//! downstream tasks' shared loop.
//!
//! **Deviation:** none; the reference logs through Lightning's loggers, whose files differ.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

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

/// What [`plot`] draws.
#[derive(Debug, Clone, Copy)]
pub struct Plot<'a> {
    /// The per-step (or per-epoch) log in the run folder, e.g. `metrics.csv`.
    pub log: &'a str,
    /// Its x column (`step`, `epoch`).
    pub x: &'a str,
    /// The x axis's label.
    pub x_label: &'a str,
    /// The training curves: column and colour.
    pub series: &'a [(&'a str, &'a str)],
    /// The learning-rate column.
    pub lr: &'a str,
    /// The validation curve: its file, x column and y column.
    pub valid: Option<(&'a str, &'a str, &'a str)>,
}

/// The validation curve's colour.
const VAL_COLOUR: &str = "#ff7f0e";

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

/// Write `plot.svg` in `run` as `spec` says: the training curves against the x column, the
/// validation curve (dots at each validation), and the learning rate below.
pub fn plot(run: &Path, spec: &Plot) -> Result<(), String> {
    let metrics = run.join(spec.log);
    let steps = read_column(&metrics, spec.x)?;
    let lr = read_column(&metrics, spec.lr)?;
    let series: Vec<(&str, &str, Vec<f64>)> = spec
        .series
        .iter()
        .map(|&(name, colour)| read_column(&metrics, name).map(|v| (name, colour, v)))
        .collect::<Result<_, _>>()?;
    let (val_steps, val_loss) = match spec.valid {
        Some((file, x, y)) if run.join(file).exists() => {
            (read_column(&run.join(file), x)?, read_column(&run.join(file), y)?)
        }
        _ => (vec![], vec![]),
    };
    let val_name = spec.valid.map_or("", |v| v.2);
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
    for (i, (name, colour)) in spec.series.iter().chain([&(val_name, VAL_COLOUR)]).enumerate() {
        let x = 70.0 + 120.0 * i as f64;
        svg.push_str(&format!(
            r#"<rect x="{x}" y="345" width="12" height="12" fill="{colour}"/><text x="{}" y="355">{name}</text>"#,
            x + 16.0
        ));
    }
    svg.push_str(&format!(r#"<text x="330" y="505">{} (0 to {x1})</text></svg>"#, spec.x_label));
    svg.push('\n');
    let path = run.join("plot.svg");
    std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_log_keeps_only_the_rows_before_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("mgca-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.csv");
        let mut log = CsvLog::open(&path, "epoch,lr,loss", 0).unwrap();
        for e in 0..5 {
            log.push(&format!("{e},0.1,{}", 3.0 - e as f64 * 0.5)).unwrap();
        }
        drop(log);
        let mut log = CsvLog::open(&path, "epoch,lr,loss", 3).unwrap();
        log.push("3,0.1,9").unwrap();
        assert_eq!(read_column(&path, "epoch").unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(read_column(&path, "loss").unwrap(), vec![3.0, 2.5, 2.0, 9.0]);
        assert!(read_column(&path, "nope").unwrap_err().contains("no `nope` column"));
        let spec = Plot {
            log: "log.csv",
            x: "epoch",
            x_label: "epoch",
            series: &[("loss", "#000000")],
            lr: "lr",
            valid: None,
        };
        plot(&dir, &spec).unwrap();
        let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        std::fs::remove_dir_all(dir).ok();
    }
}
