#!/usr/bin/env python3
"""Reference outputs of MGCA's ResNet image encoder (`ImageEncoder.resnet_forward`, mgca/models/backbones/encoder.py), run by torchvision.

The network is torchvision's own `ResNet`/`Bottleneck` code. For the committed case it is
narrowed (stem width 4 instead of 64, blocks [2, 1, 2, 1] instead of [3, 4, 6, 3]) by
rebuilding the stem and the four stages with torchvision's `_make_layer`, so every key and
every layer rule (v1.5 stride on the 3x3 conv, projection shortcuts) is torchvision's.
BatchNorm affine parameters and running statistics are randomised so eval mode is not the
identity. The forward is MGCA's: bilinear up-sampling 224 -> 299 with align_corners=True,
global = average-pooled layer4, local = layer3 flattened row-major into tokens.

The input is a formula (see `formula_input`), so no image file is committed; the Rust test
computes the same values.

    python golden/pytorch/resnet/make_resnet.py                 # the small committed case
    python golden/pytorch/resnet/make_resnet.py --full DIR      # full ResNet-50, not committed
"""
import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.resnet import Bottleneck, ResNet, resnet50


def formula_input(n: int, size: int = 224) -> torch.Tensor:
    """x[b, c, i, j] = sin(0.05 (c + 1) i + 0.07 j + b) * cos(0.03 (i + j) (b + 1)), in float64
    then rounded to float32."""
    b, c, i, j = np.meshgrid(np.arange(n), np.arange(3), np.arange(size), np.arange(size), indexing="ij")
    x = np.sin(0.05 * (c + 1) * i + 0.07 * j + b) * np.cos(0.03 * (i + j) * (b + 1))
    return torch.from_numpy(x.astype(np.float32))


def small_resnet(width: int, blocks: list[int]) -> ResNet:
    net = ResNet(Bottleneck, [1, 1, 1, 1])
    net.inplanes = width
    net.conv1 = torch.nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = torch.nn.BatchNorm2d(width)
    net.layer1 = net._make_layer(Bottleneck, width, blocks[0])
    net.layer2 = net._make_layer(Bottleneck, width * 2, blocks[1], stride=2)
    net.layer3 = net._make_layer(Bottleneck, width * 4, blocks[2], stride=2)
    net.layer4 = net._make_layer(Bottleneck, width * 8, blocks[3], stride=2)
    net.fc = torch.nn.Linear(width * 8 * Bottleneck.expansion, 10)
    return net


def randomise_batchnorm(net: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)


def mgca_forward(net: ResNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer2(net.layer1(x))
    local = net.layer3(x)
    glob = torch.flatten(net.avgpool(net.layer4(local)), 1)
    return glob, local.flatten(2).transpose(1, 2).contiguous()


def run(net: ResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        net.eval()
        out["eval.global"], out["eval.local"] = mgca_forward(net, x)
        net.train()
        out["train.global"], out["train.local"] = mgca_forward(net, x)
        out["after.bn1.running_mean"] = net.bn1.running_mean.clone()
        out["after.bn1.running_var"] = net.bn1.running_var.clone()
        last = net.layer4[-1].bn3
        out["after.layer4.last.bn3.running_mean"] = last.running_mean.clone()
        out["after.layer4.last.bn3.running_var"] = last.running_var.clone()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", type=Path, help="write the full ResNet-50 case into this folder")
    args = ap.parse_args()
    torch.manual_seed(11)
    if args.full:
        net, n, out_dir = resnet50(), 2, args.full
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        net, n, out_dir = small_resnet(4, [2, 1, 2, 1]), 2, Path(__file__).parent
    randomise_batchnorm(net)
    weights = {k: v.clone().contiguous() for k, v in net.state_dict().items()}
    x = formula_input(n)
    outputs = run(net, x)
    save_file(weights, str(out_dir / "resnet_weights.safetensors"))
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(out_dir / "resnet_outputs.safetensors"))
    if args.full:
        save_file({"input": x}, str(out_dir / "resnet_input.safetensors"))
    print({k: tuple(v.shape) for k, v in outputs.items()})


if __name__ == "__main__":
    main()
