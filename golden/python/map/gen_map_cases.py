"""Mean-average-precision cases from torchmetrics 0.8.2's `MeanAveragePrecision`, the metric
the reference's `SSLDetector` logs as `val_mAP` / `test_mAP` (IoU thresholds 0.40:0.05:0.75).

Each case holds the `map.*` inputs of `mgca parity metrics` and torchmetrics' outputs:
`map.map` (its `map`) and `map.per_threshold` (the same mean taken per IoU threshold over the
101 recall points, area "all", 100 detections, read from the metric's precision array).

Run once: python gen_map_cases.py   (needs torch, torchmetrics==0.8.2, safetensors)
"""
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file
from torchmetrics.detection.mean_ap import MeanAveragePrecision

HERE = pathlib.Path(__file__).parent
THRESHOLDS = [0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75]


def boxes_xyxy(rng, n):
    w, h = rng.uniform(8, 90, n), rng.uniform(8, 90, n)
    x, y = rng.uniform(0, 224 - w), rng.uniform(0, 224 - h)
    return np.stack([x, y, x + w, y + h], 1).astype(np.float32)


def make(rng, gts_per_image, fp_per_image, jitter):
    images = []
    for n_gt, n_fp in zip(gts_per_image, fp_per_image):
        gt = boxes_xyxy(rng, n_gt)
        found = gt[rng.uniform(size=n_gt) < 0.8]
        pred = found + rng.normal(0, jitter, found.shape).astype(np.float32)
        pred = np.concatenate([pred, boxes_xyxy(rng, n_fp)]).astype(np.float32)
        scores = rng.uniform(0.05, 1.0, len(pred)).astype(np.float32)
        images.append((pred.reshape(-1, 4), scores, gt.reshape(-1, 4)))
    return images


def evaluate(images):
    m = MeanAveragePrecision(iou_thresholds=THRESHOLDS)
    preds = [dict(boxes=torch.from_numpy(p), scores=torch.from_numpy(s), labels=torch.zeros(len(p), dtype=torch.long))
             for p, s, _ in images]
    target = [dict(boxes=torch.from_numpy(g), labels=torch.zeros(len(g), dtype=torch.long)) for _, _, g in images]
    m.update(preds, target)
    out = m.compute()
    classes = m._get_classes()
    per = []
    if classes:
        precisions, _ = m._calculate(classes)
        for t in range(len(THRESHOLDS)):
            p = precisions[t, :, :, 0, -1]  # area "all", 100 detections
            per.append(float(p[p > -1].mean()) if (p > -1).any() else -1.0)
    else:
        per = [-1.0] * len(THRESHOLDS)
    return float(out["map"]), per


def tensors(images, map_value, per):
    pb, ps, pi, gb, gi = [], [], [], [], []
    for i, (p, s, g) in enumerate(images):
        pb.append(p)
        ps.append(s)
        pi += [i] * len(p)
        gb.append(g)
        gi += [i] * len(g)
    return {
        "map.pred_boxes": torch.from_numpy(np.concatenate(pb).reshape(-1, 4)),
        "map.pred_scores": torch.from_numpy(np.concatenate(ps)),
        "map.pred_image": torch.tensor(pi, dtype=torch.int64),
        "map.gt_boxes": torch.from_numpy(np.concatenate(gb).reshape(-1, 4)),
        "map.gt_image": torch.tensor(gi, dtype=torch.int64),
        "map.num_images": torch.tensor(len(images), dtype=torch.int64),
        "map.map": torch.tensor(map_value, dtype=torch.float32),
        "map.per_threshold": torch.tensor(per, dtype=torch.float32),
    }


def main():
    specs = {
        # images with and without objects, with and without detections
        "case_mixed": (1, [3, 0, 1, 5, 2, 0], [2, 3, 0, 1, 4, 0], 4.0),
        # 100 ground-truth boxes in all: recall lands on the 0.01 grid exactly
        "case_hundred_objects": (2, [10] * 10, [1] * 10, 6.0),
        # an image with more than 100 detections (only the best 100 count)
        "case_crowded": (3, [4, 2], [140, 3], 3.0),
        # tight boxes: every threshold matches
        "case_tight": (4, [2, 3, 1], [0, 1, 0], 0.5),
    }
    index = {}
    for name, (seed, gts, fps, jitter) in specs.items():
        rng = np.random.default_rng(seed)
        images = make(rng, gts, fps, jitter)
        map_value, per = evaluate(images)
        save_file(tensors(images, map_value, per), str(HERE / f"{name}.safetensors"),
                  metadata={"generator": "gen_map_cases.py", "torchmetrics": "0.8.2"})
        index[name] = {"map": map_value, "per_threshold": per}
    (HERE / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(json.dumps(index, indent=2))


if __name__ == "__main__":
    main()
