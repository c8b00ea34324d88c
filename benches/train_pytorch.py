"""One MGCA pretraining step in PyTorch at the smoke sizes, the counterpart of
benches/train.rs: 2 shards of 8 pairs, each through a tiny timm ViT (32 px, patch 8, width 32,
2 blocks) with its last block's [CLS] attention, a tiny Hugging Face BERT (width 32, 2 layers,
32 tokens, position ids 0 as the reference passes them, dropout 0.1) with the reference's
word-piece walk in Python, the four projection heads, the objective of
benches/losses_pytorch.py, then AdamW (weight decay 0.05) on the mean of the shard losses.

Usage: python benches/train_pytorch.py [--threads 2] [--min-iters 20] [--min-seconds 10]
Prints one JSON line: {"case": "smoke_step", "median_ms": ..., "torch": ...}.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).parent))
from losses_pytorch import REFERENCE_HPARAMS, mgca_objective  # noqa: E402

import timm  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

SHARDS, BATCH, TOKENS, SIDE = 2, 8, 32, 32
EMBED, HIDDEN, PROTOS = 32, 64, 16


def head(inp, affine_last=False):
    return nn.Sequential(nn.Linear(inp, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(inplace=True),
                         nn.Linear(HIDDEN, EMBED), nn.BatchNorm1d(EMBED, affine=affine_last))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=SIDE, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)
        cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, attn_implementation="eager")
        self.bert = BertModel(cfg, add_pooling_layer=False)
        self.img_g, self.img_l, self.txt_g, self.txt_l = head(32), head(32), head(32), head(32)
        self.prototypes = nn.Linear(EMBED, PROTOS, bias=False)
        self._attn = None
        blk = self.vit.blocks[-1].attn

        def capture(module, args, _out):
            x = args[0]
            b, n, c = x.shape
            qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, c // module.num_heads).permute(2, 0, 3, 1, 4)
            q, k = qkv[0], qkv[1]
            self._attn = ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)

        blk.register_forward_hook(capture)

    def forward(self, images, ids, mask, tokens):
        x = self.vit.forward_features(images)  # [B, 1 + M, 32], final LayerNorm
        cls_attn = self._attn[:, :, 0, 1:]  # [B, H, M]
        out = self.bert(input_ids=ids, attention_mask=mask, position_ids=torch.zeros_like(ids),
                        output_attentions=True)
        hidden, attn = out.last_hidden_state, out.attentions[-1]
        a_tok = attn[:, :, 0, 1:].mean(dim=1)  # [B, L - 1]
        # The reference's walk, per sample, in Python.
        words, word_attn, counts = [], [], []
        for b in range(ids.shape[0]):
            vecs, atts, cur_v, cur_a = [], [], None, None
            for j in range(TOKENS - 1):
                t = tokens[b][j]
                if t.startswith("##"):
                    cur_v, cur_a = cur_v + hidden[b, j], cur_a + a_tok[b, j]
                    continue
                if cur_v is not None:
                    vecs.append(cur_v)
                    atts.append(cur_a)
                if t == "[SEP]":
                    vecs.append(hidden[b, j])
                    atts.append(a_tok[b, j] * 0)
                    cur_v = None
                    break
                cur_v, cur_a = hidden[b, j], a_tok[b, j]
            if cur_v is not None:
                vecs.append(cur_v)
                atts.append(cur_a)
            n = len(vecs)
            counts.append(n)
            pad = TOKENS - n
            words.append(torch.cat([torch.stack(vecs), hidden.new_zeros(pad, 32)]))
            word_attn.append(torch.cat([torch.stack(atts), hidden.new_zeros(pad)]))
        words = torch.stack(words)  # [B, L, 32]: slot 0 is [CLS]
        word_attn = torch.stack(word_attn)
        report, words, word_attn = words[:, 0], words[:, 1:], word_attn[:, 1:]
        slots = torch.arange(TOKENS - 1)[None, :]
        pad = slots >= (torch.tensor(counts)[:, None] - 1)  # slots after the last word
        bsz = images.shape[0]
        img_emb, report_emb = self.img_g(x[:, 0]), self.txt_g(report)
        patch = self.img_l(x[:, 1:].reshape(-1, 32)).reshape(bsz, -1, EMBED)
        word = self.txt_l(words.reshape(-1, 32)).reshape(bsz, -1, EMBED)
        with torch.no_grad():
            self.prototypes.weight.copy_(nn.functional.normalize(self.prototypes.weight, dim=1))
        return mgca_objective(img_emb, report_emb, patch, word, self.prototypes.weight, word_attn, pad,
                              "vit_base", REFERENCE_HPARAMS, vit_cls_attn=cls_attn)


def shard(seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, SIDE, SIDE, generator=g)
    ids, mask, tokens = [], [], []
    for b in range(BATCH):
        length = 8 + (b * 5) % (TOKENS - 8)
        row = []
        for j in range(TOKENS):
            row.append("[CLS]" if j == 0 else "[SEP]" if j == length - 1 else "[PAD]" if j >= length
                       else f"##p{j}" if j % 3 == 2 else f"w{j}")
        tokens.append(row)
        ids.append([1 + (b * 7 + j * 5) % 127 if j < length else 0 for j in range(TOKENS)])
        mask.append([1 if j < length else 0 for j in range(TOKENS)])
    return images, torch.tensor(ids), torch.tensor(mask), tokens


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-iters", type=int, default=20)
    p.add_argument("--min-seconds", type=float, default=10.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Tiny().train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    shards = [shard(s) for s in range(SHARDS)]

    def step():
        # Each shard forward and backward on its own (as each GPU does), gradients averaged.
        opt.zero_grad()
        for s in shards:
            (model(*s)["loss_total"] / SHARDS).backward()
        opt.step()

    for _ in range(3):
        step()
    times, start = [], time.perf_counter()
    while len(times) < a.min_iters or time.perf_counter() - start < a.min_seconds:
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"case": "smoke_step", "median_ms": statistics.median(times), "iters": len(times),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
