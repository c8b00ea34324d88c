"""Detection parity cases from the reference's own `mgca/utils/yolo_loss.py`.

Each case holds the inputs of `mgca parity yolo` (`yolo.out0|1|2`, `yolo.targets`) and the
reference's outputs under the names our command writes (`yolo.loss`, `yolo.grad.out0|1|2`,
`yolo.detections`): the loss summed over the three scales as `SSLDetector.shared_step` sums it,
its gradient by autograd, and the detections of `YOLOLoss.forward` without targets,
concatenated over the scales and passed to `non_max_suppression(conf_thres=0.5,
nms_thres=0.5)`. `yolo_loss.py` holds the same `non_max_suppression` as `detection_utils.py`
(which imports ipdb and terminaltables, so it is not imported here).

Run once, with the reference checked out (HKU-MedAI/MGCA at 680fe4a6ee0c):
    python gen_yolo_cases.py --reference-repo /path/to/MGCA
Needs torch and numpy.
"""
import argparse
import importlib.util
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent


def load_reference(repo):
    spec = importlib.util.spec_from_file_location("yolo_loss", pathlib.Path(repo) / "mgca/utils/yolo_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def targets(rng, batch, rows, fill):
    """[B, T, 5]: `fill[b]` boxes per image, the rest zero padding."""
    t = np.zeros((batch, rows, 5), dtype=np.float32)
    for b in range(batch):
        for r in range(fill[b]):
            w, h = rng.uniform(0.03, 0.5), rng.uniform(0.03, 0.5)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            t[b, r] = [0.0, cx, cy, w, h]
    return torch.from_numpy(t)


def case(ref, seed, batch, rows, fill, scale, bias):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    anchors = torch.tensor([
        [[116, 90], [156, 198], [373, 326]],
        [[30, 61], [62, 45], [59, 119]],
        [[10, 13], [16, 30], [33, 23]],
    ]) * 224 / 416
    losses = [ref.YOLOLoss(anchors[i], 1, (224, 224)) for i in range(3)]
    outs = []
    for g in (7, 14, 28):
        o = torch.randn(batch, 18, g, g) * scale
        o.view(batch, 3, 6, g, g)[:, :, 4] += bias  # objectness logits: some above 0.5
        outs.append(o.requires_grad_(True))
    tgt = targets(rng, batch, rows, fill)
    loss = sum(losses[i](outs[i], tgt)[0] for i in range(3))
    loss.backward()
    with torch.no_grad():
        decoded = torch.cat([losses[i](outs[i].detach()) for i in range(3)], 1)
        dets = ref.non_max_suppression(decoded, 1, conf_thres=0.5, nms_thres=0.5)
    rows_out = []
    for b, d in enumerate(dets):
        if d is None:
            continue
        for r in d:
            rows_out.append([float(b)] + [float(v) for v in r])
    det = torch.tensor(rows_out, dtype=torch.float32).reshape(-1, 8)
    tensors = {
        "yolo.out0": outs[0].detach(), "yolo.out1": outs[1].detach(), "yolo.out2": outs[2].detach(),
        "yolo.targets": tgt,
        "yolo.loss": loss.detach().reshape(()),
        "yolo.grad.out0": outs[0].grad, "yolo.grad.out1": outs[1].grad, "yolo.grad.out2": outs[2].grad,
        "yolo.detections": det,
    }
    return {k: v.contiguous().float() for k, v in tensors.items()}, det.shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    ref = load_reference(args.reference_repo)
    index = {}
    # (seed, batch, target rows, boxes per image, logit scale, objectness bias)
    specs = {
        "case_small": (1, 2, 10, [1, 3], 1.0, -2.5),
        "case_crowded": (2, 2, 20, [20, 7], 1.5, -2.5),
        "case_empty_batch": (3, 2, 10, [0, 0], 1.0, -3.0),
        "case_many_detections": (4, 2, 10, [10, 0], 1.0, -1.5),
    }
    for name, (seed, batch, rows, fill, scale, bias) in specs.items():
        tensors, n_det = case(ref, seed, batch, rows, fill, scale, bias)
        save_file(tensors, str(HERE / f"{name}.safetensors"), metadata={"generator": "gen_yolo_cases.py", "seed": str(seed)})
        index[name] = {"batch": batch, "rows": rows, "boxes": fill, "loss": float(tensors["yolo.loss"]), "detections": n_det}
    (HERE / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(json.dumps(index, indent=2))


if __name__ == "__main__":
    main()
