//! Synthetic datasets in the published on-disk layouts, with a learnable signal.
//!
//! Each image is a chest-like radiograph — a bright body, two darker lung fields, a spine,
//! smooth noise — and each synthetic finding draws a visible pattern at its place and sets the
//! matching labels, boxes or masks: pneumonia an opaque blob inside its box (RSNA), a
//! pneumothorax a dark, edge-free band at a lung apex (SIIM, run-length encoded as the real
//! file is), the five CheXpert findings each their own pattern (a collapsed-lobe line, an
//! enlarged heart, a consolidated patch, hazy edema streaks, an effusion meniscus). Everything is
//! deterministic in the seed.
//!
//! Written so far: RSNA (`stage_2_train_labels.csv`, `stage_2_train_images/*.dcm`), SIIM
//! (`train-rle.csv`, `dicom-images-train/<study>/<series>/<uid>.dcm`), CheXpert (`train.csv`,
//! `valid.csv`, `train/…/view1_frontal.jpg`), COVIDx (`train_COVIDx9A.txt`,
//! `test_COVIDx9A.txt`, `train/`, `test/`), MIMIC-CXR-JPG (`files/` tree with reports,
//! metadata, split and label CSVs), Object-CXR (`train.csv`, `dev.csv`, `train/`, `dev/`).
//!
//! Book: "Data: splits, images and masks" (the datasets' real layouts, which these files copy, and
//! the RLE convention of SIIM's `train-rle.csv`).
//!
//! **Deviation:** not a reference component; the images are smaller than the real ones
//! (320 px for `tiny`, 512 px for `small`), which the pipeline resizes to 256 anyway.

use std::fmt::Write as _;
use std::path::Path;

use super::DataError;
use super::image::write_dicom;
use super::resize::Gray;
use super::sampling::LegacyRng;

/// How much data to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    /// A few dozen images per dataset, 320 px: seconds.
    Tiny,
    /// A few hundred images per dataset, 512 px.
    Small,
}

impl Scale {
    fn count(self, tiny: usize) -> usize {
        match self {
            Self::Tiny => tiny,
            Self::Small => tiny * 5,
        }
    }

    fn side(self) -> usize {
        match self {
            Self::Tiny => 320,
            Self::Small => 512,
        }
    }
}

/// A seeded source of uniform numbers (NumPy's legacy generator, so no extra dependency).
struct Rng(LegacyRng);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0.next_u32() as f64 / 4_294_967_296.0
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.interval(n as u64 - 1) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// A canvas of floats in [0, 255].
struct Canvas {
    h: usize,
    w: usize,
    v: Vec<f32>,
}

impl Canvas {
    fn chest(h: usize, w: usize, rng: &mut Rng) -> Self {
        let mut c = Canvas { h, w, v: vec![0.0; h * w] };
        let (body, lung) = (rng.range(150.0, 190.0) as f32, rng.range(50.0, 80.0) as f32);
        let phase = rng.range(0.0, std::f64::consts::TAU) as f32;
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f32 / h as f32, x as f32 / w as f32);
                let torso = ((fx - 0.5) / 0.46).powi(2) + ((fy - 0.55) / 0.55).powi(2) < 1.0;
                let lung_l = ((fx - 0.32) / 0.15).powi(2) + ((fy - 0.45) / 0.3).powi(2) < 1.0;
                let lung_r = ((fx - 0.68) / 0.15).powi(2) + ((fy - 0.45) / 0.3).powi(2) < 1.0;
                let spine = (fx - 0.5).abs() < 0.035;
                let mut v = if torso { body } else { 15.0 };
                if lung_l || lung_r {
                    v = lung;
                }
                if spine && torso {
                    v = body + 40.0;
                }
                // Smooth texture (ribs-like stripes) and fine noise.
                v += 8.0 * (fy * 40.0 + phase).sin() * if lung_l || lung_r { 1.0 } else { 0.3 };
                c.v[y * w + x] = v;
            }
        }
        for v in c.v.iter_mut() {
            *v += rng.range(-6.0, 6.0) as f32;
        }
        c
    }

    /// Add `amount` inside an ellipse (soft edge).
    fn blob(&mut self, cy: f64, cx: f64, ry: f64, rx: f64, amount: f32) {
        for y in 0..self.h {
            for x in 0..self.w {
                let d = ((y as f64 - cy) / ry).powi(2) + ((x as f64 - cx) / rx).powi(2);
                if d < 1.0 {
                    self.v[y * self.w + x] += amount * (1.0 - d as f32).sqrt();
                }
            }
        }
    }

    /// Add `amount` in the rectangle `[y0, y1) × [x0, x1)`.
    fn rect(&mut self, y0: usize, y1: usize, x0: usize, x1: usize, amount: f32) {
        for y in y0..y1.min(self.h) {
            for x in x0..x1.min(self.w) {
                self.v[y * self.w + x] += amount;
            }
        }
    }

    fn gray(&self) -> Gray {
        Gray::new(self.h, self.w, self.v.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect())
    }
}

fn io(path: &Path, e: impl ToString) -> DataError {
    DataError::file(path, e.to_string())
}

fn write(path: &Path, text: &str) -> Result<(), DataError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| io(path, e))
}

fn write_jpeg(path: &Path, img: &Gray) -> Result<(), DataError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    image::GrayImage::from_raw(img.width as u32, img.height as u32, img.pixels.clone())
        .expect("size matches")
        .save_with_format(path, image::ImageFormat::Jpeg)
        .map_err(|e| io(path, e))
}

/// A DICOM-style UID unique within the synthetic data.
fn uid(kind: u32, i: usize) -> String {
    format!("1.2.826.0.1.3680043.8.498.{kind}.{i}")
}

/// Write every synthetic dataset under `out` (`out/rsna`, `out/siim`, `out/chexpert`).
pub fn write_all(out: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    rsna(&out.join("rsna"), scale, seed)?;
    siim(&out.join("siim"), scale, seed.wrapping_add(1))?;
    chexpert(&out.join("chexpert"), scale, seed.wrapping_add(2))?;
    covidx(&out.join("covidx"), scale, seed.wrapping_add(3))?;
    mimic(&out.join("mimic"), scale, seed.wrapping_add(4))?;
    objectcxr(&out.join("object-CXR"), scale, seed.wrapping_add(5))?;
    Ok(())
}

/// RSNA: one row per box, one empty row per negative; 8-bit DICOMs, every tenth MONOCHROME1.
pub fn rsna(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    let side = scale.side();
    let mut csv = String::from("patientId,x,y,width,height,Target\n");
    for i in 0..scale.count(60) {
        let id =
            format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", rng.0.next_u32(), i, i % 4096, (i * 7) % 4096, i * 7919);
        let mut c = Canvas::chest(side, side, &mut rng);
        if rng.chance(0.4) {
            for _ in 0..1 + rng.below(2) {
                let (w, h) = (rng.range(0.12, 0.2) * side as f64, rng.range(0.15, 0.3) * side as f64);
                let lung_x = if rng.chance(0.5) { 0.32 } else { 0.68 };
                let (x, y) = (lung_x * side as f64 - w / 2.0, rng.range(0.25, 0.55) * side as f64);
                c.blob(y + h / 2.0, x + w / 2.0, h / 2.0, w / 2.0, 110.0);
                // The real file's boxes are whole pixels written as floats.
                writeln!(csv, "{id},{:.1},{:.1},{:.1},{:.1},1", x.round(), y.round(), w.round(), h.round()).unwrap();
            }
        } else {
            writeln!(csv, "{id},,,,,0").unwrap();
        }
        let path = root.join(format!("stage_2_train_images/{id}.dcm"));
        std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| io(&path, e))?;
        write_dicom(&path, &c.gray(), &uid(1, i), false, i % 10 == 9)?;
    }
    write(&root.join("stage_2_train_labels.csv"), &csv)
}

/// SIIM: `ImageId, EncodedPixels` with the real file's leading spaces; a pneumothorax is a dark
/// band at a lung apex, its mask run-length encoded column-major with relative starts; some
/// images have two regions (two rows).
pub fn siim(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    let side = scale.side();
    let mut csv = String::from("ImageId, EncodedPixels\n");
    for i in 0..scale.count(50) {
        let id = uid(2, i);
        let mut c = Canvas::chest(side, side, &mut rng);
        let regions = if rng.chance(0.35) { 1 + usize::from(rng.chance(0.3)) } else { 0 };
        if regions == 0 {
            writeln!(csv, "{id}, -1").unwrap();
        }
        for r in 0..regions {
            let lung_x = if r == 0 { 0.32 } else { 0.68 };
            let (y0, y1) = ((0.25 * side as f64) as usize, (rng.range(0.31, 0.37) * side as f64) as usize);
            let (x0, x1) = (((lung_x - 0.1) * side as f64) as usize, ((lung_x + 0.1) * side as f64) as usize);
            c.rect(y0, y1, x0, x1, -45.0);
            let mut mask = vec![0u8; side * side];
            for y in y0..y1 {
                for x in x0..x1 {
                    mask[y * side + x] = 1;
                }
            }
            writeln!(csv, "{id}, {}", encode_rle(&mask, side, side)).unwrap();
        }
        let path = root.join(format!("dicom-images-train/{}/{}/{id}.dcm", uid(3, i), uid(4, i)));
        std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| io(&path, e))?;
        write_dicom(&path, &c.gray(), &id, false, false)?;
    }
    write(&root.join("train-rle.csv"), &csv)
}

/// Run-length encode a row-major `[height, width]` 0/1 mask the SIIM way.
pub fn encode_rle(mask: &[u8], width: usize, height: usize) -> String {
    let mut out = Vec::new();
    let (mut last_end, mut f) = (0usize, 0usize);
    let at = |f: usize| mask[(f % height) * width + f / height];
    while f < width * height {
        if at(f) == 1 {
            let start = f;
            while f < width * height && at(f) == 1 {
                f += 1;
            }
            out.push(format!("{} {}", start - last_end, f - start));
            last_end = f;
        } else {
            f += 1;
        }
    }
    out.join(" ")
}

/// CheXpert: `train.csv` and `valid.csv` with the real columns (`Path` under
/// `CheXpert-v1.0-small/`), frontal and lateral views, labels 1 / 0 / −1 / empty, and greyscale
/// JPEGs of varying aspect.
pub fn chexpert(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    let header = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
    for (split, count) in [("train", scale.count(150)), ("valid", scale.count(20))] {
        let mut csv = format!("{header}\n");
        for i in 0..count {
            let frontal = !rng.chance(0.15);
            let (h, w) = (scale.side(), (scale.side() as f64 * rng.range(0.8, 1.0)) as usize);
            let mut c = Canvas::chest(h, w, &mut rng);
            // Findings in CheXpert's column order; each visible where it belongs.
            let value = |c: &mut Canvas, rng: &mut Rng, draw: &dyn Fn(&mut Canvas)| -> String {
                let u = rng.uniform();
                if u < 0.25 {
                    draw(c);
                    "1.0".into()
                } else if u < 0.33 {
                    draw(c);
                    "-1.0".into()
                } else if u < 0.6 {
                    "0.0".into()
                } else {
                    String::new()
                }
            };
            let (hf, wf) = (h as f64, w as f64);
            let cardiomegaly = value(&mut c, &mut rng, &|c| c.blob(0.62 * hf, 0.52 * wf, 0.16 * hf, 0.2 * wf, 60.0));
            let edema = value(&mut c, &mut rng, &|c| {
                for k in 0..6 {
                    let y = (0.3 + 0.05 * k as f64) * hf;
                    c.rect(y as usize, y as usize + 3, (0.2 * wf) as usize, (0.8 * wf) as usize, 35.0);
                }
            });
            let consolidation = value(&mut c, &mut rng, &|c| c.blob(0.5 * hf, 0.68 * wf, 0.08 * hf, 0.07 * wf, 120.0));
            let atelectasis = value(&mut c, &mut rng, &|c| {
                c.rect((0.55 * hf) as usize, (0.57 * hf) as usize, (0.2 * wf) as usize, (0.42 * wf) as usize, 110.0)
            });
            let effusion = value(&mut c, &mut rng, &|c| {
                c.rect((0.68 * hf) as usize, (0.78 * hf) as usize, (0.18 * wf) as usize, (0.82 * wf) as usize, 90.0)
            });
            let others: Vec<String> =
                (0..8).map(|_| if rng.chance(0.7) { "0.0".into() } else { String::new() }).collect();
            let view = if frontal { "frontal" } else { "lateral" };
            let rel =
                format!("{split}/patient{:05}/study1/view1_{view}.jpg", i + if split == "valid" { 64_541 } else { 1 });
            write_jpeg(&root.join(&rel), &c.gray())?;
            // Columns: No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung
            // Lesion, Edema, Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural
            // Effusion, Pleural Other, Fracture, Support Devices.
            let fields = [
                String::new(),
                others[0].clone(),
                cardiomegaly,
                others[1].clone(),
                others[2].clone(),
                edema,
                consolidation,
                others[3].clone(),
                atelectasis,
                others[4].clone(),
                effusion,
                others[5].clone(),
                others[6].clone(),
                others[7].clone(),
            ];
            let sex = if rng.chance(0.5) { "Female" } else { "Male" };
            let age = 20 + rng.below(70);
            let (fl, appa) =
                if frontal { ("Frontal", if rng.chance(0.5) { "AP" } else { "PA" }) } else { ("Lateral", "") };
            writeln!(csv, "CheXpert-v1.0-small/{rel},{sex},{age},{fl},{appa},{}", fields.join(",")).unwrap();
        }
        write(&root.join(format!("{split}.csv")), &csv)?;
    }
    Ok(())
}

/// MIMIC-CXR-JPG 2.0.0 (the `2.0.0` folder): `files/pXX/p<subject>/s<study>/<dicom>.jpg`, the
/// free-text reports `files/pXX/p<subject>/s<study>.txt` with their section headers, and the
/// metadata, split and CheXpert-label CSVs. Each finding is drawn on the frontal images and
/// named in the report's findings and impression; some studies also have a lateral image, some
/// reports lack both main sections (the reference drops them).
pub fn mimic(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    let mut meta =
        String::from("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n");
    let mut split = String::from("dicom_id,study_id,subject_id,split\n");
    let mut labels = String::from(
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices\n",
    );
    let findings: [(&str, &str, &str); 4] = [
        (
            "consolidation",
            "There is a focal consolidation in the right lower lobe.",
            "Right lower lobe consolidation concerning for pneumonia.",
        ),
        ("effusion", "A small left pleural effusion is seen at the base.", "Small left pleural effusion."),
        ("cardiomegaly", "The heart is enlarged.", "Cardiomegaly."),
        ("pneumothorax", "There is a small left apical pneumothorax.", "Small left apical pneumothorax."),
    ];
    for k in 0..scale.count(40) {
        let subject = 10_000_000 + k / 2;
        let study = 50_000_000 + k * 13;
        let present: Vec<bool> = (0..4).map(|_| rng.chance(0.3)).collect();
        let which = match rng.below(20) {
            0 => "test",
            1 | 2 => "validate",
            _ => "train",
        };
        let mut body = String::new();
        let mut impression = String::new();
        for (f, on) in findings.iter().zip(&present) {
            if *on {
                body.push_str(f.1);
                body.push_str("  ");
                impression.push_str(f.2);
                impression.push(' ');
            }
        }
        if body.is_empty() {
            body =
                "The lungs are clear.  There is no pleural effusion or pneumothorax.  The heart size is normal.".into();
            impression = "No acute cardiopulmonary process.".into();
        }
        let report = if k % 17 == 16 {
            // A report without findings or impression: dropped by the reference.
            "                                 FINAL REPORT\n EXAMINATION:  CHEST (PORTABLE AP)\n \n INDICATION:  ___ with fever.\n".to_string()
        } else {
            format!(
                "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with cough.\n \n COMPARISON:  None.\n \n FINDINGS: \n \n {body}\n \n IMPRESSION: \n \n {impression}\n"
            )
        };
        let dir = root.join(format!("files/p{}/p{subject}", subject / 1_000_000));
        write(&dir.join(format!("s{study}.txt")), &report)?;
        let views: &[&str] = if k % 3 == 0 {
            &["PA", "LATERAL"]
        } else if k % 2 == 0 {
            &["AP"]
        } else {
            &["PA"]
        };
        for (v, view) in views.iter().enumerate() {
            let dicom = format!("{:08x}-{:08x}-{:08x}-{:08x}-{:08x}", rng.0.next_u32(), study, subject, k, v);
            let (h, w) = ((scale.side() as f64 * rng.range(1.0, 1.2)) as usize, scale.side());
            let mut c = Canvas::chest(h, w, &mut rng);
            let (hf, wf) = (h as f64, w as f64);
            if *view != "LATERAL" {
                if present[0] {
                    c.blob(0.62 * hf, 0.3 * wf, 0.07 * hf, 0.08 * wf, 110.0);
                }
                if present[1] {
                    c.rect((0.7 * hf) as usize, (0.78 * hf) as usize, (0.55 * wf) as usize, (0.84 * wf) as usize, 95.0);
                }
                if present[2] {
                    c.blob(0.6 * hf, 0.52 * wf, 0.16 * hf, 0.21 * wf, 60.0);
                }
                if present[3] {
                    c.rect(
                        (0.25 * hf) as usize,
                        (0.33 * hf) as usize,
                        (0.6 * wf) as usize,
                        (0.76 * wf) as usize,
                        -45.0,
                    );
                }
            }
            write_jpeg(&dir.join(format!("s{study}/{dicom}.jpg")), &c.gray())?;
            writeln!(meta, "{dicom},{subject},{study},CHEST (PA AND LAT),{view},{h},{w}").unwrap();
            writeln!(split, "{dicom},{study},{subject},{which}").unwrap();
        }
        let flag = |on: bool| if on { "1.0" } else { "" };
        let none = !present.iter().any(|&p| p);
        writeln!(
            labels,
            "{subject},{study},,{},{},,,,,,{},{},,{},{},",
            flag(present[2]),
            flag(present[0]),
            if none { "1.0" } else { "" },
            flag(present[1]),
            flag(present[0]),
            flag(present[3])
        )
        .unwrap();
    }
    write(&root.join("mimic-cxr-2.0.0-metadata.csv"), &meta)?;
    write(&root.join("mimic-cxr-2.0.0-split.csv"), &split)?;
    write(&root.join("mimic-cxr-2.0.0-chexpert.csv"), &labels)
}

/// Object-CXR: `train.csv` and `dev.csv` (`image_name, annotation`), JPEGs of varying sizes in
/// `train/` and `dev/`; a foreign object is a very bright rectangle (type 0) or ellipse (type 1)
/// whose annotation gives its outline as the real files do.
pub fn objectcxr(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    for (split, count) in [("train", scale.count(60)), ("dev", scale.count(15))] {
        let mut csv = String::from("image_name,annotation\n");
        for i in 0..count {
            let (h, w) = (scale.side(), (scale.side() as f64 * rng.range(0.8, 1.1)) as usize);
            let mut c = Canvas::chest(h, w, &mut rng);
            let mut objects = Vec::new();
            for _ in 0..if rng.chance(0.5) { 1 + rng.below(2) } else { 0 } {
                let (bw, bh) = (rng.range(0.04, 0.12) * w as f64, rng.range(0.04, 0.12) * h as f64);
                let (x, y) = (rng.range(0.1, 0.8) * w as f64, rng.range(0.1, 0.8) * h as f64);
                let (x0, y0, x1, y1) = (x as usize, y as usize, (x + bw) as usize, (y + bh) as usize);
                if rng.chance(0.5) {
                    c.rect(y0, y1, x0, x1, 200.0);
                    objects.push(format!("0 {x0} {y0} {x1} {y1}"));
                } else {
                    let (cx, cy, rx, ry) = (
                        (x0 + x1) as f64 / 2.0,
                        (y0 + y1) as f64 / 2.0,
                        (x1 - x0) as f64 / 2.0,
                        (y1 - y0) as f64 / 2.0,
                    );
                    c.blob(cy, cx, ry, rx, 200.0);
                    // An ellipse is annotated by points on its outline.
                    let points: Vec<String> = (0..12)
                        .map(|k| {
                            let t = k as f64 * std::f64::consts::TAU / 12.0;
                            format!("{} {}", (cx + rx * t.cos()).round(), (cy + ry * t.sin()).round())
                        })
                        .collect();
                    objects.push(format!("1 {}", points.join(" ")));
                }
            }
            let name = format!("{:05}.jpg", i + if split == "dev" { 8001 } else { 1 });
            write_jpeg(&root.join(split).join(&name), &c.gray())?;
            writeln!(csv, "{name},{}", objects.join(";")).unwrap();
        }
        write(&root.join(format!("{split}.csv")), &csv)?;
    }
    Ok(())
}

/// COVIDx: `train_COVIDx9A.txt` and `test_COVIDx9A.txt` (`patient filename class source`),
/// PNG and JPEG images of varying sizes; pneumonia is patchy opacity in one lung, COVID-19
/// bilateral peripheral haze in the lower zones.
pub fn covidx(root: &Path, scale: Scale, seed: u32) -> Result<(), DataError> {
    let mut rng = Rng(LegacyRng::new(seed));
    for (split, count) in [("train", scale.count(90)), ("test", scale.count(30))] {
        let mut list = String::new();
        for i in 0..count {
            let (h, w) = (scale.side(), (scale.side() as f64 * rng.range(0.85, 1.15)) as usize);
            let mut c = Canvas::chest(h, w, &mut rng);
            let (hf, wf) = (h as f64, w as f64);
            let class = match rng.below(3) {
                0 => "normal",
                1 => {
                    let x = if rng.chance(0.5) { 0.32 } else { 0.68 };
                    for k in 0..3 {
                        c.blob((0.35 + 0.1 * k as f64) * hf, x * wf, 0.05 * hf, 0.05 * wf, 90.0);
                    }
                    "pneumonia"
                }
                _ => {
                    for x in [0.22, 0.78] {
                        c.blob(0.62 * hf, x * wf, 0.1 * hf, 0.05 * wf, 70.0);
                    }
                    "COVID-19"
                }
            };
            let ext = if i % 3 == 0 { "jpg" } else { "png" };
            let filename = format!("{split}-{i:04}.{ext}");
            let path = root.join(split).join(&filename);
            std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| io(&path, e))?;
            let img = c.gray();
            if ext == "jpg" {
                write_jpeg(&path, &img)?;
            } else {
                image::GrayImage::from_raw(img.width as u32, img.height as u32, img.pixels)
                    .expect("size matches")
                    .save_with_format(&path, image::ImageFormat::Png)
                    .map_err(|e| io(&path, e))?;
            }
            writeln!(list, "{} {filename} {class} synthetic", 1000 + i).unwrap();
        }
        write(&root.join(format!("{split}_COVIDx9A.txt")), &list)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::prepare::{Dataset, OnBad, PrepareOptions, Task, prepare};
    use crate::data::{image, rle, rsna, siim};

    #[test]
    fn rle_round_trips_through_the_siim_decoder() {
        let (w, h) = (7, 5);
        let mask: Vec<u8> = (0..w * h).map(|k| u8::from((k * 13 + k / 3) % 5 < 2)).collect();
        let text = encode_rle(&mask, w, h);
        assert_eq!(rle::decode(&text, w, h).unwrap(), mask);
    }

    /// The generator's output is read by the real readers and prepared unchanged, and the
    /// findings are where the labels say: pneumonia boxes are brighter than the lungs around
    /// them, pneumothorax masks darker.
    #[test]
    fn synthetic_data_prepares_and_carries_its_signal() {
        let dir = std::env::temp_dir().join(format!("mgca-synth-{}", std::process::id()));
        write_all(&dir, Scale::Tiny, 7).unwrap();
        for (dataset, task, sub) in [
            (Dataset::Rsna, Task::Classification, "rsna"),
            (Dataset::Rsna, Task::Detection, "rsna"),
            (Dataset::Siim, Task::Segmentation, "siim"),
            (Dataset::Chexpert, Task::Classification, "chexpert"),
            (Dataset::Covidx, Task::Classification, "covidx"),
            (Dataset::Mimic, Task::Pretraining, "mimic"),
            (Dataset::ObjectCxr, Task::Detection, "object-CXR"),
        ] {
            let options = PrepareOptions {
                dataset,
                task,
                root: dir.join(sub),
                fix_leaks: false,
                on_bad: OnBad::Fail,
                check_images: true,
                polygon_boxes: None,
            };
            let prepared = prepare(&options).unwrap_or_else(|e| panic!("{sub}: {e}"));
            let parts: &[&str] = if dataset == Dataset::Mimic {
                &["train.csv", "valid.csv"]
            } else {
                &["train.csv", "valid.csv", "test.csv"]
            };
            for name in parts {
                assert!(prepared.manifest.counts[*name]["rows"] > 0, "{sub} {task:?} {name} is empty");
            }
            if dataset == Dataset::Mimic {
                // Captions carry the findings; reports without findings/impression are dropped.
                let train = &prepared.tables[0].1;
                assert!(train.rows.iter().any(|r| r[5].contains("pleural effusion")), "{:?}", train.rows[0]);
                assert!(train.rows.iter().all(|r| r[4] == "PA" || r[4] == "AP"));
            }
        }
        // RSNA: the boxed region is brighter than the same region of negatives.
        let patients = rsna::read_labels(&dir.join("rsna/stage_2_train_labels.csv")).unwrap();
        let positive = patients.iter().find(|p| p.target() == 1).unwrap();
        let img = image::read_dicom(&dir.join("rsna").join(positive.path())).unwrap();
        let [x1, y1, x2, y2] = positive.boxes[0].map(|v| v as usize);
        let inside = mean(&img, y1, y2, x1, x2);
        let negative = patients.iter().find(|p| p.target() == 0).unwrap();
        let other = image::read_dicom(&dir.join("rsna").join(negative.path())).unwrap();
        assert!(inside > mean(&other, y1, y2, x1, x2) + 30.0, "box {inside}");
        // SIIM: the masked region is darker than the rest of that lung field's image.
        let rows = siim::read_rle(&dir.join("siim/train-rle.csv")).unwrap();
        let row = rows.iter().find(|r| r.label() == 1).unwrap();
        let paths = siim::image_paths(&dir.join("siim")).unwrap();
        let img = image::read_dicom(&dir.join("siim").join(&paths[&row.image_id])).unwrap();
        let mask = rle::decode(&row.encoded, img.width, img.height).unwrap();
        let (mut dark, mut n) = (0.0, 0.0);
        for (p, m) in img.pixels.iter().zip(&mask) {
            if *m == 1 {
                dark += *p as f64;
                n += 1.0;
            }
        }
        assert!(n > 100.0 && dark / n < 60.0, "pneumothorax mean {}", dark / n);
        std::fs::remove_dir_all(dir).ok();
    }

    fn mean(img: &Gray, y0: usize, y1: usize, x0: usize, x1: usize) -> f64 {
        let mut s = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                s += img.pixels[y * img.width + x] as f64;
            }
        }
        s / ((y1 - y0) * (x1 - x0)) as f64
    }
}
