"""A U-Net parity case from segmentation-models-pytorch 0.2.0 itself: `Unet("resnet50",
encoder_weights=None, classes=1, activation=None)`, the model MGCA's segmentation script builds.

The 34 million weights are not stored: every float tensor of the state dict is filled by a
formula of its name and element index (`weight_values` below), which the Rust test evaluates
the same way, exactly (integer hashing, then IEEE double arithmetic rounded once to float32).
The case stores the input images and the logits in training mode (BatchNorm with batch
statistics, updating the running ones) and then in evaluation mode (with the running statistics
the training-mode pass left), and, in its metadata, every state-dict key with its shape.

Run once: PYTHONPATH=<dir with segmentation-models-pytorch 0.2.0 and its pins> python
gen_unet_case.py. Needs torch, numpy, safetensors.
"""
import json
import pathlib

import numpy as np
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent
MASK64 = (1 << 64) - 1


def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def splitmix64(x):
    """numpy uint64 array in, the SplitMix64 output of each (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def weight_values(name, shape):
    n = int(np.prod(shape)) if shape else 1
    with np.errstate(over="ignore"):
        x = np.uint64(fnv1a(name)) + np.arange(n, dtype=np.uint64)
    u = (splitmix64(x) >> np.uint64(40)).astype(np.float64) / 16777216.0
    if name.endswith("running_mean"):
        v = 0.1 * (2.0 * u - 1.0)
    elif name.endswith("running_var"):
        v = 0.5 + u
    elif len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        v = (2.0 * u - 1.0) * (1.0 / np.sqrt(float(fan_in)))
    elif name.endswith("weight"):  # BatchNorm γ
        v = 0.5 + u
    else:  # BatchNorm β, the head's bias
        v = 0.2 * (2.0 * u - 1.0)
    return v.astype(np.float32).reshape(shape)


def main():
    torch.manual_seed(0)
    model = smp.Unet("resnet50", encoder_weights=None, classes=1, activation=None)
    state = model.state_dict()
    keys = []
    for name, t in state.items():
        if t.dtype != torch.float32:
            continue  # num_batches_tracked
        state[name] = torch.from_numpy(weight_values(name, list(t.shape)))
        keys.append([name, list(t.shape)])
    model.load_state_dict(state)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    model.train()
    with torch.no_grad():
        train = model(images).squeeze(1)
    model.eval()
    with torch.no_grad():
        evaluation = model(images).squeeze(1)
    tensors = {"unet.images": images, "unet.logits_train": train.contiguous(), "unet.logits_eval": evaluation.contiguous()}
    meta = {
        "generator": "gen_unet_case.py",
        "library": f"segmentation-models-pytorch {smp.__version__}, torch {torch.__version__}",
        "keys": json.dumps(keys),
    }
    save_file(tensors, str(HERE / "unet_case.safetensors"), metadata=meta)
    print(len(keys), "tensors;", float(train.abs().max()), float(evaluation.abs().max()))


if __name__ == "__main__":
    main()
