#!/usr/bin/env python3
"""Plain PyTorch implementation of the MGCA objective (ITA + CTA + CPA), written from
spec/losses.md, used as (a) a cross-check against the reference fixtures and (b) a CPU
timing baseline for the Rust implementation (benches/losses.rs).

Usage:
    python benches/losses_pytorch.py --check /work/shared/fixtures/losses
    python benches/losses_pytorch.py --bench [--threads 2] [--min-iters 20] [--min-seconds 10]

Inputs are the *un-normalised* projection-head outputs (what the loss block receives):
    img_emb [B,D], report_emb [B,D], patch_emb [B,M,D], word_emb [B,W,D],
    word_attn [B,W] (0 on padding slots), word_pad_mask [B,W] (1 = "[PAD]"),
    vit_cls_attn [B,H,M] (ViT only), prototypes [K,D] (before row normalisation).
Gradients are d(total)/d(inputs) and d(total)/d(row-normalised prototypes).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Hyper-parameters of the published configuration (spec §2-§5).
ITA_TEMPERATURE = 0.07
LOCAL_TEMPERATURE = 0.1
PROTO_TEMPERATURE = 0.2
SINKHORN_EPSILON = 0.05
SINKHORN_ITERATIONS = 3
LAMBDAS = (1.0, 1.0, 1.0)
NORM_EPS = 1e-12


def l2n(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||_2, 1e-12) over the last dimension."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(NORM_EPS)


# --------------------------------------------------------------------------------------
# ITA (§2)
# --------------------------------------------------------------------------------------
def ita_loss(v: torch.Tensor, t: torch.Tensor):
    b = v.shape[0]
    s = (v @ t.t()) / ITA_TEMPERATURE
    labels = torch.arange(b, device=v.device)
    loss = F.cross_entropy(s, labels) + F.cross_entropy(s.t(), labels)  # summed directions
    with torch.no_grad():
        accs = []
        for k in (1, 5):
            i2t = (s.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean() * 100.0
            t2i = (s.t().topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean() * 100.0
            accs.append((i2t + t2i) / 2.0)
    return loss, accs[0], accs[1]


# --------------------------------------------------------------------------------------
# CTA (§3)
# --------------------------------------------------------------------------------------
def word_weights(word_attn: torch.Tensor) -> torch.Tensor:
    """§3.1 step 5: clip non-zero entries to their 10/90 % linear quantiles, renormalise."""
    out = torch.zeros_like(word_attn)
    for b in range(word_attn.shape[0]):
        row = word_attn[b]
        nz = row != 0
        vals = row[nz]
        lo = torch.quantile(vals, 0.1)
        hi = torch.quantile(vals, 0.9)
        out[b, nz] = vals.clamp(lo, hi)
    return out / out.sum(dim=1, keepdim=True)


def vit_patch_weights(vit_cls_attn: torch.Tensor) -> torch.Tensor:
    """§3.2 step 4 (ViT): head mean, clip over all patches to 10/90 % quantiles, renormalise."""
    a = vit_cls_attn.mean(dim=1)  # [B, M]
    lo = torch.quantile(a, 0.1, dim=1, keepdim=True)
    hi = torch.quantile(a, 0.9, dim=1, keepdim=True)
    a = torch.maximum(torch.minimum(a, hi), lo)  # clip(a, lo, hi)
    return a / a.sum(dim=1, keepdim=True)


def weighted_two_way_ce(sim: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(1/B) Σ_b Σ_i w[b,i] CE(sim[b,i,:], i) and the same on columns, averaged."""
    b, n, _ = sim.shape
    targets = torch.arange(n, device=sim.device).repeat(b)
    w = weights.reshape(-1)
    ce_rows = F.cross_entropy(sim.reshape(b * n, n), targets, reduction="none")
    ce_cols = F.cross_entropy(sim.transpose(1, 2).reshape(b * n, n), targets, reduction="none")
    la = (ce_rows * w).sum() / b
    lb = (ce_cols * w).sum() / b
    return (la + lb) / 2.0


def cta_loss(P, Wd, word_attn, pad_mask, encoder, vit_cls_attn=None):
    bsz, m, _ = P.shape
    # Word side (§3.1): no masking, padded rows/columns kept as negatives.
    alpha = torch.softmax((Wd @ P.transpose(1, 2)) / LOCAL_TEMPERATURE, dim=-1)  # [B,W,M]
    cw = l2n(alpha @ P)  # [B,W,D]
    sw = (Wd @ cw.transpose(1, 2)) / LOCAL_TEMPERATURE  # [B,W,W]
    with torch.no_grad():
        omega = word_weights(word_attn)
    loss_word = weighted_two_way_ce(sw, omega)

    # Patch side (§3.2): -inf on padded word slots.
    gamma = P @ Wd.transpose(1, 2)  # [B,M,W]
    gamma = gamma.masked_fill(pad_mask[:, None, :], float("-inf"))
    beta = torch.softmax(gamma / LOCAL_TEMPERATURE, dim=-1)
    cp = beta @ Wd  # [B,M,D]
    if encoder == "vit_base":
        # ViT: context NOT re-normalised; weights from [CLS] attention.
        with torch.no_grad():
            pi = vit_patch_weights(vit_cls_attn)
    else:
        cp = l2n(cp)
        pi = torch.full((bsz, m), 1.0 / m, dtype=P.dtype, device=P.device)
    sp = (P @ cp.transpose(1, 2)) / LOCAL_TEMPERATURE  # [B,M,M]
    loss_patch = weighted_two_way_ce(sp, pi)
    return loss_patch + loss_word


# --------------------------------------------------------------------------------------
# CPA (§4)
# --------------------------------------------------------------------------------------
@torch.no_grad()
def sinkhorn(q: torch.Tensor, iters: int) -> torch.Tensor:
    """q: [K, B] positive. Returns codes [B, K] (rows sum to 1)."""
    q = q / q.sum()
    k, b = q.shape
    r = torch.full((k,), 1.0 / k, dtype=q.dtype, device=q.device)
    c = torch.full((b,), 1.0 / b, dtype=q.dtype, device=q.device)
    for _ in range(iters):
        u = q.sum(dim=1)
        q = q * (r / u)[:, None]
        q = q * (c / q.sum(dim=0))[None, :]
    return (q / q.sum(dim=0, keepdim=True)).t()


def cpa_loss(v, t, C):
    s_img = v @ C.t()
    s_txt = t @ C.t()
    with torch.no_grad():
        q_img = sinkhorn(torch.exp(s_img.detach() / SINKHORN_EPSILON).t(), SINKHORN_ITERATIONS)
        q_txt = sinkhorn(torch.exp(s_txt.detach() / SINKHORN_EPSILON).t(), SINKHORN_ITERATIONS)
    p_img = torch.softmax(s_img / PROTO_TEMPERATURE, dim=1)
    p_txt = torch.softmax(s_txt / PROTO_TEMPERATURE, dim=1)
    l_i2t = -torch.mean(torch.sum(q_img * torch.log(p_txt), dim=1))
    l_t2i = -torch.mean(torch.sum(q_txt * torch.log(p_img), dim=1))
    return (l_i2t + l_t2i) / 2.0


# --------------------------------------------------------------------------------------
# Whole objective (§5)
# --------------------------------------------------------------------------------------
def mgca_objective(img_emb, report_emb, patch_emb, word_emb, protos_normalised,
                   word_attn, pad_mask, encoder, vit_cls_attn=None):
    v = l2n(img_emb)
    t = l2n(report_emb)
    P = l2n(patch_emb)
    Wd = l2n(word_emb)
    loss_ita, acc1, acc5 = ita_loss(v, t)
    loss_local = cta_loss(P, Wd, word_attn, pad_mask, encoder, vit_cls_attn)
    loss_proto = cpa_loss(v, t, protos_normalised)
    l1, l2, l3 = LAMBDAS
    total = l1 * loss_ita + l2 * loss_local + l3 * loss_proto
    return {"loss_ita": loss_ita, "loss_local": loss_local, "loss_proto": loss_proto,
            "loss_total": total, "acc1": acc1, "acc5": acc5}


def make_leaves(inp: dict):
    """Leaves requiring grad: the four embeddings and the row-normalised prototypes."""
    leaves = {k: inp[k].detach().clone().requires_grad_(True)
              for k in ("img_emb", "report_emb", "patch_emb", "word_emb")}
    with torch.no_grad():
        cn = l2n(inp["prototypes"])
    leaves["prototypes"] = cn.clone().requires_grad_(True)
    return leaves


def run_once(inp: dict, encoder: str):
    leaves = make_leaves(inp)
    out = mgca_objective(leaves["img_emb"], leaves["report_emb"], leaves["patch_emb"],
                         leaves["word_emb"], leaves["prototypes"], inp["word_attn"],
                         inp["word_pad_mask"].bool(), encoder, inp.get("vit_cls_attn"))
    out["loss_total"].backward()
    grads = {k: v.grad for k, v in leaves.items()}
    return out, grads


# --------------------------------------------------------------------------------------
# --check
# --------------------------------------------------------------------------------------
def check(fixture_dir: Path) -> int:
    from safetensors import safe_open

    files = sorted(fixture_dir.glob("*.safetensors"))
    if not files:
        print(f"no fixtures in {fixture_dir}")
        return 2
    failed = False
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["fixture"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        encoder = meta["encoder"]
        hp = meta["hparams"]
        assert abs(hp["ita_temperature"] - ITA_TEMPERATURE) < 1e-12
        assert abs(hp["local_temperature"] - LOCAL_TEMPERATURE) < 1e-12
        assert abs(hp["proto_temperature"] - PROTO_TEMPERATURE) < 1e-12
        assert abs(hp["epsilon"] - SINKHORN_EPSILON) < 1e-12
        assert hp["sinkhorn_iterations"] == SINKHORN_ITERATIONS
        assert tuple(hp["lambdas"]) == LAMBDAS and hp["bidirectional"]
        inp = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
        out, grads = run_once(inp, encoder)
        print(f"== {meta['case']} ({path.name}, encoder={encoder})")
        for key in ("loss_ita", "loss_local", "loss_proto", "loss_total", "acc1", "acc5"):
            ref = tensors["out." + key].reshape(()).double()
            got = out[key].detach().reshape(()).double()
            abs_err = (got - ref).abs().item()
            rel_err = abs_err / max(abs(ref.item()), 1e-30)
            ok = rel_err <= 1e-5
            failed |= not ok
            print(f"  out.{key:<11} ref={ref.item(): .8f} got={got.item(): .8f} "
                  f"abs={abs_err:.3e} rel={rel_err:.3e} {'ok' if ok else 'FAIL'}")
        for key in ("img_emb", "report_emb", "patch_emb", "word_emb", "prototypes"):
            ref = tensors["grad." + key].double()
            got = grads[key].double()
            diff = (got - ref).abs()
            max_abs = diff.max().item()
            max_rel = (diff / ref.abs().clamp_min(1e-30)).max().item()
            viol = (diff - (1e-6 + 1e-4 * ref.abs())).max().item()
            ok = viol <= 0
            failed |= not ok
            print(f"  grad.{key:<10} max|ref|={ref.abs().max().item():.3e} max_abs={max_abs:.3e} "
                  f"max_rel={max_rel:.3e} worst(abs-tol)={viol:.3e} {'ok' if ok else 'FAIL'}")
    print("ALL PASS" if not failed else "SOME CHECKS FAILED")
    return 1 if failed else 0


# --------------------------------------------------------------------------------------
# --bench
# --------------------------------------------------------------------------------------
def random_inputs(encoder: str, B=72, D=128, K=500, W=111, H=12, M=196, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, W + 1, (B,), generator=g)  # 10..111 inclusive
    slot = torch.arange(W)[None, :]
    pad = (slot >= lengths[:, None]).float()
    word_attn = torch.rand(B, W, generator=g) + 1e-3
    word_attn = torch.where(slot < (lengths[:, None] - 1), word_attn, torch.zeros(()))
    inp = {
        "img_emb": torch.randn(B, D, generator=g),
        "report_emb": torch.randn(B, D, generator=g),
        "patch_emb": torch.randn(B, M, D, generator=g),
        "word_emb": torch.randn(B, W, D, generator=g),
        "word_attn": word_attn,
        "word_pad_mask": pad,
        "prototypes": torch.randn(K, D, generator=g),
    }
    if encoder == "vit_base":
        inp["vit_cls_attn"] = torch.softmax(torch.randn(B, H, M, generator=g), dim=-1)
    return inp


def bench(threads: int, min_iters: int, min_seconds: float, warmup: int = 3) -> int:
    torch.set_num_threads(threads)
    cases = [("vit_b72", "vit_base", 196), ("resnet_b72", "resnet_50", 361)]
    for name, encoder, m in cases:
        inp = random_inputs(encoder, M=m)
        for _ in range(warmup):
            run_once(inp, encoder)
        times = []
        start = time.perf_counter()
        while len(times) < min_iters or (time.perf_counter() - start) < min_seconds:
            t0 = time.perf_counter()
            out, _ = run_once(inp, encoder)
            times.append((time.perf_counter() - t0) * 1e3)
        assert torch.isfinite(out["loss_total"]).item()
        print(json.dumps({
            "case": name,
            "median_ms": round(statistics.median(times), 3),
            "mean_ms": round(statistics.fmean(times), 3),
            "iters": len(times),
            "threads": threads,
            "torch": torch.__version__,
        }), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", metavar="DIR", type=Path, help="validate against reference fixtures")
    mode.add_argument("--bench", action="store_true", help="time forward+backward on CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.check is not None:
        torch.set_num_threads(args.threads)
        return check(args.check)
    return bench(args.threads, args.min_iters, args.min_seconds)


if __name__ == "__main__":
    sys.exit(main())
