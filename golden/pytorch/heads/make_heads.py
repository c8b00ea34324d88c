#!/usr/bin/env python3
"""Reference outputs of MGCA's projection heads (`GlobalEmbedding`, `LocalEmbedding`, mgca/models/backbones/encoder.py), computed with PyTorch.

The heads are built exactly as the spec describes them:
    global: Linear(D->H) -> BatchNorm1d(H) -> ReLU -> Linear(H->d) -> BatchNorm1d(d, affine=False)
    local:  the same with Conv1d(k=1) over (B, D, N), so BatchNorm pools batch x tokens
Writes heads.safetensors next to this file: the state dicts (keys `global.head.*`,
`local.head.*`, torch layouts; `num_batches_tracked` omitted), the inputs, the train-mode
outputs, the running statistics after that one train step, and the eval-mode outputs.

    python golden/pytorch/heads/make_heads.py      # needs torch, safetensors
"""
from pathlib import Path

import torch
from safetensors.torch import save_file

D, H, d = 16, 24, 8


def head(conv: bool) -> torch.nn.Sequential:
    lin = (lambda i, o: torch.nn.Conv1d(i, o, 1)) if conv else torch.nn.Linear
    return torch.nn.Sequential(lin(D, H), torch.nn.BatchNorm1d(H), torch.nn.ReLU(inplace=True),
                               lin(H, d), torch.nn.BatchNorm1d(d, affine=False))


def main() -> None:
    torch.manual_seed(7)
    g, l = head(False), head(True)
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for m in (g, l):
            m[1].weight.uniform_(0.5, 1.5)
            m[1].bias.uniform_(-0.3, 0.3)
            m[1].running_mean.uniform_(-0.2, 0.2)
            m[1].running_var.uniform_(0.5, 2.0)
            m[4].running_mean.uniform_(-0.2, 0.2)
            m[4].running_var.uniform_(0.5, 2.0)
    state = {f"global.head.{k}": v.clone() for k, v in g.state_dict().items() if "num_batches" not in k}
    state.update({f"local.head.{k}": v.clone() for k, v in l.state_dict().items() if "num_batches" not in k})

    xg = torch.randn(6, D)
    xl = torch.randn(4, 5, D)
    xl[3, 3:] = 0.0  # padding word slots: zero vectors that still enter the statistics

    g.train(), l.train()
    out = {"in.global": xg, "in.local": xl,
           "train.global": g(xg), "train.local": l(xl.transpose(1, 2)).transpose(1, 2)}
    for name, m in (("global", g), ("local", l)):
        out[f"after.{name}.head.1.running_mean"] = m[1].running_mean.clone()
        out[f"after.{name}.head.1.running_var"] = m[1].running_var.clone()
        out[f"after.{name}.head.4.running_mean"] = m[4].running_mean.clone()
        out[f"after.{name}.head.4.running_var"] = m[4].running_var.clone()
    g.eval(), l.eval()
    out["eval.global"] = g(xg)
    out["eval.local"] = l(xl.transpose(1, 2)).transpose(1, 2)
    tensors = {k: v.detach().contiguous().float() for k, v in {**state, **out}.items()}
    save_file(tensors, str(Path(__file__).with_name("heads.safetensors")),
              metadata={"generator": f"golden/pytorch/heads/make_heads.py (PyTorch {torch.__version__}, CPU, float32)"})


if __name__ == "__main__":
    main()
