//! A run folder, for any training loop: the resolved configuration saved with the run
//! (written whole, then renamed into place), and the check that a resume runs the
//! configuration the run was started with.
//!
//! Book: appendix "What happens when things go wrong" (resuming with a changed
//! configuration).
//!
//! **Deviation:** none (the reference saves its hyper-parameters through Lightning and does not
//! compare them on resume).

use std::path::Path;

use super::TrainError;

/// `path: message` as an I/O error of the run.
pub fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// Write `out/config.toml` whole (as `config.toml.part`, then renamed into place).
pub fn save_config(out: &Path, config_toml: &str) -> Result<(), TrainError> {
    let (path, part) = (out.join("config.toml"), out.join("config.toml.part"));
    std::fs::write(&part, config_toml).map_err(|e| io(&part, e))?;
    std::fs::rename(&part, &path).map_err(|e| io(&path, e))
}

/// The differences between two configurations as TOML values, one line per field path:
/// `train.epochs: 3 (saved) vs 5 (now)`.
pub fn config_changes(saved: &toml::Value, now: &toml::Value, path: &str, out: &mut Vec<String>) {
    match (saved, now) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => config_changes(x, y, &here, out),
                    (x, y) => {
                        let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
                        out.push(format!("{here}: {} (saved) vs {} (now)", show(x), show(y)));
                    }
                }
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} (saved) vs {b} (now)")),
        _ => {}
    }
}

/// A resume must run the configuration the run was started with (`out/config.toml`), unless
/// `force`; `config_toml` is the configuration now, as it would be saved.
pub fn check_saved_config(out: &Path, config_toml: &str, force: bool) -> Result<(), TrainError> {
    let path = out.join("config.toml");
    // Both sides as read back from their text (an `f32` field reads back as the same `f64`).
    let now = toml::from_str::<toml::Table>(config_toml).map_err(|e| TrainError::Config(e.to_string()))?;
    let now = toml::Value::Table(now);
    let changes = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let saved: toml::Value = toml::from_str::<toml::Table>(&text)
                .map(toml::Value::Table)
                .map_err(|e| TrainError::Resume(format!("{}: not a readable configuration: {e}", path.display())))?;
            let mut changes = Vec::new();
            config_changes(&saved, &now, "", &mut changes);
            changes
        }
        Err(e) => vec![format!("no saved configuration to compare with ({e})")],
    };
    if changes.is_empty() {
        return Ok(());
    }
    let list = changes.join("\n  ");
    if force {
        eprintln!("train: resuming with a changed configuration (forced), {}:\n  {list}", path.display());
        return Ok(());
    }
    Err(TrainError::Resume(format!(
        "refusing to resume: the configuration differs from the run's {}:\n  {list}\n(pass --force-config-change to resume anyway)",
        path.display()
    )))
}
