//! The fuzz targets: each feeds one input to a reader of the `mgca` library through its public
//! API and asserts only what must hold for every input: no panic, no abort, no hang (checked
//! by the runner), plus cheap invariants where they are true (a decoded image has `h · w`
//! pixels, a read tensor has as many values as its shape says, a file `Experiment::read`
//! accepts resolves).
//!
//! Readers that take a path get the input written to a scratch file per input (on a tmpfs
//! where there is one). **Deviation:** when the readers gain byte-level entry points, the
//! targets should call those instead and skip the file write.
//!
//! Book: appendix "What happens when things go wrong" (fuzzing).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mgca::data::{chexpert, covidx, image, mimic, objectcxr, rle, rsna, siim, targets};
use mgca::experiment::Experiment;
use mgca::weights::{pickle, torch};

/// The side images are resized to, as the pipeline does before caching.
pub const IMAGE_SIDE: usize = 224;
/// The largest RLE mask the `rle` target decodes (the header's width × height are clamped).
pub const RLE_MAX_SIDE: usize = 1024;
/// The side masks are shrunk to in the `rle` and label targets (small: the resize is not
/// what is under test there).
const MASK_SIDE: usize = 8;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What it exercises, for `mgca-fuzz list`.
    pub about: &'static str,
    /// Apply the text mutations too.
    pub text: bool,
    /// Tokens worth inserting.
    pub dictionary: &'static [&'static [u8]],
    /// No input grows beyond this many bytes.
    pub max_len: usize,
    /// Run one input (panics on a bug).
    pub run: fn(&[u8], &Scratch),
}

/// A per-thread scratch folder for readers that need a path.
pub struct Scratch {
    dir: PathBuf,
}

static SCRATCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    /// A fresh folder under `/dev/shm` (tmpfs) when it exists, else the system temp folder.
    pub fn new() -> std::io::Result<Self> {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("mgca-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `data` to `name` in the folder; its path.
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("scratch write {}: {e} (harness, not target)", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pickle_target(data: &[u8], _: &Scratch) {
    let _ = pickle::read(data, &mut pickle::torch_storage);
    // Any persistent id accepted: the object graph past the storage check.
    let _ = pickle::read(data, &mut Ok);
}

fn checkpoint_target(data: &[u8], s: &Scratch) {
    let path = s.write("checkpoint.pth", data);
    let Ok(checkpoint) = torch::Checkpoint::open(&path) else { return };
    let Ok(file) = checkpoint.tensors(None, |_| true) else { return };
    for (key, t) in &file.tensors {
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(numel, Some(t.values.len()), "tensor `{key}`: shape {:?} for {} values", t.shape, t.values.len());
    }
}

fn rsna_target(data: &[u8], s: &Scratch) {
    let path = s.write("stage_2_train_labels.csv", data);
    let Ok(patients) = rsna::read_labels(&path) else { return };
    for p in patients.iter().take(64) {
        let _ = p.bbox_field();
        let _ = targets::rsna_detection(&p.boxes, 1024.0, 1024.0);
        if let Ok(mask) = targets::rsna_mask(&p.boxes, 32, 32, MASK_SIDE) {
            assert_eq!(mask.len(), MASK_SIDE * MASK_SIDE);
        }
    }
    let _ = rsna::split(patients.len(), rsna::Partition::Classification);
}

fn siim_target(data: &[u8], s: &Scratch) {
    let path = s.write("train-rle.csv", data);
    let Ok(rows) = siim::read_rle(&path) else { return };
    for r in rows.iter().take(64) {
        let _ = r.label();
        let _ = targets::siim_mask(&[r.encoded.as_str()], 32, 32, MASK_SIDE);
    }
    let _ = siim::split(&rows, true);
}

fn chexpert_target(data: &[u8], s: &Scratch) {
    let path = s.write("train.csv", data);
    let Ok(labels) = chexpert::read_labels(&path) else { return };
    for r in labels.rows.iter().take(64) {
        let _ = labels.targets(r);
        let _ = chexpert::relative_path(&r.path);
    }
    let _ = chexpert::split(&labels, true);
}

fn covidx_target(data: &[u8], s: &Scratch) {
    let path = s.write("train.txt", data);
    let Ok(entries) = covidx::read_list(&path) else { return };
    entries.iter().for_each(|e| assert!(e.label() <= 2));
    let _ = covidx::split(entries.len());
}

fn objectcxr_target(data: &[u8], s: &Scratch) {
    let path = s.write("train.csv", data);
    // The same bytes as the Shapely box table and as the annotation list.
    let polygons = objectcxr::read_polygon_boxes(&path).ok();
    let Ok(entries) = objectcxr::read_list(&path, polygons.as_ref()) else { return };
    for e in entries.iter().take(64) {
        let _ = targets::object_cxr_detection(&e.boxes, 2000.0, 2000.0);
    }
    let _ = objectcxr::split(entries.len());
}

/// A fixed MIMIC-CXR tree (reports) for the metadata/split target; the CSVs are the input.
const MIMIC_REPORTS: [(&str, &str); 2] = [
    ("files/p10/p10000000/s50000000.txt", "FINDINGS: No focal consolidation.\n \nIMPRESSION: No acute process.\n"),
    ("files/p10/p10000001/s50000026.txt", "IMPRESSION: Heart size normal. Lungs are clear.\n"),
];
/// The split CSV used when the input holds only the metadata.
const MIMIC_SPLIT: &str = "dicom_id,study_id,subject_id,split\n\
    db09f968-02faf080-00989680-00000000-00000000,50000000,10000000,train\n\
    e7c376cb-02faf080-00989680-00000000-00000001,50000000,10000000,validate\n";
/// Separates the metadata CSV from the split CSV in one input.
pub const MIMIC_SEPARATOR: &str = "\n=====\n";

fn mimic_csv_target(data: &[u8], s: &Scratch) {
    let root = s.dir().join("mimic");
    if !root.join(MIMIC_REPORTS[0].0).is_file() {
        for (path, text) in MIMIC_REPORTS {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().expect("a folder")).expect("scratch folder (harness)");
            std::fs::write(p, text).expect("scratch write (harness)");
        }
    }
    let sep = MIMIC_SEPARATOR.as_bytes();
    let (meta, split) = match data.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (&data[..i], &data[i + sep.len()..]),
        None => (data, MIMIC_SPLIT.as_bytes()),
    };
    std::fs::write(root.join("mimic-cxr-2.0.0-metadata.csv"), meta).expect("scratch write (harness)");
    std::fs::write(root.join("mimic-cxr-2.0.0-split.csv"), split).expect("scratch write (harness)");
    let Ok(images) = mimic::read_images(&root) else { return };
    for i in &images {
        assert!(i.split == "train" || i.split == "valid", "split {:?}", i.split);
    }
}

fn mimic_report_target(data: &[u8], _: &Scratch) {
    let text = String::from_utf8_lossy(data);
    let _ = mimic::sections(&text);
    let row = mimic::sectioned_row(&text);
    let _ = mimic::caption(row[0].as_deref().unwrap_or(" "), row[1].as_deref().unwrap_or(" "));
    let _ = mimic::caption(&text, "");
    let _ = mimic::normalise_name(&text);
}

/// `rle`: an optional first line `WIDTH HEIGHT` (clamped to 1..=[`RLE_MAX_SIDE`]; default
/// 32 × 32), then one run-length value per line.
fn rle_target(data: &[u8], _: &Scratch) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines().peekable();
    let mut size = (32usize, 32usize);
    if let Some(first) = lines.peek() {
        let v: Vec<usize> = first.split_whitespace().filter_map(|t| t.parse().ok()).collect();
        if let [w, h] = v[..] {
            size = (w.clamp(1, RLE_MAX_SIDE), h.clamp(1, RLE_MAX_SIDE));
            lines.next();
        }
    }
    let (w, h) = size;
    let values: Vec<&str> = lines.collect();
    for v in &values {
        let _ = rle::is_negative(v);
        if let Ok(mask) = rle::decode(v, w, h) {
            assert_eq!(mask.len(), w * h);
            assert!(mask.iter().all(|&m| m <= 1));
        }
    }
    // Masks are only ever shrunk (images are at least the crop); smaller sizes are not asked.
    if w >= MASK_SIDE
        && h >= MASK_SIDE
        && let Ok(mask) = targets::siim_mask(&values, h, w, MASK_SIDE)
    {
        assert_eq!(mask.len(), MASK_SIDE * MASK_SIDE);
    }
}

fn image_target(name: &str, data: &[u8], s: &Scratch) {
    let path = s.write(name, data);
    if let Ok(g) = mgca::data::cache::load_resized(&path, IMAGE_SIDE) {
        assert_eq!((g.height, g.width, g.pixels.len()), (IMAGE_SIDE, IMAGE_SIDE, IMAGE_SIDE * IMAGE_SIDE));
    }
}

fn dicom_target(data: &[u8], s: &Scratch) {
    image_target("image.dcm", data, s);
}

fn jpeg_target(data: &[u8], s: &Scratch) {
    // The format is guessed from the bytes (JPEG or PNG), as for `.jpg` files in the datasets.
    image_target("image.jpg", data, s);
    let path = s.dir().join("image.jpg");
    if let Ok(g) = image::read_gray(&path) {
        assert_eq!(g.pixels.len(), g.height * g.width);
    }
}

fn experiment_target(data: &[u8], s: &Scratch) {
    let path = s.write("experiment.toml", data);
    let Ok(e) = Experiment::read(&path) else { return };
    let config = e.resolve().expect("Experiment::read accepted it, so it resolves");
    let _ = config.validate();
}

const CSV_DICT: &[&[u8]] = &[
    b"patientId",
    b"Target",
    b"width",
    b"height",
    b"x",
    b"y",
    b"ImageId",
    b"EncodedPixels",
    b" EncodedPixels",
    b"Path",
    b"Frontal/Lateral",
    b"Frontal",
    b"Lateral",
    b"No Finding",
    b"Atelectasis",
    b"Cardiomegaly",
    b"Consolidation",
    b"Edema",
    b"Pleural Effusion",
    b"image_name",
    b"annotation",
    b"dicom_id",
    b"study_id",
    b"subject_id",
    b"ViewPosition",
    b"PA",
    b"AP",
    b"split",
    b"train",
    b"validate",
    b"test",
    b"-1",
    b"-1.0",
    b"1.0",
    b"0.0",
    b"normal",
    b"pneumonia",
    b"COVID-19",
    MIMIC_SEPARATOR.as_bytes(),
];

const REPORT_DICT: &[&[u8]] = &[
    b"FINDINGS:",
    b"IMPRESSION:",
    b"COMPARISON:",
    b"INDICATION:",
    b"HISTORY:",
    b"TECHNIQUE:",
    b"FINAL REPORT",
    b"EXAMINATION:",
    b"WET READ:",
    b"PA AND LATERAL VIEWS OF THE CHEST:",
    b"\n \n",
    b"1. ",
    b"2. ",
    b"___",
    b". ",
];

const TOML_DICT: &[&[u8]] = &[
    b"name",
    b"reproduces",
    b"tier",
    b"preset",
    b"image_encoder",
    b"devices",
    b"[data]",
    b"[data.synthetic]",
    b"[weights]",
    b"[config]",
    b"[config.train]",
    b"[config.objective]",
    b"[config.vit]",
    b"[config.bert]",
    b"epochs",
    b"max_steps",
    b"shard_batch",
    b"shards",
    b"checkpoint_every",
    b"learning_rate",
    b"warmup_fraction",
    b"text_dropout",
    b"scale",
    b"seed",
    b"mimic_root",
    b"\"smoke\"",
    b"\"paper\"",
    b"\"reference\"",
    b"\"vit_base\"",
    b"\"resnet50\"",
    b"\"tiny\"",
    b"\"small\"",
    b"= 0",
    b"= -1",
    b"= nan",
    b"= inf",
    b"= 1e300",
    b"= []",
    b"= {}",
    b"= \"\"",
    b"\"\"\"",
];

const CKPT_DICT: &[&[u8]] = &[
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"PK\x06\x06",
    b"PK\x06\x07",
    b"data.pkl",
    b"archive/data/",
    b"little",
    b"storage",
];

const PICKLE_DICT: &[&[u8]] = &[
    b"\x80\x02",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch\nFloatStorage\n",
    b"ccollections\nOrderedDict\n",
    b"X\x07\x00\x00\x00storage",
    b"K\x00",
    b"J\xff\xff\xff\xff",
    b"(",
    b"t",
    b")",
    b"}",
    b"]",
    b"R",
    b"Q",
    b"b",
    b"u",
    b"h\x00",
    b"q\x00",
    b".",
];

const IMAGE_DICT: &[&[u8]] = &[b"\xff\xd8", b"IHDR", b"IDAT", b"IEND", b"DICM", b"1.2.840.10008.1.2.1", b"MONOCHROME1"];

/// Every target, in the order `all` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "pickle",
        about: "weights::pickle::read (a checkpoint's data.pkl)",
        text: false,
        dictionary: PICKLE_DICT,
        max_len: 1 << 20,
        run: pickle_target,
    },
    Target {
        name: "torch_zip",
        about: "weights::torch::Checkpoint::open + tensors (torch.save zip)",
        text: false,
        dictionary: CKPT_DICT,
        max_len: 1 << 20,
        run: checkpoint_target,
    },
    Target {
        name: "torch_legacy",
        about: "weights::torch::Checkpoint::open + tensors (legacy torch.save stream)",
        text: false,
        dictionary: PICKLE_DICT,
        max_len: 1 << 20,
        run: checkpoint_target,
    },
    Target {
        name: "rsna_csv",
        about: "data::rsna::read_labels + boxes, masks, split",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: rsna_target,
    },
    Target {
        name: "siim_csv",
        about: "data::siim::read_rle + masks, split",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: siim_target,
    },
    Target {
        name: "chexpert_csv",
        about: "data::chexpert::read_labels + targets, split",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: chexpert_target,
    },
    Target {
        name: "covidx_list",
        about: "data::covidx::read_list + split",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: covidx_target,
    },
    Target {
        name: "objectcxr_csv",
        about: "data::objectcxr::read_polygon_boxes + read_list + detection targets",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: objectcxr_target,
    },
    Target {
        name: "mimic_csv",
        about: "data::mimic::read_images (metadata and split CSVs)",
        text: true,
        dictionary: CSV_DICT,
        max_len: 1 << 16,
        run: mimic_csv_target,
    },
    Target {
        name: "mimic_report",
        about: "data::mimic::sections, sectioned_row, caption",
        text: true,
        dictionary: REPORT_DICT,
        max_len: 1 << 16,
        run: mimic_report_target,
    },
    Target {
        name: "rle",
        about: "data::rle::decode + targets::siim_mask",
        text: true,
        dictionary: &[b"-1", b" -1", b"1024 1024\n", b"0 0\n"],
        max_len: 1 << 16,
        run: rle_target,
    },
    Target {
        name: "dicom",
        about: "data::image::read_dicom + resize_and_pad (data::cache::load_resized)",
        text: false,
        dictionary: IMAGE_DICT,
        max_len: 1 << 20,
        run: dicom_target,
    },
    Target {
        name: "jpeg",
        about: "data::image::read_gray (JPEG, PNG) + resize_and_pad",
        text: false,
        dictionary: IMAGE_DICT,
        max_len: 1 << 20,
        run: jpeg_target,
    },
    Target {
        name: "experiment",
        about: "experiment::Experiment::read + resolve + MgcaConfig::validate",
        text: true,
        dictionary: TOML_DICT,
        max_len: 1 << 16,
        run: experiment_target,
    },
];

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
