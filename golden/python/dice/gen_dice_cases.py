"""Dice-metric parity cases from the reference's own `SSLSegmenter.get_dice` and its epoch
averaging (`shared_epoch_end`: NumPy's mean of the per-batch values).

Each case holds the `dice.*` group of `mgca parity metrics`: `dice.probs` and `dice.targets`
(f32 [N, H, W]) and `dice.batch_size` (i64 []), with the reference's outputs: `dice.epoch`
(the mean of `get_dice` over consecutive batches of `batch_size`, the last one shorter) and
`dice.per_image` (f32 [N], each image's score by the same expressions as `get_dice`, in image
order — `get_dice` itself only returns the batch mean).

`get_dice` is taken from PATH/mgca/models/ssl_segmenter.py with ast (that file imports
pytorch_lightning, so it is not imported) and run as written.

Run once: python gen_dice_cases.py --reference-repo /path/to/MGCA (HKU-MedAI/MGCA 680fe4a6ee0c)
Needs torch, numpy and safetensors.
"""
import argparse
import ast
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent


def load_get_dice(repo):
    path = pathlib.Path(repo) / "mgca/models/ssl_segmenter.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SSLSegmenter")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "get_dice")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["get_dice"]


def per_image(probability, truth, threshold=0.5):
    """The scores `get_dice` averages, in image order (its own expressions)."""
    n = len(truth)
    p = (probability.view(n, -1) > threshold).float()
    t = (truth.view(n, -1) > 0.5).float()
    t_sum, p_sum = t.sum(-1), p.sum(-1)
    dice_neg = (p_sum == 0).float()
    dice_pos = 2 * (p * t).sum(-1) / ((p + t).sum(-1))
    return torch.where(t_sum == 0, dice_neg, dice_pos)


def case(get_dice, name, seed, shape, batch_size, empty_every, noise):
    rng = np.random.default_rng(seed)
    n, h, w = shape
    truth = np.zeros(shape, dtype=np.float32)
    probs = rng.uniform(0.0, 0.45, size=shape).astype(np.float32)
    for i in range(n):
        if empty_every and i % empty_every == 0:
            if rng.uniform() < 0.5:
                probs[i, rng.integers(0, h), rng.integers(0, w)] = 0.8  # a false positive
            continue
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        y1, x1 = y0 + rng.integers(2, h // 2), x0 + rng.integers(2, w // 2)
        truth[i, y0:y1, x0:x1] = 1.0
        truth[i, y0, x0:x1] = 0.5  # a fractional edge: exactly 0.5 is background
        shift = rng.integers(-2, 3)
        probs[i, max(0, y0 + shift):y1 + shift, x0:x1] = rng.uniform(0.5, 1.0)
        probs[i] = np.clip(probs[i] + rng.normal(0, noise, size=(h, w)), 0, 1)
    probs_t, truth_t = torch.from_numpy(probs), torch.from_numpy(truth)
    batches = [get_dice(None, probs_t[s:s + batch_size], truth_t[s:s + batch_size]) for s in range(0, n, batch_size)]
    epoch = np.array(batches).mean()
    tensors = {
        "dice.probs": probs_t,
        "dice.targets": truth_t,
        "dice.batch_size": torch.tensor(batch_size, dtype=torch.int64),
        "dice.per_image": per_image(probs_t, truth_t),
        "dice.epoch": torch.tensor(epoch, dtype=torch.float32),
    }
    meta = {"generator": "gen_dice_cases.py", "reference": "HKU-MedAI/MGCA 680fe4a6ee0c SSLSegmenter.get_dice",
            "case": name}
    save_file(tensors, str(HERE / f"case_{name}.safetensors"), metadata=meta)
    print(name, epoch, float(per_image(probs_t, truth_t).mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    get_dice = load_get_dice(args.reference_repo)
    case(get_dice, "short_last_batch", 1, (11, 24, 24), 4, 3, 0.1)
    case(get_dice, "mostly_empty", 2, (16, 16, 16), 8, 1, 0.05)
    case(get_dice, "all_positive", 3, (6, 32, 20), 2, 0, 0.2)
    case(get_dice, "one_batch", 4, (5, 28, 28), 8, 2, 0.15)


if __name__ == "__main__":
    main()
