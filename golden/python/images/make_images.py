#!/usr/bin/env python3
"""JPEG files and what OpenCV reads from them, for the JPEG path of the reference's
`get_imgs` (mgca/datasets/utils.py).

Writes `gray.jpg` (8-bit greyscale, like CheXpert and MIMIC-CXR-JPG) and `color.jpg` (YCbCr
4:2:0) with Pillow at quality 90 from formula images, and `gray_cv2.png`, `color_cv2.png`:
`cv2.imread(path, 0)` of each (lossless PNG), which the Rust test compares with its own decode.

    python golden/python/images/make_images.py   # needs numpy, pillow, opencv-python-headless
"""
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def main() -> None:
    i, j = np.meshgrid(np.arange(300), np.arange(250), indexing="ij")
    gray = (128 + 100 * np.sin(i / 17.0) * np.cos(j / 23.0) + (i * j % 7)).clip(0, 255).astype(np.uint8)
    Image.fromarray(gray, "L").save(HERE / "gray.jpg", quality=90)
    rgb = np.stack([gray, (255 - gray), ((i * 3 + j * 5) % 256).astype(np.uint8)], axis=-1)
    Image.fromarray(rgb, "RGB").save(HERE / "color.jpg", quality=90)
    for name in ["gray", "color"]:
        decoded = cv2.imread(str(HERE / f"{name}.jpg"), 0)
        cv2.imwrite(str(HERE / f"{name}_cv2.png"), decoded)
        print(name, decoded.shape, decoded.dtype, cv2.__version__)


if __name__ == "__main__":
    main()
