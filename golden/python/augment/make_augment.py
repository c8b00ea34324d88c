"""Reference outputs of the moco-v2 transform's operations (`Moco2Transform`, mgca/datasets/transforms.py), made once with
Pillow and torchvision's functional API on 3-channel grey PIL images, as the reference's
CheXpert loader applies them. Run: python make_augment.py (writes PNGs and cases.json here).
"""
import json
import pathlib

import numpy as np
import PIL
import torchvision
import torchvision.transforms.functional as F
from PIL import Image, ImageFilter

HERE = pathlib.Path(__file__).parent


def formula(h, w):
    i, j = np.mgrid[0:h, 0:w].astype(np.float64)
    v = 127.5 + 127.5 * np.sin(0.37 * i + 0.11 * j) * np.cos(0.05 * i * j / (w + 1))
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def chest(h, w):
    i, j = np.mgrid[0:h, 0:w].astype(np.float64)
    lungs = 90 + 60 * np.exp(-(((i - 0.5 * h) / (0.35 * h)) ** 2 + ((np.abs(j - 0.5 * w) - 0.22 * w) / (0.15 * w)) ** 2))
    blob = 120 * np.exp(-(((i - 0.3 * h) / 6) ** 2 + ((j - 0.7 * w) / 9) ** 2))
    v = lungs + blob + 8 * np.sin(0.9 * j)
    v[:, : w // 10] = 0  # padding, as resize_img leaves it
    v[h - 6 :, :] = 255
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def main():
    inputs = {"formula.png": formula(61, 83), "chest.png": chest(120, 100)}
    ops = [("brightness", v) for v in (0.6, 0.83, 1.0, 1.17, 1.4)]
    ops += [("contrast", v) for v in (0.6, 0.9, 1.25, 1.4)]
    ops += [("saturation", 0.7), ("hue", 0.08), ("grayscale", 0.0), ("hflip", 0.0)]
    ops += [("blur", v) for v in (0.1, 0.5, 1.0, 1.37, 2.0)]
    cases = []
    for name, grey in inputs.items():
        Image.fromarray(grey, "L").save(HERE / name)
        rgb = Image.fromarray(grey, "L").convert("RGB")
        for op, value in ops:
            if op == "brightness":
                out = F.adjust_brightness(rgb, value)
            elif op == "contrast":
                out = F.adjust_contrast(rgb, value)
            elif op == "saturation":
                out = F.adjust_saturation(rgb, value)
            elif op == "hue":
                out = F.adjust_hue(rgb, value)
            elif op == "grayscale":
                out = F.rgb_to_grayscale(rgb, num_output_channels=3)
            elif op == "hflip":
                out = F.hflip(rgb)
            else:
                out = rgb.filter(ImageFilter.GaussianBlur(radius=value))
            arr = np.asarray(out)
            assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all(), op
            out_name = f"{name[:-4]}_{op}_{value}.png"
            Image.fromarray(arr[..., 0], "L").save(HERE / out_name)
            cases.append({"input": name, "op": op, "value": value, "output": out_name})
    meta = {"pillow": PIL.__version__, "torchvision": torchvision.__version__}
    (HERE / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    (HERE / "versions.json").write_text(json.dumps(meta) + "\n")


if __name__ == "__main__":
    main()
