#!/usr/bin/env python3
"""Plain PyTorch implementation of the MGCA objective (ITA + CTA + CPA), written from
spec/losses.md, used as (a) a cross-check against the reference fixtures and (b) a CPU
timing baseline for the Rust implementation (benches/losses.rs).

Usage:
    python benches/losses_pytorch.py --check /work/shared/fixtures/losses
    python benches/losses_pytorch.py --make-cases golden/pytorch/losses
    python benches/losses_pytorch.py --bench [--threads 2] [--min-iters 20] [--min-seconds 10]

--check DIR       recompute every DIR/*.safetensors case with the hyper-parameters stored in
                  its metadata (key `fixture`, field `hparams`) and compare outputs/gradients
                  with the fixture tolerances (losses 1e-5 rel, gradients 1e-6 abs + 1e-4 rel).
--make-cases DIR  write extra cases (other sizes / hyper-parameters) in the fixtures' layout,
                  plus DIR/index.json and DIR/README.md. Deterministic (fixed seeds).

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

# Hyper-parameters of the published configuration (the reference's `MGCA.forward`, mgca/models/mgca/mgca_module.py at 680fe4a6ee0c). Every objective function
# takes an `hparams` dict with exactly these keys; --check reads it from each fixture.
REFERENCE_HPARAMS = {
    "ita_temperature": 0.07,
    "local_temperature": 0.1,
    "proto_temperature": 0.2,
    "epsilon": 0.05,
    "sinkhorn_iterations": 3,
    "lambdas": [1, 1, 1],
    "bidirectional": True,
}
HPARAM_KEYS = tuple(REFERENCE_HPARAMS)
NORM_EPS = 1e-12


def validate_hparams(hp: dict) -> dict:
    missing = [k for k in HPARAM_KEYS if k not in hp]
    if missing:
        raise KeyError(f"hparams missing {missing}")
    if len(hp["lambdas"]) != 3:
        raise ValueError(f"hparams.lambdas must have 3 entries, got {hp['lambdas']}")
    if not isinstance(hp["bidirectional"], bool):
        raise TypeError("hparams.bidirectional must be a bool")
    if int(hp["sinkhorn_iterations"]) != hp["sinkhorn_iterations"] or hp["sinkhorn_iterations"] < 0:
        raise ValueError("hparams.sinkhorn_iterations must be a non-negative integer")
    return hp


def l2n(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||_2, 1e-12) over the last dimension."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(NORM_EPS)


# --------------------------------------------------------------------------------------
# ITA
# --------------------------------------------------------------------------------------
def ita_loss(v: torch.Tensor, t: torch.Tensor, temperature: float):
    b = v.shape[0]
    s = (v @ t.t()) / temperature
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
# CTA
# --------------------------------------------------------------------------------------
def word_weights(word_attn: torch.Tensor) -> torch.Tensor:
    """Word weights: clip non-zero entries to their 10/90 % linear quantiles, renormalise."""
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
    """Patch weights (ViT): head mean, clip over all patches to 10/90 % quantiles, renormalise."""
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


def cta_loss(P, Wd, word_attn, pad_mask, encoder, temperature: float, bidirectional: bool,
             vit_cls_attn=None):
    bsz, m, _ = P.shape
    # Word side: no masking, padded rows/columns kept as negatives.
    alpha = torch.softmax((Wd @ P.transpose(1, 2)) / temperature, dim=-1)  # [B,W,M]
    cw = l2n(alpha @ P)  # [B,W,D]
    sw = (Wd @ cw.transpose(1, 2)) / temperature  # [B,W,W]
    with torch.no_grad():
        omega = word_weights(word_attn)
    loss_word = weighted_two_way_ce(sw, omega)
    if not bidirectional:
        return loss_word  # with bidirectional = False the local loss is L_word alone

    # Patch side: -inf on padded word slots.
    gamma = P @ Wd.transpose(1, 2)  # [B,M,W]
    gamma = gamma.masked_fill(pad_mask[:, None, :], float("-inf"))
    beta = torch.softmax(gamma / temperature, dim=-1)
    cp = beta @ Wd  # [B,M,D]
    if encoder == "vit_base":
        # ViT: context NOT re-normalised; weights from [CLS] attention.
        with torch.no_grad():
            pi = vit_patch_weights(vit_cls_attn)
    else:
        cp = l2n(cp)
        pi = torch.full((bsz, m), 1.0 / m, dtype=P.dtype, device=P.device)
    sp = (P @ cp.transpose(1, 2)) / temperature  # [B,M,M]
    loss_patch = weighted_two_way_ce(sp, pi)
    return loss_patch + loss_word


# --------------------------------------------------------------------------------------
# CPA
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


def cpa_loss(v, t, C, temperature: float, epsilon: float, iters: int):
    s_img = v @ C.t()
    s_txt = t @ C.t()
    with torch.no_grad():
        q_img = sinkhorn(torch.exp(s_img.detach() / epsilon).t(), iters)
        q_txt = sinkhorn(torch.exp(s_txt.detach() / epsilon).t(), iters)
    p_img = torch.softmax(s_img / temperature, dim=1)
    p_txt = torch.softmax(s_txt / temperature, dim=1)
    l_i2t = -torch.mean(torch.sum(q_img * torch.log(p_txt), dim=1))
    l_t2i = -torch.mean(torch.sum(q_txt * torch.log(p_img), dim=1))
    return (l_i2t + l_t2i) / 2.0


# --------------------------------------------------------------------------------------
# Whole objective
# --------------------------------------------------------------------------------------
def mgca_objective(img_emb, report_emb, patch_emb, word_emb, protos_normalised,
                   word_attn, pad_mask, encoder, hparams: dict, vit_cls_attn=None):
    """Returns the logged quantities: loss_ita/local/proto are already multiplied by their
    lambda (as the reference logs them) and loss_total is their sum."""
    hp = validate_hparams(hparams)
    v = l2n(img_emb)
    t = l2n(report_emb)
    P = l2n(patch_emb)
    Wd = l2n(word_emb)
    loss_ita, acc1, acc5 = ita_loss(v, t, hp["ita_temperature"])
    loss_local = cta_loss(P, Wd, word_attn, pad_mask, encoder, hp["local_temperature"],
                          hp["bidirectional"], vit_cls_attn)
    loss_proto = cpa_loss(v, t, protos_normalised, hp["proto_temperature"], hp["epsilon"],
                          int(hp["sinkhorn_iterations"]))
    l1, l2, l3 = (float(x) for x in hp["lambdas"])
    loss_ita = l1 * loss_ita
    loss_local = l2 * loss_local
    loss_proto = l3 * loss_proto
    total = loss_ita + loss_local + loss_proto
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


def run_once(inp: dict, encoder: str, hparams: dict):
    leaves = make_leaves(inp)
    out = mgca_objective(leaves["img_emb"], leaves["report_emb"], leaves["patch_emb"],
                         leaves["word_emb"], leaves["prototypes"], inp["word_attn"],
                         inp["word_pad_mask"].bool(), encoder, hparams,
                         inp.get("vit_cls_attn") if encoder == "vit_base" else None)
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
        hp = validate_hparams(meta["hparams"])
        inp = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
        out, grads = run_once(inp, encoder, hp)
        print(f"== {meta['case']} ({path.name}, encoder={encoder})")
        print(f"  hparams {json.dumps(hp)}")
        # The metadata's `values` must be the stored out.* tensors (index.json is built from it).
        for key, val in meta.get("values", {}).items():
            stored = tensors[key].reshape(()).item()
            if stored != val:
                failed = True
                print(f"  metadata values[{key}]={val!r} != tensor {stored!r} FAIL")
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
# --make-cases
# --------------------------------------------------------------------------------------
HEADS = 12

# (case, seed, B, M, W, D, K, encoder, hparams). Sizes and hyper-parameters the reference
# fixtures do not cover (odd batch sizes, K > B and K < B, non-default temperatures, Sinkhorn
# epsilon/iterations and lambdas, bidirectional = False).
EXTRA_CASES = [
    ("unseen_vit_b5", 101, 5, 16, 12, 8, 7, "vit_base", dict(REFERENCE_HPARAMS)),
    ("unseen_resnet_b10", 102, 10, 25, 20, 24, 30, "resnet_50", dict(REFERENCE_HPARAMS)),
    ("unseen_vit_hparams", 103, 8, 36, 30, 32, 50, "vit_base", {
        "ita_temperature": 0.1,
        "local_temperature": 0.07,
        "proto_temperature": 0.15,
        "epsilon": 0.03,
        "sinkhorn_iterations": 5,
        "lambdas": [0.5, 2.0, 1.5],
        "bidirectional": True,
    }),
    ("unseen_resnet_wordonly", 104, 7, 49, 25, 16, 20, "resnet_50",
     dict(REFERENCE_HPARAMS, bidirectional=False)),
]

OUT_KEYS = ("loss_ita", "loss_local", "loss_proto", "loss_total", "acc1", "acc5")
GRAD_KEYS = ("img_emb", "patch_emb", "report_emb", "word_emb", "prototypes")


def fixture_like_inputs(seed: int, B: int, M: int, W: int, D: int, K: int, H: int = HEADS):
    """Random inputs with the statistics of the reference fixtures:
    * embeddings and prototypes: standard normal;
    * word lengths uniform in [1, W], at least one sample of full length W;
    * word_pad_mask: 1 on slots >= length;
    * word_attn: U(0,1) + 0.01 on every real slot (so never exactly 0), exactly 0 on padding
      (as in the fixtures, where the last real slot is *not* zeroed);
    * vit_cls_attn: per (sample, head) a distribution over the M patches, U(0,1) normalised
      to sum 1 (log-values have std ~1 and skew ~-2, as in the fixtures).
    """
    g = torch.Generator().manual_seed(seed)
    f32 = torch.float32
    lengths = torch.randint(1, W + 1, (B,), generator=g)
    if not bool((lengths == W).any()):
        lengths[int(torch.randint(0, B, (1,), generator=g))] = W
    slot = torch.arange(W)[None, :]
    pad = slot >= lengths[:, None]
    inp = {
        "img_emb": torch.randn(B, D, generator=g, dtype=f32),
        "patch_emb": torch.randn(B, M, D, generator=g, dtype=f32),
        "report_emb": torch.randn(B, D, generator=g, dtype=f32),
        "word_emb": torch.randn(B, W, D, generator=g, dtype=f32),
    }
    word_attn = torch.rand(B, W, generator=g, dtype=f32) + 0.01
    inp["word_attn"] = torch.where(pad, torch.zeros((), dtype=f32), word_attn)
    inp["word_pad_mask"] = pad.to(f32)
    u = torch.rand(B, H, M, generator=g, dtype=f32).clamp_min(1e-7)
    inp["vit_cls_attn"] = u / u.sum(dim=-1, keepdim=True)
    inp["prototypes"] = torch.randn(K, D, generator=g, dtype=f32)
    return inp, [int(x) for x in lengths]


def cases_readme(out_dir: Path, rows: list) -> str:
    table = "\n".join(
        f"| {m['case']} | {m['seed']} | {m['B']} | {m['P']} | {m['W']} | {m['D']} | {m['K']} | "
        f"{m['encoder']} | {m['hparams']['ita_temperature']} / {m['hparams']['local_temperature']} / "
        f"{m['hparams']['proto_temperature']} | {m['hparams']['epsilon']} / "
        f"{m['hparams']['sinkhorn_iterations']} | {m['hparams']['lambdas']} | "
        f"{str(m['hparams']['bidirectional']).lower()} |"
        for m in rows)
    return f"""# Extra MGCA loss cases generated with PyTorch

These cases were **not** produced by the reference implementation. They were generated by our
own PyTorch implementation of `spec/losses.md` (`benches/losses_pytorch.py`), which reproduces
every reference fixture in `/work/shared/fixtures/losses` within the fixture tolerances
(`--check`). They test the Rust port on sizes and hyper-parameters the reference fixtures do not
cover: other batch sizes (B = 5, the smallest that top-5 accuracy allows, 7, 8 and 10) and
sizes M, W, D, K, non-default temperatures, Sinkhorn epsilon and iteration count, lambdas
other than 1, and `bidirectional = false` (local loss = word side only).

The layout is exactly the reference fixtures' (see `/work/shared/fixtures/losses/README.md`):
float32 `in.*`, `out.*` and `grad.*` tensors, and the case's JSON (sizes, seed, word lengths,
`hparams`, scalar `values`, plus `generator`) in the safetensors metadata key `fixture` and in
`index.json`. `out.loss_ita`, `out.loss_local` and `out.loss_proto` are already multiplied by
their lambda and `out.loss_total` is their sum (as the reference logs them). `grad.prototypes`
is the gradient w.r.t. the row-normalised prototypes. `in.vit_cls_attn` is present for both
encoders (unused on the ResNet branch). Use the fixtures' tolerances: losses 1e-5 relative,
gradients 1e-6 absolute + 1e-4 relative.

| case | seed | B | M | W | D | K | encoder | τ ita / local / proto | ε / iters | lambdas | bidirectional |
|---|---|---|---|---|---|---|---|---|---|---|---|
{table}

Inputs mimic the reference fixtures' statistics: gaussian embeddings and prototypes, word
lengths uniform in [1, W] with at least one full-length sample per case, `word_attn` =
U(0,1) + 0.01 on real word slots and exactly 0 on padding, `word_pad_mask` = 1 after each
sample's length, `vit_cls_attn` = U(0,1) normalised over the patches of each head.

Regenerate (deterministic; float32, CPU) from the repository root, then verify:

    /root/.cache/torch-venv/bin/python benches/losses_pytorch.py --make-cases golden/pytorch/losses
    /root/.cache/torch-venv/bin/python benches/losses_pytorch.py --check golden/pytorch/losses
"""


def make_cases(out_dir: Path) -> int:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    generator = f"benches/losses_pytorch.py (PyTorch {torch.__version__}, float32, CPU)"
    index = []
    for case, seed, B, M, W, D, K, encoder, hp in EXTRA_CASES:
        validate_hparams(hp)
        assert B >= 5, "acc5 needs B >= 5"
        inp, lengths = fixture_like_inputs(seed, B, M, W, D, K)
        out, grads = run_once(inp, encoder, hp)
        tensors = {f"in.{k}": v.contiguous() for k, v in inp.items()}
        for k in OUT_KEYS:
            tensors[f"out.{k}"] = out[k].detach().reshape(1).to(torch.float32).contiguous()
        for k in GRAD_KEYS:
            tensors[f"grad.{k}"] = grads[k].detach().to(torch.float32).contiguous()
        for k, v in tensors.items():
            assert v.dtype == torch.float32, k
            assert bool(torch.isfinite(v).all()), f"{case}: non-finite {k}"
        meta = {
            "case": case, "seed": seed, "B": B, "P": M, "W": W, "D": D, "K": K,
            "heads": HEADS, "encoder": encoder, "word_lengths": lengths, "hparams": hp,
            "values": {f"out.{k}": tensors[f"out.{k}"].item() for k in OUT_KEYS},
            "generator": generator,
        }
        path = out_dir / f"{case}.safetensors"
        save_file(tensors, str(path), metadata={"fixture": json.dumps(meta)})
        path.chmod(0o644)  # safetensors writes 0600
        index.append(meta)
        print(f"wrote {path} ({path.stat().st_size} bytes) total={meta['values']['out.loss_total']:.6f}")
    (out_dir / "index.json").write_text(json.dumps(index, indent=1))
    (out_dir / "README.md").write_text(cases_readme(out_dir, index))
    print(f"wrote {out_dir / 'index.json'} and {out_dir / 'README.md'}")
    return 0


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
            run_once(inp, encoder, REFERENCE_HPARAMS)
        times = []
        start = time.perf_counter()
        while len(times) < min_iters or (time.perf_counter() - start) < min_seconds:
            t0 = time.perf_counter()
            out, _ = run_once(inp, encoder, REFERENCE_HPARAMS)
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
    mode.add_argument("--make-cases", metavar="OUTDIR", type=Path,
                      help="write extra cases (fixture layout) + index.json + README.md")
    mode.add_argument("--bench", action="store_true", help="time forward+backward on CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.check is not None:
        torch.set_num_threads(args.threads)
        return check(args.check)
    if args.make_cases is not None:
        torch.set_num_threads(args.threads)
        return make_cases(args.make_cases)
    return bench(args.threads, args.min_iters, args.min_seconds)


if __name__ == "__main__":
    sys.exit(main())
