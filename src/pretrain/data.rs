//! Getting a run's pairs ready: a prepared MIMIC-CXR split, its image caches (built once, at
//! the configuration's cache side) and the tokenizer.
//!
//! For the smoke tier the dataset is the synthetic MIMIC-CXR of [`crate::data::synth`],
//! generated if absent, and the tokenizer is a whole-word vocabulary of its training captions
//! ([`crate::text::vocab`]), so the smoke run needs nothing downloaded.
//!
//! Book: "Pretraining" and "Data: splits, images and masks". Reference:
//! `mgca/datasets/pretrain_dataset.py`, `MultimodalPretrainingDataset`, at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** none for real data; the synthetic vocabulary is not the reference's.

use std::path::{Path, PathBuf};

use super::{PretrainData, TrainError};
use crate::config::MgcaConfig;
use crate::data::pairs::PairDataset;
use crate::data::prepare::{Dataset, OnBad, PrepareOptions, Task, prepare};
use crate::data::{DataError, cache, synth};
use crate::text::tokenizer::ReportTokenizer;
use crate::text::vocab;

/// Where the text side comes from.
#[derive(Debug, Clone)]
pub enum TextSource {
    /// A BERT `vocab.txt` or `tokenizer.json` (Bio_ClinicalBERT's: cased).
    Pretrained { path: PathBuf, lowercase: bool },
    /// A whole-word vocabulary of the training captions, `size` entries.
    CaptionWords { size: usize },
}

fn cache_for(split: &Path, root: &Path, side: usize, on_bad: OnBad) -> Result<PathBuf, DataError> {
    let path = split.with_extension(format!("{side}.cache"));
    let stale = match (std::fs::metadata(&path), std::fs::metadata(split)) {
        (Ok(c), Ok(s)) => c.modified().ok() < s.modified().ok(),
        _ => true,
    };
    if stale {
        cache::build(split, root, &path, side, on_bad)?;
    }
    Ok(path)
}

/// Prepare (if `prepared/train.csv` is missing), cache and open the pairs of the MIMIC-CXR
/// copy at `root`, writing the splits into `prepared`.
pub fn mimic_pairs(
    root: &Path,
    prepared: &Path,
    config: &MgcaConfig,
    text: &TextSource,
) -> Result<PretrainData, TrainError> {
    if !prepared.join("train.csv").exists() {
        let options = PrepareOptions::new(Dataset::Mimic, Task::Pretraining, root.to_path_buf());
        prepare(&options)?.write(prepared)?;
    }
    let side = config.train.cache_side;
    let open = |name: &str| -> Result<PairDataset, DataError> {
        let split = prepared.join(name);
        let cache = cache_for(&split, root, side, OnBad::Skip)?;
        PairDataset::open(&split, &cache)
    };
    let train = open("train.csv")?;
    // A run without validation has no early stopping and no best checkpoints: a prepared folder
    // that lost its validation split is an error, not a quieter run.
    let valid_csv = prepared.join("valid.csv");
    if !valid_csv.exists() {
        return Err(DataError::file(
            &valid_csv,
            format!(
                "missing: {} has train.csv but no valid.csv (prepare the folder again, or restore the file)",
                prepared.display()
            ),
        )
        .into());
    }
    let valid = Some(open("valid.csv")?);
    let max = Some(config.train.max_tokens);
    let tokenizer = match text {
        TextSource::Pretrained { path, lowercase } => {
            let t = if path.extension().is_some_and(|e| e == "json") {
                ReportTokenizer::from_tokenizer_json(path, max)
            } else {
                ReportTokenizer::from_vocab(path, *lowercase, max)
            };
            t.map_err(|e| TrainError::Config(e.to_string()))?
        }
        TextSource::CaptionWords { size } => {
            let words = vocab::word_vocabulary(train.captions(), (*size).min(config.bert.vocab_size));
            let path = prepared.join("vocab.txt");
            vocab::write_vocab(&words, &path).map_err(|e| super::io(&path, e))?;
            ReportTokenizer::from_vocab(&path, true, max).map_err(|e| TrainError::Config(e.to_string()))?
        }
    };
    Ok(PretrainData { train, valid, tokenizer })
}

/// The synthetic MIMIC-CXR at `dir/mimic` (generated if absent) prepared into
/// `dir/mimic-prepared`, with a caption vocabulary: the smoke tier's data.
pub fn synthetic_pairs(
    dir: &Path,
    scale: synth::Scale,
    seed: u32,
    config: &MgcaConfig,
) -> Result<PretrainData, TrainError> {
    let root = dir.join("mimic");
    if !root.join("mimic-cxr-2.0.0-split.csv").exists() && !root.join("mimic-cxr-2.0.0-split.csv.gz").exists() {
        synth::mimic(&root, scale, seed)?;
    }
    mimic_pairs(&root, &dir.join("mimic-prepared"), config, &TextSource::CaptionWords { size: config.bert.vocab_size })
}
