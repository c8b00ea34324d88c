#!/usr/bin/env python3
"""Small checkpoints in the exact file formats and key layouts MGCA users load.

Every file is written by `torch.save` itself (torch 2.15), so the container (zip archive or
the legacy pre-1.6 stream) and the pickle are PyTorch's own; only the sizes are tiny.

- `deit_style.pth` -- like `deit_base_patch16_224-b5f2ef4d.pth`: a zip archive holding
  {"model": state_dict} with timm key names and the `head.*` classifier; pickle protocol 4.
  A ViT of width 8, depth 2, patch 16 at 224 px (197 tokens).
- `bio_clinicalbert_style.bin` -- like Bio_ClinicalBERT's `pytorch_model.bin` (2019): the
  legacy (non-zip) format, a BertForPreTraining state dict: `bert.` prefix, 12 layers,
  token-type table, pooler, and the `cls.*` pre-training heads, whose decoder weight shares its
  storage with the word embeddings (tied weights); width 8, 2 heads.
- `torchvision_style.pth` -- a torchvision ResNet state dict (zip), narrowed (width 4, blocks
  [1, 1, 1, 1]), with `num_batches_tracked` buffers and the `fc` classifier.
- `mgca_vit_style.ckpt`, `mgca_resnet_style.ckpt` -- PyTorch Lightning checkpoints of the MGCA
  module at the smoke sizes of `MgcaConfig::smoke_for` (ViT and ResNet): epoch, global_step,
  version, callbacks, an AdamW `optimizer_states`, `lr_schedulers`, `hyper_parameters` (an
  unknown dict subclass, as Lightning's AttributeDict is to a reader without Lightning), and
  `state_dict` with every prefix of the reference's `MGCA` module, the unused cross-attention and
  patch/word attention layers included.
- `expected.json` -- for each file, the tensors a correct import must produce, under mgca-rs
  names: `{file stem: {name: [shape, fnv1a64 of the float32 little-endian bytes]}}`, so the
  Rust test checks decoding and key mapping bit for bit without a second copy of the data.

    python golden/pytorch/checkpoints/make_checkpoints.py   # needs torch, safetensors
"""
from collections import OrderedDict
from pathlib import Path

import torch
import json

HERE = Path(__file__).parent
G = torch.Generator().manual_seed(5)


def r(*shape):
    return torch.randn(*shape, generator=G)


def vit_state(dim, depth, patch, tokens, mlp, head=None):
    s = OrderedDict()
    s["cls_token"] = r(1, 1, dim)
    s["pos_embed"] = r(1, tokens, dim)
    s["patch_embed.proj.weight"] = r(dim, 3, patch, patch)
    s["patch_embed.proj.bias"] = r(dim)
    for i in range(depth):
        p = f"blocks.{i}."
        for n in ["norm1", "norm2"]:
            s[p + n + ".weight"], s[p + n + ".bias"] = r(dim), r(dim)
        s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"] = r(3 * dim, dim), r(3 * dim)
        s[p + "attn.proj.weight"], s[p + "attn.proj.bias"] = r(dim, dim), r(dim)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = r(mlp, dim), r(mlp)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = r(dim, mlp), r(dim)
    s["norm.weight"], s["norm.bias"] = r(dim), r(dim)
    if head:
        s["head.weight"], s["head.bias"] = r(head, dim), r(head)
    return s


def bert_state(vocab, dim, layers, inter, positions, cross=False, token_type=True):
    s = OrderedDict()
    s["embeddings.word_embeddings.weight"] = r(vocab, dim)
    s["embeddings.position_embeddings.weight"] = r(positions, dim)
    if token_type:
        s["embeddings.token_type_embeddings.weight"] = r(2, dim)
    s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"] = r(dim), r(dim)
    s["embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    for i in range(layers):
        p = f"encoder.layer.{i}."
        subs = ["attention"] + (["crossattention"] if cross else [])
        for a in subs:
            for n in ["query", "key", "value"]:
                s[p + f"{a}.self.{n}.weight"], s[p + f"{a}.self.{n}.bias"] = r(dim, dim), r(dim)
            s[p + f"{a}.output.dense.weight"], s[p + f"{a}.output.dense.bias"] = r(dim, dim), r(dim)
            s[p + f"{a}.output.LayerNorm.weight"], s[p + f"{a}.output.LayerNorm.bias"] = r(dim), r(dim)
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = r(inter, dim), r(inter)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = r(dim, inter), r(dim)
        s[p + "output.LayerNorm.weight"], s[p + "output.LayerNorm.bias"] = r(dim), r(dim)
    return s


def bn(s, p, c, affine=True):
    if affine:
        s[p + "weight"], s[p + "bias"] = r(c), r(c)
    s[p + "running_mean"], s[p + "running_var"] = r(c), torch.rand(c, generator=G) + 0.5
    s[p + "num_batches_tracked"] = torch.tensor(17)


def resnet_state(width, fc=None):
    s = OrderedDict()
    s["conv1.weight"] = r(width, 3, 7, 7)
    bn(s, "bn1.", width)
    inplanes = width
    for stage in range(4):
        planes, out = width << stage, (width << stage) * 4
        p = f"layer{stage + 1}.0."
        s[p + "conv1.weight"] = r(planes, inplanes, 1, 1)
        bn(s, p + "bn1.", planes)
        s[p + "conv2.weight"] = r(planes, planes, 3, 3)
        bn(s, p + "bn2.", planes)
        s[p + "conv3.weight"] = r(out, planes, 1, 1)
        bn(s, p + "bn3.", out)
        s[p + "downsample.0.weight"] = r(out, inplanes, 1, 1)
        bn(s, p + "downsample.1.", out)
        inplanes = out
    if fc:
        s["fc.weight"], s["fc.bias"] = r(fc, inplanes), r(fc)
    return s


def head_state(s, prefix, d_in, hidden, d_out, conv):
    s[prefix + "0.weight"] = r(hidden, d_in, 1) if conv else r(hidden, d_in)
    s[prefix + "0.bias"] = r(hidden)
    bn(s, prefix + "1.", hidden)
    s[prefix + "3.weight"] = r(d_out, hidden, 1) if conv else r(d_out, hidden)
    s[prefix + "3.bias"] = r(d_out)
    bn(s, prefix + "4.", d_out, affine=False)


class AttributeDict(dict):
    """Stands in for Lightning's AttributeDict: a class the Rust reader does not know."""


def mgca_checkpoint(image_state, image_global, image_local, conv_local):
    hidden, d, k = 64, 32, 16
    s = OrderedDict()
    for key, v in image_state.items():
        s["img_encoder_q.model." + key] = v
    head_state(s, "img_encoder_q.global_embed.head.", image_global, hidden, d, False)
    head_state(s, "img_encoder_q.local_embed.head.", image_local, hidden, d, conv_local)
    for key, v in bert_state(128, 32, 2, 64, 32, cross=True, token_type=False).items():
        s["text_encoder_q.model." + key] = v
    head_state(s, "text_encoder_q.global_embed.head.", 32, hidden, d, False)
    head_state(s, "text_encoder_q.local_embed.head.", 32, hidden, d, True)
    for layer in ["patch_local_atten_layer.", "word_local_atten_layer."]:
        s[layer + "in_proj_weight"], s[layer + "in_proj_bias"] = r(3 * d, d), r(3 * d)
        s[layer + "out_proj.weight"], s[layer + "out_proj.bias"] = r(d, d), r(d)
    s["prototype_layer.weight"] = r(k, d)
    params = [v for v in s.values() if v.is_floating_point()]
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "1.5.9",
        "state_dict": s,
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(1.25), "best_model_path": "x.ckpt"}},
        "optimizer_states": [{
            "state": {i: {"step": torch.tensor(120.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.ones_like(p)}
                      for i, p in enumerate(params[:3])},
            "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05,
                              "amsgrad": False, "params": list(range(len(params)))}],
        }],
        "lr_schedulers": [{"last_epoch": 3, "_step_count": 121, "base_lrs": [2e-5]}],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(img_encoder="vit_base", emb_dim=128, softmax_temperature=0.07,
                                          lambda_1=1.0, gpus=[0, 1], learning_rate=2e-5),
    }


def fnv1a64(t: torch.Tensor) -> str:
    h = 0xCBF29CE484222325
    for b in t.float().contiguous().numpy().tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main() -> None:
    expected = {}
    deit = vit_state(8, 2, 16, 197, 16, head=10)
    torch.save({"model": deit}, HERE / "deit_style.pth", pickle_protocol=4)
    expected.update({f"deit_style/image.{k}": v for k, v in deit.items() if not k.startswith("head.")})

    bert = bert_state(40, 8, 12, 16, 24)
    full = OrderedDict(("bert." + k, v) for k, v in bert.items())
    full["bert.pooler.dense.weight"], full["bert.pooler.dense.bias"] = r(8, 8), r(8)
    full["cls.predictions.bias"] = r(40)
    full["cls.predictions.transform.dense.weight"] = r(8, 8)
    full["cls.predictions.decoder.weight"] = full["bert.embeddings.word_embeddings.weight"]  # tied
    full["cls.seq_relationship.weight"] = r(2, 8)
    torch.save(full, HERE / "bio_clinicalbert_style.bin", _use_new_zipfile_serialization=False)
    keep = [k for k in bert if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < 6]
    expected.update({f"bio_clinicalbert_style/text.{k}": bert[k] for k in keep
                     if "token_type" not in k and "position_ids" not in k})

    tv = resnet_state(4, fc=10)
    torch.save(tv, HERE / "torchvision_style.pth")
    expected.update({f"torchvision_style/image.{k}": v.float() for k, v in tv.items() if not k.startswith("fc.")})

    renames = [("img_encoder_q.model.", "image."), ("img_encoder_q.global_embed.head.", "image_global."),
               ("img_encoder_q.local_embed.head.", "image_local."), ("text_encoder_q.model.", "text."),
               ("text_encoder_q.global_embed.head.", "text_global."),
               ("text_encoder_q.local_embed.head.", "text_local."), ("prototype_layer.weight", "prototypes")]
    for name, image, (g, l, conv) in [("mgca_vit_style", vit_state(32, 2, 8, 17, 64), (32, 32, True)),
                                      ("mgca_resnet_style", resnet_state(4), (128, 64, True))]:
        ckpt = mgca_checkpoint(image, g, l, conv)
        torch.save(ckpt, HERE / f"{name}.ckpt")
        for k, v in ckpt["state_dict"].items():
            if "atten_layer" in k or "crossattention" in k or "position_ids" in k:
                continue
            for a, b in renames:
                if k.startswith(a):
                    expected[f"{name}/{b}{k[len(a):]}"] = v
                    break
    table = {}
    for k, v in expected.items():
        stem, name = k.split("/", 1)
        table.setdefault(stem, {})[name] = [list(v.shape), fnv1a64(v)]
    (HERE / "expected.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    for p in sorted(HERE.iterdir()):
        print(f"{p.name:32} {p.stat().st_size:>8} bytes")


if __name__ == "__main__":
    main()
