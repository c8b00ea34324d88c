#!/usr/bin/env python3
"""OpenCV's resize as the reference calls it (`resize_img`, mgca/datasets/utils.py), on formula images.

For each case, a grey uint8 image `x[i, j] = (3 i² + 5 j² + 7 i j + 11 i + 13 j) mod 251` of the
given size is resized with `cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)` to the size
`resize_img(256)` computes, then zero-padded to 256 x 256. `expected.json` records each output's
FNV-1a-64 hash (row-major bytes) and its mean, so the Rust test checks every pixel without a
copy of the images. `linear_224` does the same for the detection path's
`cv2.resize(img, (224, 224))` (default INTER_LINEAR, aspect not preserved).

    python golden/python/resize/make_resize.py [--dump DIR]   # needs numpy, opencv-python-headless
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np

CASES = [(1024, 1024), (512, 512), (700, 530), (390, 320), (636, 764), (1000, 333), (300, 200),
         (257, 256), (200, 150), (240, 256)]


def formula(h: int, w: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
    return ((3 * i * i + 5 * j * j + 7 * i * j + 11 * i + 13 * j) % 251).astype(np.uint8)


def resize_img(img: np.ndarray, scale: int) -> np.ndarray:
    """The reference's resize_img, verbatim in behaviour."""
    size = img.shape
    max_dim = max(size)
    max_ind = size.index(max_dim)
    if max_ind == 0:
        wpercent = scale / float(size[0])
        hsize = int(float(size[1]) * float(wpercent))
        desireable_size = (scale, hsize)
    else:
        hpercent = scale / float(size[1])
        wsize = int(float(size[0]) * float(hpercent))
        desireable_size = (wsize, scale)
    resized = cv2.resize(img, desireable_size[::-1], interpolation=cv2.INTER_AREA)
    if max_ind == 0:
        pad_size = scale - resized.shape[1]
        left, right = pad_size // 2, pad_size - pad_size // 2
        top = bottom = 0
    else:
        pad_size = scale - resized.shape[0]
        top, bottom = pad_size // 2, pad_size - pad_size // 2
        left = right = 0
    return np.pad(resized, [(top, bottom), (left, right)], "constant", constant_values=0)


LINEAR_CASES = [(1024, 1024), (390, 320), (3056, 2544), (150, 200), (224, 224)]


def fnv1a64(b: bytes) -> str:
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", type=Path, help="also write each output as a .npy file here")
    args = ap.parse_args()
    out = {"opencv": cv2.__version__, "cases": []}
    for h, w in CASES:
        y = resize_img(formula(h, w), 256)
        out["cases"].append({"height": h, "width": w, "fnv1a64": fnv1a64(y.tobytes()), "mean": float(y.mean())})
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            np.save(args.dump / f"{h}x{w}.npy", y)
    # The detection path: cv2.resize(img, (224, 224)) with the default INTER_LINEAR.
    out["linear_224"] = []
    for h, w in LINEAR_CASES:
        y = cv2.resize(formula(h, w), (224, 224))
        out["linear_224"].append({"height": h, "width": w, "fnv1a64": fnv1a64(y.tobytes()), "mean": float(y.mean())})
        if args.dump:
            np.save(args.dump / f"linear_{h}x{w}.npy", y)
    # Segmentation masks: a binary float mask resized with INTER_AREA to 224 (fractional edges),
    # as the reference's resize_img does to RSNA and SIIM masks.
    mask = np.zeros((1024, 1024), np.float32)
    mask[200:531, 264:477] = 1.0
    mask[152:605, 562:818] = 1.0
    y = cv2.resize(mask, (224, 224), interpolation=cv2.INTER_AREA)
    out["mask_area_224"] = {"fnv1a64": fnv1a64(y.astype("<f4").tobytes()), "sum": float(y.sum())}
    (Path(__file__).parent / "expected.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
