//! Reading images as the reference does: JPEG/PNG as 8-bit grey (OpenCV `imread(path, 0)`),
//! DICOM pixel data rescaled to 8 bit (`convertScaleAbs` with `α = 255 / max`) and inverted
//! for MONOCHROME1; then the 224 crops and the mean = std = 0.5 normalisation.
//!
//! `x₈ = saturate(round(|x · 255 / max x|))`, `x₈ ← 255 − x₈` if MONOCHROME1;
//! `t = (x₈ / 255 − 0.5) / 0.5` on each of 3 identical channels.
//!
//! Book: "Data: splits, images and masks". Reference: `mgca/datasets/utils.py`, `get_imgs` (JPEG
//! path) and `read_from_dicom` (DICOM path), and `transforms.py` (crops, normalisation), at HKU-MedAI/MGCA `680fe4a6ee0c`.
//!
//! Every reader refuses what would otherwise decode to a silently wrong image: a JPEG that
//! ends before its end-of-image marker (the decoder would pad its lower part with grey, as
//! OpenCV does with a warning), an empty image, a DICOM whose pixel data does not hold
//! rows × columns × frames samples, or one larger than [`MAX_PIXELS`].
//!
//! **Deviation:** a truncated JPEG is an error here, where the reference's OpenCV warns and
//! loads it grey-padded. JPEG decoding is the `image` crate's, not libjpeg's; decoders may differ by a
//! grey level where their IDCTs round differently (the DICOM JPEG test bounds it). Colour
//! images become grey with OpenCV's fixed-point `0.299 R + 0.587 G + 0.114 B`.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;

use super::DataError;
use super::resize::Gray;

/// The most pixels an image (a DICOM frame) may have: 16384 × 16384, four times the largest
/// radiographs (about 4,300 × 3,500).
pub const MAX_PIXELS: u64 = 1 << 28;

/// A JPEG or PNG file as 8-bit grey.
pub fn read_gray(path: &Path) -> Result<Gray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::file(path, e.to_string()))?;
    decode_bytes(&bytes, path)
}

/// Check a JPEG's marker structure up to its end-of-image marker: an error when the data
/// ends first (a truncated file), which the decoder would only warn about.
pub fn check_jpeg_complete(bytes: &[u8]) -> Result<(), String> {
    let n = bytes.len();
    let truncated = |what: &str| format!("truncated JPEG: the file ends {what}, before the end-of-image marker");
    let mut i = 2; // after SOI
    loop {
        // The next marker (fill bytes and stray bytes between segments are skipped).
        while i < n && bytes[i] != 0xff {
            i += 1;
        }
        while i < n && bytes[i] == 0xff {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else { return Err(truncated("between segments")) };
        i += 1;
        match marker {
            0xd9 => return Ok(()),
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let len = match bytes.get(i..i + 2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]) as usize,
            _ => return Err(truncated(&format!("inside the header of segment 0xff{marker:02x}"))),
        };
        if len < 2 || i + len > n {
            return Err(truncated(&format!("inside segment 0xff{marker:02x} at byte {}", i - 2)));
        }
        i += len;
        if marker == 0xda {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xff00 or a
            // restart marker.
            loop {
                match bytes.get(i..i + 2) {
                    Some(&[0xff, m]) if m != 0 && m != 0xff && !(0xd0..=0xd7).contains(&m) => break,
                    Some(_) => i += 1,
                    None => return Err(truncated(&format!("inside the image data ({n} bytes)"))),
                }
            }
        }
    }
}

/// Decode a JPEG or PNG held in memory as 8-bit grey; `name` is the file errors name. The
/// fuzz harness's entry point: never panics.
pub fn decode_bytes(bytes: &[u8], name: &Path) -> Result<Gray, DataError> {
    let bad = |m: String| DataError::file(name, m);
    let reader =
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| bad(e.to_string()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_complete(bytes).map_err(bad)?;
    }
    // The decoder's default limits refuse allocations over 512 MiB.
    let img = reader.decode().map_err(|e| bad(format!("cannot decode image: {e}")))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(bad(format!("an empty image ({width} x {height} pixels)")));
    }
    let pixels = match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => {
            let rgb = other.to_rgb8();
            rgb.pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u32::from);
                    ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14) as u8
                })
                .collect()
        }
    };
    Ok(Gray::new(height, width, pixels))
}

/// A DICOM file's first frame as 8-bit grey, as the reference rescales it.
pub fn read_dicom(path: &Path) -> Result<Gray, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::file(path, e.to_string()))?;
    decode_dicom_bytes(&bytes, path)
}

/// Rows, columns, frames and the sizes of native pixel data must agree, and stay within
/// [`MAX_PIXELS`], before anything is decoded.
fn check_dicom_sizes(obj: &dicom_object::DefaultDicomObject) -> Result<(), String> {
    use dicom_core::value::Value as DicomValue;
    let int = |tag, default: Option<u64>| -> Result<u64, String> {
        match obj.element(tag) {
            Ok(e) => {
                e.to_int::<u64>().map_err(|_| format!("{tag} is not a number: {:?}", e.to_str().unwrap_or_default()))
            }
            Err(_) => default.ok_or_else(|| format!("no {tag} element")),
        }
    };
    let (rows, columns) = (int(tags::ROWS, None)?, int(tags::COLUMNS, None)?);
    let frames = int(tags::NUMBER_OF_FRAMES, Some(1))?;
    let samples = int(tags::SAMPLES_PER_PIXEL, Some(1))?;
    let bits = int(tags::BITS_ALLOCATED, None)?;
    if rows == 0 || columns == 0 || frames == 0 {
        return Err(format!("an empty image: {rows} rows, {columns} columns, {frames} frame(s)"));
    }
    let pixels = rows.saturating_mul(columns).saturating_mul(frames).saturating_mul(samples);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "{rows} rows x {columns} columns x {frames} frame(s) x {samples} sample(s): more than the {MAX_PIXELS} pixels allowed"
        ));
    }
    if let Ok(e) = obj.element(tags::PIXEL_DATA)
        && let DicomValue::Primitive(p) = e.value()
    {
        // Native (uncompressed) pixel data: exactly the samples, plus at most a padding byte.
        let expected = pixels.saturating_mul(bits.div_ceil(8));
        let len = p.calculate_byte_len() as u64;
        if len < expected || len > expected + 1 {
            return Err(format!(
                "pixel data holds {len} bytes; {rows} rows x {columns} columns x {frames} frame(s) x {samples} sample(s) of {bits} bits need {expected}"
            ));
        }
    }
    Ok(())
}

/// A DICOM file held in memory (with or without its 128-byte preamble), first frame as 8-bit
/// grey; `name` is the file errors name. The fuzz harness's entry point: never panics.
pub fn decode_dicom_bytes(bytes: &[u8], name: &Path) -> Result<Gray, DataError> {
    let path = name;
    let bad = |m: String| DataError::file(path, m);
    let obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Auto)
        .from_reader(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("cannot read DICOM: {e}")))?;
    check_dicom_sizes(&obj).map_err(bad)?;
    let photometric = obj
        .element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let decoded = obj.decode_pixel_data().map_err(|e| {
        let syntax = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
        bad(format!("cannot decode pixel data (transfer syntax {syntax}): {e}"))
    })?;
    if decoded.samples_per_pixel() != 1 {
        return Err(bad(format!("{} samples per pixel; a radiograph has 1", decoded.samples_per_pixel())));
    }
    let (height, width) = (decoded.rows() as usize, decoded.columns() as usize);
    if height == 0 || width == 0 {
        return Err(bad(format!("an empty image ({width} x {height} pixels)")));
    }
    let data = decoded.frame_data(0).map_err(|e| bad(e.to_string()))?;
    let signed = decoded.pixel_representation() == dicom_pixeldata::PixelRepresentation::Signed;
    let raw: Vec<f32> = match decoded.bits_allocated() {
        8 => data.iter().map(|&v| if signed { v as i8 as f32 } else { v as f32 }).collect(),
        16 => data
            .chunks_exact(2)
            .map(|b| {
                let v = u16::from_le_bytes([b[0], b[1]]);
                if signed { v as i16 as f32 } else { v as f32 }
            })
            .collect(),
        bits => return Err(bad(format!("{bits} bits allocated; 8 or 16 are supported"))),
    };
    if raw.len() < height * width {
        return Err(bad(format!("{} pixel values for {height} x {width}", raw.len())));
    }
    let max = raw.iter().take(height * width).copied().fold(f32::NEG_INFINITY, f32::max);
    if max <= 0.0 {
        return Err(bad("no positive pixel value: the reference's 255 / max rescaling is undefined".into()));
    }
    // OpenCV convertScaleAbs: float arithmetic, round half to even, saturate.
    let alpha = (255.0f64 / max as f64) as f32;
    let mut pixels: Vec<u8> =
        raw.iter().take(height * width).map(|&x| (x * alpha).abs().round_ties_even().min(255.0) as u8).collect();
    if photometric == "MONOCHROME1" {
        pixels.iter_mut().for_each(|v| *v = 255 - *v);
    }
    Ok(Gray::new(height, width, pixels))
}

/// Write a grey image as an uncompressed (explicit VR little endian) secondary-capture DICOM:
/// 8 bit, or 16 bit with the values scaled by 257; MONOCHROME1 stores `255 − x` (so that
/// [`read_dicom`] gives `x` back). Used by the synthetic datasets and the tests.
pub fn write_dicom(path: &Path, img: &Gray, uid: &str, sixteen_bit: bool, monochrome1: bool) -> Result<(), DataError> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let bad = |m: String| DataError::file(path, m);
    let stored: Vec<u16> = img
        .pixels
        .iter()
        .map(|&v| if monochrome1 { 255 - v } else { v } as u16)
        .map(|v| if sixteen_bit { v * 257 } else { v })
        .collect();
    let bits = if sixteen_bit { 16u16 } else { 8 };
    let pixel_bytes: Vec<u8> = if sixteen_bit {
        stored.iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        stored.iter().map(|&v| v as u8).collect()
    };
    let mut obj = dicom_object::InMemDicomObject::new_empty();
    let sc = "1.2.840.10008.5.1.4.1.1.7"; // Secondary Capture Image Storage
    obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(sc)));
    obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(uid)));
    obj.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CR")));
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)));
    let photometric = if monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" };
    obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
    obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(img.height as u16)));
    obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(img.width as u16)));
    obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)));
    obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)));
    obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)));
    obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)));
    let vr = if sixteen_bit { VR::OW } else { VR::OB };
    obj.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixel_bytes)));
    let meta = dicom_object::FileMetaTableBuilder::new()
        .transfer_syntax("1.2.840.10008.1.2.1")
        .media_storage_sop_class_uid(sc)
        .media_storage_sop_instance_uid(uid);
    let file = obj.with_meta(meta).map_err(|e| bad(e.to_string()))?;
    file.write_to_file(path).map_err(|e| bad(e.to_string()))
}

/// The `size × size` crop at `(top, left)` of a square image.
pub fn crop(img: &Gray, top: usize, left: usize, size: usize) -> Gray {
    assert!(top + size <= img.height && left + size <= img.width, "crop inside the image");
    let pixels = (top..top + size)
        .flat_map(|y| img.pixels[y * img.width + left..y * img.width + left + size].to_vec())
        .collect();
    Gray::new(size, size, pixels)
}

/// The centre crop of the evaluation transform (offset 16 for 256 → 224).
pub fn centre_crop(img: &Gray, size: usize) -> Gray {
    crop(img, (img.height - size) / 2, (img.width - size) / 2, size)
}

/// To-tensor and normalise with mean = std = 0.5 on 3 identical channels: `[3, H, W]` values.
pub fn normalise(img: &Gray) -> Vec<f32> {
    // One lookup table for the 256 grey levels: the same float operations, done once.
    let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - 0.5) / 0.5);
    let n = img.pixels.len();
    let mut out = vec![0f32; 3 * n];
    for (o, &v) in out[..n].iter_mut().zip(&img.pixels) {
        *o = lut[v as usize];
    }
    let (first, rest) = out.split_at_mut(n);
    rest[..n].copy_from_slice(first);
    rest[n..].copy_from_slice(first);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/reference/data/dicom").join(name)
    }

    use crate::tensor_file::fnv1a64;

    /// A real chest radiograph (RG1, MONOCHROME2, 8 bit): uncompressed equals pydicom's
    /// pixel_array exactly (max 255, so the rescaling is the identity); JPEG Baseline stays
    /// within the fixture's decoder tolerance of the uncompressed pixels.
    #[test]
    fn real_chest_dicoms_decode_like_pydicom() {
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("dicom_reference.json")).unwrap()).unwrap();
        let plain = read_dicom(&fixture("cxr_rg1_512_mono2_u8_explicit_le.dcm")).unwrap();
        assert_eq!((plain.height, plain.width), (512, 512));
        assert_eq!(fnv1a64(&plain.pixels), reference["pixels"]["explicit_le_pixels"]["fnv1a64"].as_str().unwrap());
        let jpeg = read_dicom(&fixture("cxr_rg1_512_mono2_u8_jpeg_baseline.dcm")).unwrap();
        let diffs: Vec<i32> =
            jpeg.pixels.iter().zip(&plain.pixels).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
        // pydicom/libjpeg's own decode is within 7 (mean 0.73) of the original.
        assert!(max <= 8 && mean < 0.8, "max {max}, mean {mean}");
    }

    /// MONOCHROME1 is inverted and 16-bit data rescaled by 255 / max, as the reference does.
    #[test]
    fn monochrome1_and_16_bit() {
        let dir = std::env::temp_dir().join(format!("mgca-dicom16-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = Gray::new(4, 8, (0..32).map(|v| (v * 8) as u8).collect());
        for (sixteen, mono1) in [(false, false), (true, false), (false, true), (true, true)] {
            let path = dir.join(format!("x{sixteen}{mono1}.dcm"));
            write_dicom(&path, &img, "1.2.826.0.1.3680043.8.498.1", sixteen, mono1).unwrap();
            let back = read_dicom(&path).unwrap();
            // Stored values reach 248 (or 248·257): rescaled so that the maximum becomes 255.
            let max_stored = if mono1 { 255.0 } else { 248.0 };
            let want: Vec<u8> = img
                .pixels
                .iter()
                .map(|&v| {
                    let stored = if mono1 { 255 - v } else { v } as f32;
                    let x = (stored * (255.0f64 / max_stored) as f32).round_ties_even() as u8;
                    if mono1 { 255 - x } else { x }
                })
                .collect();
            assert_eq!(back.pixels, want, "16 bit {sixteen}, MONOCHROME1 {mono1}");
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn damaged_dicom_names_the_file() {
        let dir = std::env::temp_dir().join(format!("mgca-dicom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = std::fs::read(fixture("cxr_rg1_512_mono2_u8_explicit_le.dcm")).unwrap();
        let cut = dir.join("cut.dcm");
        std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
        let err = read_dicom(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.dcm"), "{err}");
        let garbage = dir.join("garbage.jpg");
        std::fs::write(&garbage, b"not a jpeg").unwrap();
        assert!(read_gray(&garbage).unwrap_err().to_string().contains("garbage.jpg"));
        std::fs::remove_dir_all(dir).ok();
    }

    /// The silent result: half a JPEG decoded with its lower half grey. Now every cut
    /// of a JPEG is an error naming the file (a cut inside the headers as well as in the data).
    #[test]
    fn truncated_jpegs_are_errors_naming_the_file() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/python/images");
        for name in ["gray.jpg", "color.jpg"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert!(check_jpeg_complete(&bytes).is_ok());
            assert!(decode_bytes(&bytes, Path::new(name)).is_ok());
            for cut in [bytes.len() / 2, bytes.len() - 2, bytes.len() - 1, 300, 20, 3] {
                let err = decode_bytes(&bytes[..cut], Path::new("cut.jpg")).unwrap_err().to_string();
                assert!(err.starts_with("cut.jpg: ") && err.contains("truncated"), "{name} cut at {cut}: {err}");
            }
        }
        // Bytes after the end-of-image marker are allowed (some writers append them).
        let mut tail = std::fs::read(dir.join("gray.jpg")).unwrap();
        tail.extend_from_slice(b"\0\0trailer");
        assert!(decode_bytes(&tail, Path::new("t.jpg")).is_ok());
    }

    /// Set the first `(0028,xxxx) US` element `element` of an explicit-VR file to `value`.
    fn patch_us(bytes: &mut [u8], element: u16, value: u16) {
        let tag = [0x28, 0x00, element as u8, (element >> 8) as u8, b'U', b'S', 2, 0];
        let at = bytes.windows(8).position(|w| w == tag).unwrap() + 8;
        bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// Rows × columns that disagree with the pixel data, zero sizes, and sizes beyond
    /// MAX_PIXELS are errors naming the file, before anything is decoded.
    #[test]
    fn dicom_sizes_must_agree_with_the_pixel_data() {
        let dir = std::env::temp_dir().join(format!("mgca-dicom-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.dcm");
        write_dicom(&path, &Gray::new(4, 8, (0..32).map(|v| v as u8 * 8).collect()), "1.2.3", false, false).unwrap();
        let good = std::fs::read(&path).unwrap();
        assert_eq!(decode_dicom_bytes(&good, Path::new("ok.dcm")).unwrap().width, 8);
        for (element, value, words) in [
            (0x0010, 8, "need 64"),     // rows 8: 64 samples expected, 32 present
            (0x0010, 2, "need 16"),     // rows 2: fewer than the data
            (0x0011, 0, "empty image"), // no columns
            (0x0010, 0, "empty image"), // no rows
            (0x0100, 16, "need 64"),    // 16 bits allocated over 8-bit data
        ] {
            let mut bytes = good.clone();
            patch_us(&mut bytes, element, value);
            let err = decode_dicom_bytes(&bytes, Path::new("bad.dcm")).unwrap_err().to_string();
            assert!(err.starts_with("bad.dcm: ") && err.contains(words), "({element:#06x} = {value}): {err}");
        }
        let mut bytes = good.clone();
        patch_us(&mut bytes, 0x0010, 65535);
        patch_us(&mut bytes, 0x0011, 65535);
        let err = decode_dicom_bytes(&bytes, Path::new("huge.dcm")).unwrap_err().to_string();
        assert!(err.contains("more than the"), "{err}");
        // Garbage and empty input are errors too.
        assert!(decode_dicom_bytes(b"", Path::new("e.dcm")).is_err());
        assert!(decode_bytes(b"", Path::new("e.png")).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A deterministic mutation loop over the committed JPEG, PNG and DICOM fixtures: every
    /// case decodes to `Ok` or `Err`, never panics.
    #[test]
    fn corrupted_images_never_panic() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let files = [
            root.join("golden/python/images/gray.jpg"),
            root.join("golden/python/images/color.jpg"),
            root.join("golden/python/images/gray_cv2.png"),
            fixture("cxr_rg1_512_mono2_u8_explicit_le.dcm"),
            fixture("cxr_rg1_512_mono2_u8_jpeg_baseline.dcm"),
        ];
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut panics = Vec::new();
        for file in &files {
            let original = std::fs::read(file).unwrap();
            let n = original.len();
            let dicom = file.extension().is_some_and(|e| e == "dcm");
            for case in 0..150 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let pos = if case % 2 == 0 { state as usize % n.min(2048) } else { state as usize % n };
                let mut bytes = original.clone();
                match (state >> 40) % 4 {
                    0 => bytes[pos] ^= 1 << ((state >> 32) % 8),
                    1 => bytes[pos] = (state >> 24) as u8,
                    2 => bytes[pos..(pos + 4).min(n)].fill(0xff),
                    _ => bytes.truncate(pos),
                }
                let result = std::panic::catch_unwind(|| {
                    if dicom {
                        decode_dicom_bytes(&bytes, Path::new("m.dcm")).map(|_| ())
                    } else {
                        decode_bytes(&bytes, Path::new("m.img")).map(|_| ())
                    }
                });
                if result.is_err() {
                    panics.push(format!("{} case {case} at {pos}", file.display()));
                }
            }
        }
        assert!(panics.is_empty(), "{panics:?}");
    }

    /// Our JPEG decode against OpenCV's `imread(path, 0)` (`golden/python/images/`): a greyscale
    /// JPEG as CheXpert and MIMIC ship them, and a colour one; every pixel within one grey
    /// level (IDCT and colour-conversion rounding), and nearly all equal.
    #[test]
    fn jpeg_decodes_like_opencv() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/python/images");
        for (name, max_allowed, equal_at_least) in [("gray", 1, 0.99), ("color", 1, 0.99)] {
            let ours = read_gray(&dir.join(format!("{name}.jpg"))).unwrap();
            let cv = read_gray(&dir.join(format!("{name}_cv2.png"))).unwrap();
            assert_eq!((ours.height, ours.width), (cv.height, cv.width));
            let diffs: Vec<i32> =
                ours.pixels.iter().zip(&cv.pixels).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
            let max = *diffs.iter().max().unwrap();
            let equal = diffs.iter().filter(|&&d| d == 0).count() as f64 / diffs.len() as f64;
            eprintln!("{name}: max |Δ| {max}, equal {:.4}", equal);
            assert!(max <= max_allowed && equal >= equal_at_least, "{name}: max {max}, equal fraction {equal}");
        }
    }

    #[test]
    fn crops_and_normalisation() {
        let img = Gray::new(256, 256, (0..256 * 256).map(|k| (k % 256) as u8).collect());
        let c = centre_crop(&img, 224);
        assert_eq!(c.pixels[0], 16); // column 16 of row 16
        let t = normalise(&c);
        assert_eq!(t.len(), 3 * 224 * 224);
        assert!((t[0] - (16.0 / 255.0 - 0.5) / 0.5).abs() < 1e-7 && t[224 * 224] == t[0]);
    }
}
