//! The image pipeline per core: decode a JPEG, `resize_img(256)`, crop 224, normalise — for a
//! CheXpert-small-sized image (390 × 320) and a MIMIC-CXR-JPG-sized one (3056 × 2544) — and
//! the same crop + normalise from the packed cache. Single-threaded, so 1 / time is images per
//! second per core.
//!
//! `cargo bench --bench data` (or `cargo xtask bench data`, which also times
//! `benches/data_python.py`, OpenCV + NumPy on the same files, and prints the ratio). The
//! files are written to `$TMPDIR/mgca-bench-data/`.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mgca::data::cache::{self, ImageCache};
use mgca::data::image::{crop, normalise};
use mgca::data::prepare::OnBad;
use mgca::data::resize::resize_and_pad;

/// A chest-like greyscale JPEG of `h × w` (smooth structure plus fine texture).
fn write_jpeg(path: &PathBuf, h: u32, w: u32) {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let lung = ((fx - 0.3) / 0.15).powi(2) + ((fy - 0.45) / 0.3).powi(2) < 1.0
            || ((fx - 0.7) / 0.15).powi(2) + ((fy - 0.45) / 0.3).powi(2) < 1.0;
        let base = if lung { 70.0 } else { 170.0 };
        let v = base + 12.0 * (fy * 60.0).sin() + ((x * 7 + y * 13) % 11) as f32;
        image::Luma([v.clamp(0.0, 255.0) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Jpeg).unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join("mgca-bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [("chexpert_390x320", 390, 320), ("mimic_3056x2544", 3056, 2544)];
    let mut split = String::from("path\n");
    for (name, h, w) in cases {
        write_jpeg(&dir.join(format!("{name}.jpg")), h, w);
        for _ in 0..32 {
            split.push_str(&format!("{name}.jpg\n"));
        }
    }
    std::fs::write(dir.join("split.csv"), split).unwrap();

    let mut group = c.benchmark_group("data");
    group.sample_size(20);
    for (name, _, _) in cases {
        let path = dir.join(format!("{name}.jpg"));
        group.bench_function(BenchmarkId::new("jpeg_pipeline", name), |b| {
            b.iter(|| {
                let img = mgca::data::image::read_gray(&path).unwrap();
                normalise(&crop(&resize_and_pad(&img, 256).unwrap(), 16, 16, 224))
            })
        });
    }
    let out = dir.join("bench.cache");
    cache::build(&dir.join("split.csv"), &dir, &out, 256, OnBad::Fail).unwrap();
    let cache = Arc::new(ImageCache::open(&out).unwrap());
    let mut row = 0;
    group.bench_function(BenchmarkId::new("cache_read", "crop_normalise"), |b| {
        b.iter(|| {
            row = (row + 17) % cache.len;
            normalise(&crop(&cache.get(row).unwrap(), 16, 16, 224))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
