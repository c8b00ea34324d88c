#!/usr/bin/env python3
"""OpenCV + NumPy baseline for benches/data.rs, single-threaded, on the same files.

    python benches/data_python.py DIR [--min-seconds 5]

DIR is where benches/data.rs wrote its JPEGs (`$TMPDIR/mgca-bench-data`). For each JPEG:
cv2.imread(path, 0), the reference's resize_img(256) (INTER_AREA + zero padding), centre crop
224, to float, normalise with mean = std = 0.5 (what the reference's pipeline computes; its PIL
and torchvision steps in between only add cost). And from a NumPy memory-mapped array of
256 x 256 records: read one record, crop, normalise. Prints one JSON line per case: median
microseconds per image and images per second.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)


def resize_img(img, scale=256):
    h, w = img.shape
    if h >= w:
        size = (scale, int(float(w) * float(scale / float(h))))
    else:
        size = (int(float(h) * float(scale / float(w))), scale)
    resized = cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)
    ph, pw = scale - resized.shape[0], scale - resized.shape[1]
    return np.pad(resized, [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)], "constant", constant_values=0)


def pipeline(img):
    x = img[16:240, 16:240].astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return np.stack([x, x, x])


def timed(fn, min_seconds):
    for _ in range(3):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < 20 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    args = ap.parse_args()
    for name in ["chexpert_390x320", "mimic_3056x2544"]:
        path = str(args.dir / f"{name}.jpg")
        s = timed(lambda: pipeline(resize_img(cv2.imread(path, 0))), args.min_seconds)
        print(json.dumps({"case": f"jpeg_pipeline/{name}", "us": s * 1e6, "images_per_s": 1 / s, "opencv": cv2.__version__}))
    records = np.lib.format.open_memmap(args.dir / "bench.npy", mode="w+", dtype=np.uint8, shape=(64, 256, 256))
    records[:] = resize_img(cv2.imread(str(args.dir / "chexpert_390x320.jpg"), 0))
    records.flush()
    records = np.load(args.dir / "bench.npy", mmap_mode="r")
    state = {"row": 0}

    def read():
        state["row"] = (state["row"] + 17) % len(records)
        return pipeline(np.array(records[state["row"]]))

    s = timed(read, args.min_seconds)
    print(json.dumps({"case": "cache_read/crop_normalise", "us": s * 1e6, "images_per_s": 1 / s, "opencv": cv2.__version__}))


if __name__ == "__main__":
    main()
