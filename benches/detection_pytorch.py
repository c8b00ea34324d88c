"""One detection training step in PyTorch at the paper's sizes, the counterpart of the Rust
criterion bench `step_b16`: the reference MGCA detector (mgca/models/ssl_detector.py,
mgca/models/backbones/detector_backbone.py, mgca/utils/yolo_loss.py and the freezing in
mgca/models/mgca/mgca_detector.py at HKU-MedAI/MGCA 680fe4a6ee0c) on one batch of 16.

- backbone: torchvision `resnet50()` (random init, nothing downloaded) wrapped as the
  reference's ResNetDetector: conv1/bn1/relu/maxpool/layer1, then C3 = layer2 (512 x 28 x 28),
  C4 = layer3 (1024 x 14 x 14), C5 = layer4 (2048 x 7 x 7) at 224 px; every backbone parameter
  has requires_grad = False, but the backbone stays in training mode (BatchNorm uses and
  updates batch statistics), as under Lightning in the reference.
- neck/heads: the reference's ModelMain (three YOLOv3 embeddings [512, 1024] / [256, 512] /
  [128, 256] of conv(no bias) + BN + LeakyReLU(0.1) blocks, branch tap at block 4, 1x1 CBL +
  nearest x2 upsampling + concatenation [upsampled, C4] and [upsampled, C3], conv_out with bias,
  18 channels per scale, anchors * 224 / 416).
- loss: the reference's YOLOLoss for each of the 3 scales (get_target's Python loop over the
  boxes included, as are its .item() calls), summed.
- optimiser: AdamW(lr 5e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-6) over the
  ModelMain parameters that require grad (the reference passes all of them; the frozen ones
  have no grad and AdamW skips them, so the update is the same).

One step = forward (backbone + neck), the summed loss of the 3 scales, zero_grad, backward,
optimizer.step. Images: fixed random normal [B, 3, 224, 224]; labels [B, 10, 5] (class 0, cx,
cy, w, h normalised), 1-3 seeded random boxes in every even-indexed image, zero rows elsewhere.

ModelMain and YOLOLoss are the reference's own code, taken from a clone of it at 680fe4a6ee0c
(`--ref PATH`, default $MGCA_REFERENCE; `fetch github:HKU-MedAI/MGCA` brings one):
ModelMain's class source is extracted from PATH/mgca/models/ssl_detector.py with ast (that
file imports pytorch_lightning, torchmetrics' mAP and the datasets, so it is not imported) and
PATH/mgca/utils/yolo_loss.py is loaded with importlib. Only the backbone wrapper (a few lines
around torchvision's resnet50) is written here.

Usage: python benches/detection_pytorch.py --ref /tmp/mgca-ref [--threads 2] [--min-iters 5]
       [--min-seconds 10] [--batch 16]
Prints one JSON line: {"case": "step_b16", "median_ms": ..., "torch": ..., "threads": N}.
"""

import argparse
import ast
import importlib.util
import json
import os
import statistics
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

SIDE, MAX_BOXES = 224, 10


# ---- the reference's ResNetDetector("resnet_50"), random init ---------------------------------
class ResNetDetector(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.model = resnet50()  # weights=None: nothing is downloaded
        self.model.fc = nn.Identity()
        self.filters = [512, 1024, 2048]

    def forward(self, x):
        x = self.model.maxpool(self.model.relu(self.model.bn1(self.model.conv1(x))))
        x = self.model.layer1(x)
        out3 = self.model.layer2(x)
        out4 = self.model.layer3(out3)
        out5 = self.model.layer4(out4)
        return out3, out4, out5


def load_reference(ref):
    """ModelMain and YOLOLoss from a clone of the reference, without its Lightning imports."""
    ref = Path(ref)
    source = (ref / "mgca/models/ssl_detector.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelMain")
    namespace = {"torch": torch, "nn": nn, "OrderedDict": OrderedDict}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), str(ref / "mgca/models/ssl_detector.py"), "exec"),
         namespace)
    spec = importlib.util.spec_from_file_location("mgca_yolo_loss", ref / "mgca/utils/yolo_loss.py")
    yolo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(yolo)
    return namespace["ModelMain"], yolo.YOLOLoss


def make_labels(batch, gen):
    """[batch, 10, 5] (class 0, cx, cy, w, h): 1-3 boxes in each even-indexed image, zeros elsewhere."""
    labels = torch.zeros(batch, MAX_BOXES, 5)
    for b in range(0, batch, 2):
        for t in range(int(torch.randint(1, 4, (1,), generator=gen))):
            w, h = (0.05 + 0.35 * torch.rand(2, generator=gen)).tolist()
            cx = w / 2 + (1 - w) * float(torch.rand(1, generator=gen))
            cy = h / 2 + (1 - h) * float(torch.rand(1, generator=gen))
            labels[b, t] = torch.tensor([0.0, cx, cy, w, h])
    return labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ref", default=os.environ.get("MGCA_REFERENCE"),
                    help="a clone of HKU-MedAI/MGCA to take ModelMain and YOLOLoss from (default $MGCA_REFERENCE)")
    args = ap.parse_args()
    if not args.ref:
        ap.error("give the reference's clone with --ref PATH or MGCA_REFERENCE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model_main, yolo_loss = load_reference(args.ref)
    backbone = ResNetDetector()
    for param in backbone.parameters():  # mgca_detector.py: "Freeze encoder"
        param.requires_grad = False
    model = model_main(backbone)
    model.train()  # Lightning's training loop: the frozen backbone's BatchNorm too
    losses = [yolo_loss(model.anchors[i], model.classes, (SIDE, SIDE)) for i in range(3)]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4,
                              betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-6)

    gen = torch.Generator().manual_seed(0)
    imgs = torch.randn(args.batch, 3, SIDE, SIDE, generator=gen)
    labels = make_labels(args.batch, gen)

    def step():
        outputs = model(imgs)
        loss = sum(losses[i](outputs[i], labels)[0] for i in range(3))
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss

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
