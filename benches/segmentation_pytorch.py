"""One segmentation training step in PyTorch, the counterpart of the Rust criterion bench
`segmentation/step/b8`: what MGCA's segmentation script trains (mgca/models/mgca/
mgca_segmenter.py and mgca/models/ssl_segmenter.py at HKU-MedAI/MGCA 680fe4a6ee0c) on one
batch of 8.

- model: segmentation-models-pytorch 0.2.0 `Unet("resnet50", encoder_weights=None,
  activation=None)` (random init, nothing downloaded); the encoder's parameters frozen
  (requires_grad = False, as the script does after loading MGCA's weights) but the model in
  training mode, so the encoder's BatchNorm uses and updates batch statistics.
- loss: the reference's own `MixedLoss(alpha=10)` from `mgca/utils/segmentation_loss.py`,
  loaded from a clone of the reference (`--ref PATH`, default $MGCA_REFERENCE).
- optimiser: AdamW(lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0.05) over the
  parameters that require grad.

One step = forward, squeeze, loss, zero_grad, backward, optimizer.step. Images: fixed random
normal [8, 3, 224, 224]; masks: a rectangle in every even-indexed image.

Usage: PYTHONPATH=<smp 0.2.0> python benches/segmentation_pytorch.py --ref /path/to/MGCA
       [--threads 2] [--min-iters 5] [--min-seconds 10] [--batch 8]
Prints one JSON line: {"case": "step_b8", "median_ms": ..., "torch": ..., "threads": N}.
"""

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch

SIDE = 224


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ref", default=os.environ.get("MGCA_REFERENCE"),
                    help="a clone of HKU-MedAI/MGCA to take MixedLoss from (default $MGCA_REFERENCE)")
    args = ap.parse_args()
    if not args.ref:
        ap.error("give the reference's clone with --ref PATH or MGCA_REFERENCE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = importlib.util.spec_from_file_location("segmentation_loss", Path(args.ref) / "mgca/utils/segmentation_loss.py")
    seg_loss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seg_loss)

    model = smp.Unet("resnet50", encoder_weights=None, activation=None)
    for p in model.encoder.parameters():
        p.requires_grad = False
    model.train()
    loss_fn = seg_loss.MixedLoss(alpha=10)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4,
                              betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randn(args.batch, 3, SIDE, SIDE, generator=gen)
    masks = torch.zeros(args.batch, SIDE, SIDE)
    for i in range(0, args.batch, 2):
        y0, x0 = 40 + 7 * i, 60 + 5 * i
        masks[i, y0:y0 + 50, x0:x0 + 40] = 1.0

    def step():
        logits = model(imgs).squeeze(dim=1)
        loss = loss_fn(logits, masks)
        optim.zero_grad()
        loss.backward()
        optim.step()

    step()  # warm-up
    times, started = [], time.perf_counter()
    while len(times) < args.min_iters or time.perf_counter() - started < args.min_seconds:
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"case": f"step_b{args.batch}", "median_ms": statistics.median(times),
                      "torch": torch.__version__, "threads": args.threads}))


if __name__ == "__main__":
    main()
