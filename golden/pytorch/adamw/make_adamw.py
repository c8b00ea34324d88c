"""torch.optim.AdamW as the reference configures it (betas 0.9/0.999, eps 1e-8, weight decay
0.05, one group), stepped 6 times at the schedule's learning rates with fixed gradients; the
second parameter has no gradient in the first 3 steps (the frozen prototypes), so its step
count starts late. Run: python make_adamw.py (writes expected.json here)."""
import json
import math
import pathlib

import torch

HERE = pathlib.Path(__file__).parent


def lr(s, T=10, W=4, hi=2e-3, lo=1e-8):
    if s < W:
        return lo + (hi - lo) * s / W
    return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * (s - W) / (T - W)))


def main():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 4, generator=g))
    b = torch.nn.Parameter(torch.randn(5, generator=g))
    init = {"a": a.detach().flatten().tolist(), "b": b.detach().flatten().tolist()}
    opt = torch.optim.AdamW([a, b], lr=1e-8, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    grads = []
    for step in range(6):
        ga = torch.randn(3, 4, generator=g)
        gb = torch.randn(5, generator=g) * 0.1
        a.grad = ga.clone()
        b.grad = gb.clone() if step >= 3 else None
        for group in opt.param_groups:
            group["lr"] = lr(step)
        opt.step()
        grads.append({"a": ga.flatten().tolist(), "b": gb.flatten().tolist() if step >= 3 else None, "lr": lr(step)})
    out = {
        "torch": torch.__version__,
        "init": init,
        "steps": grads,
        "final": {"a": a.detach().flatten().tolist(), "b": b.detach().flatten().tolist()},
        "b_step_count": int(opt.state[b]["step"]),
    }
    (HERE / "expected.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
