"""Segmentation-loss parity cases from the reference's own `mgca/utils/segmentation_loss.py`.

Each case holds the inputs of `mgca parity segloss` (`seg.logits`, `seg.targets`, f32
[B, H, W]) and the reference's outputs under the names our command writes: `seg.loss`
(`MixedLoss(alpha=10)` as `SSLSegmenter` builds it), `seg.focal` (`FocalLoss(gamma=2)`),
`seg.dice_coef` (`dice_loss`, which returns the soft Dice coefficient) and `seg.grad.logits`
(the gradient of `seg.loss` by autograd).

Run once, with the reference checked out (HKU-MedAI/MGCA at 680fe4a6ee0c):
    python gen_segloss_cases.py --reference-repo /path/to/MGCA
Needs torch, numpy and safetensors.
"""
import argparse
import importlib.util
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent


def load_reference(repo):
    path = pathlib.Path(repo) / "mgca/utils/segmentation_loss.py"
    spec = importlib.util.spec_from_file_location("segmentation_loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def masks(rng, b, h, w, kind):
    """Targets: rectangles (hard 0/1), area-resized edges (fractional), or all empty."""
    y = np.zeros((b, h, w), dtype=np.float32)
    if kind == "empty":
        return y
    for i in range(b):
        if i % 3 == 2:
            continue  # some images without foreground
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        y1, x1 = y0 + rng.integers(2, h // 2), x0 + rng.integers(2, w // 2)
        y[i, y0:y1, x0:x1] = 1.0
        if kind == "fractional":
            y[i, y0, x0:x1] = rng.uniform(0.1, 0.9)
            y[i, y0:y1, x1 - 1] = rng.uniform(0.1, 0.9)
    return y


def case(ref, name, seed, shape, scale, kind):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    b, h, w = shape
    logits = (torch.randn(b, h, w) * scale).requires_grad_(True)
    if kind == "extreme":
        with torch.no_grad():
            logits[0, 0, :4] = torch.tensor([60.0, -60.0, 110.0, -110.0])
    targets = torch.from_numpy(masks(rng, b, h, w, "fractional" if kind == "extreme" else kind))
    loss = ref.MixedLoss(alpha=10)(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    with torch.no_grad():
        focal = ref.FocalLoss(gamma=2.0)(logits, targets)
        dice = ref.dice_loss(logits, targets)
    tensors = {
        "seg.logits": logits.detach().contiguous(),
        "seg.targets": targets.contiguous(),
        "seg.loss": loss.detach().reshape([]),
        "seg.focal": focal.reshape([]),
        "seg.dice_coef": dice.reshape([]),
        "seg.grad.logits": grad.contiguous(),
    }
    meta = {"generator": "gen_segloss_cases.py", "reference": "HKU-MedAI/MGCA 680fe4a6ee0c mgca/utils/segmentation_loss.py",
            "torch": torch.__version__, "case": name}
    save_file(tensors, str(HERE / f"case_{name}.safetensors"), metadata=meta)
    print(name, float(loss), float(focal), float(dice))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    ref = load_reference(args.reference_repo)
    case(ref, "hard_masks", 1, (3, 32, 32), 2.0, "hard")
    case(ref, "fractional_edges", 2, (4, 24, 40), 3.0, "fractional")
    case(ref, "all_empty", 3, (2, 16, 16), 1.5, "empty")
    case(ref, "extreme_logits", 4, (2, 20, 20), 4.0, "extreme")
    case(ref, "full_size", 5, (1, 224, 224), 2.5, "fractional")


if __name__ == "__main__":
    main()
