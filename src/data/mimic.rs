//! MIMIC-CXR-JPG 2.0.0 (pretraining): report sections, the caption cleaning, and the image
//! table (`master.csv`) the reference builds.
//!
//! Sections: a header is `\n` + one space + `[A-Z ()/,-]+` + `:` + one whitespace character;
//! the text before the first header is the preamble; after each header, the search for the next
//! one starts at the first newline after the body's start. Names are lower-cased and normalised
//! (misspellings, synonyms, view titles → findings); empty impression/findings sections are
//! dropped; without either, the last section's later paragraphs become `last_paragraph`.
//! Captions: impression then findings, newlines as spaces, split on numbered-list markers and
//! on periods, each sentence lower-cased and tokenised into `\w+` words (non-ASCII removed),
//! sentences of one token dropped; a study with fewer than 3 tokens in all is dropped.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/preprocess/utils.py`,
//! `extract_mimic_text`, `section_text` and `custom_mimic_cxr_rules`; `mimic_cxr.py`, `main`;
//! `mgca/datasets/pretrain_dataset.py`, `MultimodalPretrainingDataset.create_path_2_sent_mapping`,
//! at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! **Deviation:** report files are visited in sorted order (the reference uses directory-listing
//! order, which only changes the row order of `mimic_cxr_sectioned.csv`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::DataError;
use super::sampling::pandas_sample;
use super::tables::{DatasetTables, PrepareOptions, Sources, Table, Task};

/// The 54 studies with hand-curated sections, which the reference leaves out of
/// `mimic_cxr_sectioned.csv` (reference: `mgca/preprocess/utils.py`, `custom_mimic_cxr_rules`).
pub const EXCLUDED_STUDIES: [&str; 54] = [
    "s50525523",
    "s57564132",
    "s59982525",
    "s53488209",
    "s54875119",
    "s50196495",
    "s56579911",
    "s52648681",
    "s59889364",
    "s53514462",
    "s59505494",
    "s53182247",
    "s51410602",
    "s56412866",
    "s54986978",
    "s59003148",
    "s57150433",
    "s56760320",
    "s59562049",
    "s52674888",
    "s55258338",
    "s59330497",
    "s52119491",
    "s58235663",
    "s50798377",
    "s54168089",
    "s53071062",
    "s56724958",
    "s54231141",
    "s53607029",
    "s52035334",
    "s50913680",
    "s59363654",
    "s59279892",
    "s59768032",
    "s57936451",
    "s50058765",
    "s53356173",
    "s53202765",
    "s50808053",
    "s51966317",
    "s50743547",
    "s56451190",
    "s59067458",
    "s59215320",
    "s55124749",
    "s54365831",
    "s59087630",
    "s58157373",
    "s56482935",
    "s58375018",
    "s54654948",
    "s55157853",
    "s51491012",
];

/// The leftmost section header at or after byte `from`: `(match start, name start, name end,
/// match end)`.
fn find_header(text: &str, from: usize) -> Option<(usize, usize, usize, usize)> {
    let b = text.as_bytes();
    let allowed = |c: u8| c.is_ascii_uppercase() || b" ()/,-".contains(&c);
    let mut i = from;
    while i + 1 < b.len() {
        if b[i] == b'\n' && b[i + 1] == b' ' {
            let name_start = i + 2;
            let mut j = name_start;
            while j < b.len() && allowed(b[j]) {
                j += 1;
            }
            if j > name_start && j < b.len() && b[j] == b':' {
                // One whitespace character (any Unicode whitespace, as Python's `\s`).
                if let Some(ws) = text[j + 1..].chars().next().filter(|c| c.is_whitespace()) {
                    return Some((i, name_start, j, j + 1 + ws.len_utf8()));
                }
            }
        }
        i += 1;
    }
    None
}

/// The reference's section names, normalised.
pub fn normalise_name(name: &str) -> String {
    let name = name.trim().to_lowercase();
    let exact = [
        ("preamble", "preamble"),
        ("impression", "impression"),
        ("comparison", "comparison"),
        ("indication", "indication"),
        ("findings", "findings"),
        ("examination", "examination"),
        ("technique", "technique"),
        ("history", "history"),
        ("comparisons", "comparison"),
        ("clinical history", "history"),
        ("reason for examination", "indication"),
        ("notification", "notification"),
        ("reason for exam", "indication"),
        ("clinical information", "history"),
        ("exam", "examination"),
        ("clinical indication", "indication"),
        ("conclusion", "impression"),
        ("chest, two views", "findings"),
        ("recommendation(s)", "recommendations"),
        ("type of examination", "examination"),
        ("reference exam", "comparison"),
        ("patient history", "history"),
        ("addendum", "addendum"),
        ("comparison exam", "comparison"),
        ("date", "date"),
        ("comment", "comment"),
        ("findings and impression", "impression"),
        ("wet read", "wet read"),
        ("comparison film", "comparison"),
        ("recommendations", "recommendations"),
        ("findings/impression", "impression"),
        ("pfi", "history"),
        ("recommendation", "recommendations"),
        ("wetread", "wet read"),
        ("ndication", "impression"),
        ("impresson", "impression"),
        ("imprression", "impression"),
        ("imoression", "impression"),
        ("impressoin", "impression"),
        ("imprssion", "impression"),
        ("impresion", "impression"),
        ("imperssion", "impression"),
        ("mpression", "impression"),
        ("impession", "impression"),
        ("findings/ impression", "impression"),
        ("finding", "findings"),
        ("findins", "findings"),
        ("findindgs", "findings"),
        ("findgings", "findings"),
        ("findngs", "findings"),
        ("findnings", "findings"),
        ("finidngs", "findings"),
        ("idication", "indication"),
        ("reference findings", "findings"),
        ("comparision", "comparison"),
        ("comparsion", "comparison"),
        ("comparrison", "comparison"),
        ("comparisions", "comparison"),
    ];
    if let Some((_, to)) = exact.iter().find(|(from, _)| *from == name) {
        return to.to_string();
    }
    for word in ["impression", "findings", "history", "comparison", "addendum"] {
        if name.contains(word) {
            return word.to_string();
        }
    }
    let views = [
        "chest",
        "portable",
        "pa and lateral",
        "lateral and pa",
        "ap and lateral",
        "lateral and ap",
        "frontal and",
        "two views",
        "frontal view",
        "pa view",
        "ap view",
        "one view",
        "lateral view",
        "bone window",
        "frontal upright",
        "frontal semi-upright",
        "ribs",
        "pa and lat",
    ];
    if views.iter().any(|v| name.contains(v)) {
        return "findings".to_string();
    }
    name
}

/// The report's sections `(name, body)` after normalisation and the reference's clean-ups.
pub fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    match find_header(text, 0) {
        None => out.push(("full report".into(), text.to_string())),
        Some(first) => {
            out.push(("preamble".into(), text[..first.1].to_string()));
            let mut current = Some(first);
            while let Some((_, name_start, name_end, body_start)) = current {
                let name = text[name_start..name_end].to_lowercase();
                let skip = text[body_start..].find('\n').unwrap_or(0);
                current = find_header(text, body_start + skip);
                let end = current.map_or(text.len(), |h| h.0);
                out.push((name, text[body_start..end].to_string()));
            }
        }
    }
    for s in out.iter_mut() {
        s.0 = normalise_name(&s.0);
    }
    out.retain(|(name, body)| !((name == "impression" || name == "findings") && body.trim().is_empty()));
    let has_main = out.iter().any(|(n, _)| n == "impression" || n == "findings");
    if !has_main && let Some(last) = out.last_mut() {
        let paragraphs: Vec<&str> = last.1.split("\n \n").collect();
        if paragraphs.len() > 1 {
            let rest = paragraphs[1..].join("\n \n");
            last.1 = paragraphs[0].to_string();
            out.push(("last_paragraph".into(), rest));
        }
    }
    out
}

/// The sectioned row of a report: the stripped body of the last section of each name
/// (`impression`, `findings`, `last_paragraph`, `comparison`), or `None`.
pub fn sectioned_row(text: &str) -> [Option<String>; 4] {
    let s = sections(text);
    ["impression", "findings", "last_paragraph", "comparison"].map(|name| {
        s.iter().rev().find(|(n, _)| n == name).map(|(_, body)| body.trim().to_string()).filter(|b| !b.is_empty())
    })
}

/// The reference's caption: `(sentences, token count)`; `None` when the study has fewer than 3
/// tokens and is dropped.
pub fn caption(impression: &str, findings: &str) -> Option<(Vec<String>, usize)> {
    let text = format!("{impression} {findings}").replace('\n', " ");
    // Split on "one or more digits followed by a period", then on periods.
    let mut pieces = Vec::new();
    let b = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'.' {
                pieces.push(&text[start..i]);
                start = j + 1;
                i = j + 1;
                continue;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    pieces.push(&text[start..]);
    let mut sentences = Vec::new();
    let mut count = 0;
    for candidate in pieces.iter().flat_map(|p| p.split('.')) {
        if candidate.is_empty() {
            continue;
        }
        let lowered = candidate.replace("\u{fffd}\u{fffd}", " ").to_lowercase();
        // `\w+` over Unicode word characters (letters, digits, underscore).
        let tokens: Vec<&str> =
            lowered.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|t| !t.is_empty()).collect();
        if tokens.len() <= 1 {
            continue;
        }
        let kept: Vec<String> = tokens
            .iter()
            .map(|t| t.chars().filter(char::is_ascii).collect::<String>())
            .filter(|t| !t.is_empty())
            .collect();
        if !kept.is_empty() {
            count += kept.len();
            sentences.push(kept.join(" "));
        }
    }
    (count >= 3).then_some((sentences, count))
}

/// Whether a study id is one of the hand-curated exclusions.
pub fn excluded(study: &str) -> bool {
    EXCLUDED_STUDIES.contains(&study)
}

/// One image of the reference's `master.csv` (frontal, with a report that has an impression or
/// findings), with its caption if the caption filter keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// `files/p<2>/p<subject>/s<study>/<dicom_id>.jpg`, relative to the `2.0.0` folder.
    pub path: String,
    pub dicom_id: String,
    pub subject_id: String,
    pub study_id: String,
    pub view: String,
    /// `train` or `valid` (the official *validate* and *test* splits together).
    pub split: String,
    /// The metadata CSV and its line this image comes from (what an error about the image
    /// cites).
    pub source: (std::path::PathBuf, usize),
    /// The cleaned sentences and their token count; `None` when the study has fewer than 3
    /// tokens (the dataset drops such images).
    pub caption: Option<(Vec<String>, usize)>,
}

/// `name`, or `name.gz` when only the gzipped file (as PhysioNet ships it) exists.
pub fn csv_name(root: &Path, name: &str) -> String {
    if !root.join(name).is_file() && root.join(format!("{name}.gz")).is_file() {
        format!("{name}.gz")
    } else {
        name.to_string()
    }
}

fn read_csv(path: &Path, columns: &[&str]) -> Result<Vec<(usize, Vec<String>)>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::file(path, e.to_string()))?;
    let input: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read_csv_from(input, path, columns)
}

/// The `columns` of a MIMIC metadata or split CSV as `(line, values)`, from any reader; `path`
/// is the name errors give. Never panics (the fuzz harness's entry point).
pub fn read_csv_from(
    input: impl std::io::Read,
    path: &Path,
    columns: &[&str],
) -> Result<Vec<(usize, Vec<String>)>, DataError> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let idx = columns
        .iter()
        .map(|c| headers.iter().position(|h| h == *c).ok_or_else(|| DataError::file(path, format!("no column `{c}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| DataError::row(path, i + 2, e.to_string()))?;
        rows.push((i + 2, idx.iter().map(|&k| record.get(k).unwrap_or("").to_string()).collect()));
    }
    Ok(rows)
}

/// The sectioned reports: study id (`s…`) → (impression, findings), for every report under
/// `files/p??/p*/s*.txt` except the hand-curated exclusions.
pub fn read_reports(root: &Path) -> Result<HashMap<String, [Option<String>; 4]>, DataError> {
    let files = root.join("files");
    let mut reports = HashMap::new();
    let list = |dir: &Path| -> Result<Vec<std::path::PathBuf>, DataError> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| DataError::file(dir, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    for group in list(&files)? {
        let name = group.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(group.is_dir() && name.starts_with('p') && name.len() == 3) {
            continue;
        }
        for patient in list(&group)? {
            if !patient.is_dir() || !patient.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('p')) {
                continue;
            }
            for report in list(&patient)? {
                let file = report.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let Some(study) = file.strip_suffix(".txt").filter(|s| s.starts_with('s')) else { continue };
                if excluded(study) {
                    continue;
                }
                let bytes = std::fs::read(&report).map_err(|e| DataError::file(&report, e.to_string()))?;
                let text = String::from_utf8_lossy(&bytes);
                reports.insert(study.to_string(), sectioned_row(&text));
            }
        }
    }
    Ok(reports)
}

/// The reference's image table for pretraining (`master.csv` restricted to train and valid,
/// frontal views), in metadata order, with captions.
pub fn read_images(root: &Path) -> Result<Vec<Image>, DataError> {
    let reports = read_reports(root)?;
    let meta_path = root.join(csv_name(root, "mimic-cxr-2.0.0-metadata.csv"));
    let meta = read_csv(&meta_path, &["dicom_id", "subject_id", "study_id", "ViewPosition"])?;
    let split_path = root.join(csv_name(root, "mimic-cxr-2.0.0-split.csv"));
    let split_rows = read_csv(&split_path, &["dicom_id", "study_id", "subject_id", "split"])?;
    let mut split: HashMap<(String, String, String), String> = HashMap::new();
    for (line, r) in split_rows {
        let s = match r[3].as_str() {
            "train" => "train",
            "validate" | "test" => "valid",
            other => {
                return Err(DataError::row(&split_path, line, format!("split {other:?}")));
            }
        };
        split.insert((r[0].clone(), r[2].clone(), format!("s{}", r[1])), s.to_string());
    }
    let mut images = Vec::new();
    for (line, r) in meta {
        let (dicom_id, subject_id, study_id, view) = (&r[0], &r[1], format!("s{}", r[2]), &r[3]);
        if view != "PA" && view != "AP" {
            continue;
        }
        let Some(row) = reports.get(&study_id) else { continue };
        let (impression, findings) = (&row[0], &row[1]);
        if impression.is_none() && findings.is_none() {
            continue;
        }
        let Some(s) = split.get(&(dicom_id.clone(), subject_id.clone(), study_id.clone())) else { continue };
        let prefix: String = subject_id.chars().take(2).collect();
        let path = format!("files/p{prefix}/p{subject_id}/{study_id}/{dicom_id}.jpg");
        let caption = caption(impression.as_deref().unwrap_or(" "), findings.as_deref().unwrap_or(" "));
        images.push(Image {
            path,
            dicom_id: dicom_id.clone(),
            subject_id: subject_id.clone(),
            study_id,
            view: view.clone(),
            split: s.clone(),
            source: (meta_path.clone(), line),
            caption,
        });
    }
    if images.is_empty() {
        return Err(DataError::file(
            &meta_path,
            "no frontal (PA/AP) image with a report and a split entry: nothing to pretrain on",
        ));
    }
    Ok(images)
}

/// `MIMIC-CXR`'s prepared tables for `mgca data prepare`: the official split (validate and test merged into valid), the pretraining pairs with their
/// captions, and the 1 % and 10 % training subsets.
pub fn tables(options: &PrepareOptions, sources: &mut Sources) -> Result<DatasetTables, DataError> {
    let mut sampling = BTreeMap::new();
    if options.task != Task::Pretraining {
        return Err(DataError::file(&options.root, "MIMIC-CXR is used for pretraining only"));
    }
    sources.read(&csv_name(&options.root, "mimic-cxr-2.0.0-metadata.csv"))?;
    sources.read(&csv_name(&options.root, "mimic-cxr-2.0.0-split.csv"))?;
    let images = read_images(&options.root)?;
    let origins = HashMap::from_iter(images.iter().map(|im| (im.path.clone(), im.source.clone())));
    let header =
        ["path", "dicom_id", "subject_id", "study_id", "ViewPosition", "caption", "tokens"].map(String::from).to_vec();
    let row = |im: &Image| -> Option<Vec<String>> {
        let (sentences, tokens) = im.caption.as_ref()?;
        Some(vec![
            im.path.clone(),
            im.dicom_id.clone(),
            im.subject_id.clone(),
            im.study_id.clone(),
            im.view.clone(),
            sentences.join(" "),
            tokens.to_string(),
        ])
    };
    let of = |split: &str| images.iter().filter(|im| im.split == split).collect::<Vec<_>>();
    let (train, valid) = (of("train"), of("valid"));
    let table = |rows: &[&Image]| Table {
        header: header.clone(),
        rows: rows.iter().filter_map(|im| row(im)).collect(),
        class_column: None,
    };
    // The reference samples the split's rows, then keeps those with a caption.
    let subset = |frac: f64| {
        let picked: Vec<&Image> = pandas_sample(train.len(), frac, 42).into_iter().map(|i| train[i]).collect();
        table(&picked)
    };
    sampling.insert(
        "split".into(),
        "the official split, validate and test merged into valid; frontal (PA/AP) images whose report has an impression or findings and whose caption has at least 3 tokens".into(),
    );
    sampling.insert(
        "subsets".into(),
        "pandas sample(frac=p, random_state=42) of the training images, then the caption filter".into(),
    );
    let tables = vec![
        ("train.csv", table(&train)),
        ("valid.csv", table(&valid)),
        ("test.csv", table(&[])),
        ("train_1pct.csv", subset(0.01)),
        ("train_10pct.csv", subset(0.1)),
    ];
    let leaks =
        "none: there is no MIMIC test set (the official test split is part of valid, as in the reference)".to_string();
    Ok(DatasetTables { tables, sampling, leaks, origins })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report's sentences as `create_path_2_sent_mapping` cleans and counts them.
    #[test]
    fn caption_example() {
        let (sentences, count) = caption(
            "1. No acute process.\n2. Stable cardiomegaly.",
            "Heart size is enlarged. No effusion. Nodule measures 1.5 cm. Normal.",
        )
        .unwrap();
        assert_eq!(
            sentences,
            [
                "no acute process",
                "stable cardiomegaly",
                "heart size is enlarged",
                "no effusion",
                "nodule measures",
                "5 cm"
            ]
        );
        assert_eq!(count, 15);
        assert!(caption("Normal.", "Clear.").is_none(), "fewer than 3 tokens");
    }

    /// Sectioning and captions on arbitrary UTF-8 (multi-byte characters next to every
    /// delimiter the parser slices at) never panic.
    #[test]
    fn sectioning_survives_arbitrary_utf8() {
        let pieces = [
            "\n",
            " ",
            "\n ",
            "FINDINGS",
            "IMPRESSION",
            ":",
            ": ",
            ":\u{a0}",
            "é",
            "漢",
            "🫁",
            "1.",
            "2",
            ".",
            "\u{fffd}",
            "\n \n",
            "A",
        ];
        let mut state = 0x9e37_79b9u32;
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                text.push_str(pieces[(state % pieces.len() as u32) as usize]);
            }
            let row = sectioned_row(&text);
            caption(row[0].as_deref().unwrap_or(&text), row[1].as_deref().unwrap_or(" "));
        }
        let row = sectioned_row("x\n FINDINGS:\u{a0}漢字 🫁.\n IMPRESSION:\u{2003}é 1.é2.");
        assert_eq!(row[1].as_deref(), Some("漢字 🫁."));
    }

    #[test]
    fn sections_follow_the_reference() {
        let report = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  Cough.\n \n FINDINGS: \n \n Lungs are clear.  No effusion.\n \n IMPRESSION: \n \n No acute cardiopulmonary process.\n";
        let s = sections(report);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["preamble", "examination", "indication", "findings", "impression"]);
        let row = sectioned_row(report);
        assert_eq!(row[0].as_deref(), Some("No acute cardiopulmonary process."));
        assert_eq!(row[1].as_deref(), Some("Lungs are clear.  No effusion."));
        // The search for the next header starts at the first newline of the body.
        let tricky = "x\n NOTE: a\n FINDINGS: b\n";
        assert_eq!(
            sections(tricky).iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["preamble", "note", "findings"]
        );
        // Without impression or findings, the last section's later paragraphs are split off.
        let plain = "x\n INDICATION: cough\n \n the lungs are clear\n \n no effusion";
        let row = sectioned_row(plain);
        assert_eq!(row[2].as_deref(), Some("the lungs are clear\n \n no effusion"));
        // No header at all: one "full report" section.
        assert_eq!(sections("just text").len(), 1);
    }

    #[test]
    fn names_normalise() {
        assert_eq!(normalise_name("IMPRESSON"), "impression");
        assert_eq!(normalise_name("PA AND LATERAL VIEWS OF THE CHEST"), "findings");
        assert_eq!(normalise_name("final impression and plan"), "impression");
        assert_eq!(normalise_name("TECHNIQUE"), "technique");
        assert_eq!(normalise_name("odd"), "odd");
        assert!(excluded("s50525523") && !excluded("s50000000"));
    }
}
