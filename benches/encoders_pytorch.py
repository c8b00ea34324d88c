#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/encoders.rs: the same encoders at MGCA's sizes, batch 8.

    python benches/encoders_pytorch.py [--threads 2] [--min-iters 5] [--min-seconds 10]

- vit_b16: timm's `vit_base_patch16_224` (random init, no classifier: `forward_features`),
  224 px. MGCA also keeps the last block's attention; timm's fused attention does not expose
  it, so the timing is a lower bound for what MGCA's ViT costs in PyTorch.
- bert6: transformers' `BertModel` with Bio_ClinicalBERT's widths and 6 layers, no pooler,
  eager attention with `output_attentions=True` (MGCA reads the last layer's attention),
  112 tokens, reports of 40..103 tokens padded, eval mode (no dropout, as ours).
- resnet50: torchvision's `resnet50` without `fc`, input bilinearly up-sampled to 299 px
  (align_corners=True); forward in eval mode, forward + backward in train mode (batch
  statistics), loss = sum(pooled layer 4) + sum(layer 3).

`fwd` runs under torch.inference_mode(); `fwd_bwd` computes the sum of the outputs and calls
backward(). Prints one JSON line per (case, function): median milliseconds per iteration.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

BATCH, TOKENS = 8, 112


def vit():
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    x = torch.randn(BATCH, 3, 224, 224)
    return model, lambda: model.forward_features(x), lambda out: out.sum()


def bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=28996, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    mask = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    for b in range(BATCH):
        n = 40 + b * 9
        ids[b, :n] = torch.tensor([1 + (b * 7919 + t * 104729) % 28995 for t in range(n)])
        mask[b, :n] = 1
    run = lambda: model(input_ids=ids, attention_mask=mask, output_attentions=True).last_hidden_state
    return model, run, lambda out: out.sum()


def resnet():
    from torchvision.models import resnet50

    model = resnet50()
    model.fc = torch.nn.Identity()
    x = torch.randn(BATCH, 3, 224, 224)

    def run():
        y = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        y = model.maxpool(model.relu(model.bn1(model.conv1(y))))
        local = model.layer3(model.layer2(model.layer1(y)))
        return torch.flatten(model.avgpool(model.layer4(local)), 1), local

    return model, run, lambda out: out[0].sum() + out[1].sum()


def status_kib(field):
    """A /proc/self/status field in KiB (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_mib(fn):
    """Run fn; the most resident memory above the level before it, in MiB (None if unknown)."""
    import gc
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    before = status_kib("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        before = None
    result = fn()
    peak = status_kib("VmHWM:")
    if before is None or peak is None:
        return result, None
    return result, round(max(peak - before, 0.0) / 1024.0)


def timed(fn, min_iters, min_seconds, warmup=2):
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, len(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--only", nargs="*", default=["vit_b16", "bert6", "resnet50"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, build in [("vit_b16", vit), ("bert6", bert), ("resnet50", resnet)]:
        if name not in args.only:
            continue
        model, run, loss = build()
        if name == "resnet50":
            model.eval()

        def fwd():
            with torch.inference_mode():
                run()

        def fwd_bwd():
            if name == "resnet50":
                model.train()
            model.zero_grad(set_to_none=True)
            loss(run()).backward()

        for function, fn in [("fwd", fwd), ("fwd_bwd", fwd_bwd)]:
            (ms, n), mib = peak_mib(lambda: timed(fn, args.min_iters, args.min_seconds))
            print(json.dumps({"case": name, "function": function, "median_ms": round(ms, 2), "iters": n,
                              "peak_mib": mib,
                              "threads": args.threads, "torch": torch.__version__}), flush=True)
            if name == "resnet50":
                model.eval()


if __name__ == "__main__":
    main()
