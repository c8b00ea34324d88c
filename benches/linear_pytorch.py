"""One linear-probing epoch of the head in PyTorch at the paper's sizes, the counterpart of
benches/linear.rs `head/paper_rsna100`: the reference's SSLFineTuner recipe
(mgca/models/ssl_finetuner.py at HKU-MedAI/MGCA 680fe4a6ee0c) on cached features — 18,678
768-d features (the RSNA training split), batches of 48, nn.Linear(768, 1) (dropout p = 0 is a
no-op and left out), BCEWithLogitsLoss, AdamW(lr 5e-4, betas (0.9, 0.999), eps 1e-8,
weight_decay 1e-6), one step per batch.

Usage: python benches/linear_pytorch.py [--threads 2] [--min-iters 10] [--min-seconds 10]
Prints one JSON line: {"case": "head_paper_rsna100", "median_ms": ..., "torch": ...}.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn

ROWS, DIM, BATCH = 18_678, 768, 48


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=10)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    features = torch.randn(ROWS, DIM)
    labels = torch.tensor([float((i * 7919) % 4 == 0) for i in range(ROWS)]).unsqueeze(1)
    head = nn.Linear(DIM, 1)
    optim = torch.optim.AdamW(head.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-6)
    loss_fn = nn.BCEWithLogitsLoss()

    def epoch():
        for start in range(0, ROWS // BATCH * BATCH, BATCH):
            loss = loss_fn(head(features[start:start + BATCH]), labels[start:start + BATCH])
            optim.zero_grad()
            loss.backward()
            optim.step()

    epoch()  # warm-up
    times, started = [], time.perf_counter()
    while len(times) < args.min_iters or time.perf_counter() - started < args.min_seconds:
        t = time.perf_counter()
        epoch()
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"case": "head_paper_rsna100", "median_ms": statistics.median(times), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
