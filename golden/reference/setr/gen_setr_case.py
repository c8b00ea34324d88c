"""A parity case for the SETR-style decoder from the reference's own
`mgca/models/backbones/transformer_seg.py`, `SETRModel` (HKU-MedAI/MGCA 680fe4a6ee0c), as
`mgca_segmenter.py` builds it for `--base_model vit`, at reduced width: hidden size 64 (the
paper's is 768) and decoder features [32, 16, 8, 4] (the paper's [512, 256, 128, 64]), so that
the case stays small; the structure is the same.

The encoder (`encoder_2d.bert_model`, replaced by the MGCA ViT in the reference) is replaced
here by a module returning fixed tokens `[1, 197, 64]` (class token first), so that the case
tests what follows it: `final_dense`, the token-to-map rearrangement, the four
conv-BN-ReLU-upsample stages and `final_out`. The decoder's weights are filled by the same
formula of key and index as golden/pytorch/unet (not stored). Stored: `setr.tokens`,
`setr.logits_train` and `setr.logits_eval` (`[1, 224, 224]`; evaluation mode after the training
pass updated the running statistics), and the keys with their shapes in the metadata.

Run once: PYTHONPATH=<einops> python gen_setr_case.py --reference-repo /path/to/MGCA
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent / "pytorch" / "unet"))
from gen_unet_case import weight_values  # noqa: E402  (the shared weight formula)


class FixedTokens(torch.nn.Module):
    def __init__(self, tokens):
        super().__init__()
        self.tokens = tokens

    def forward(self, x):
        return self.tokens.expand(x.shape[0], -1, -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.reference_repo)
    from mgca.models.backbones.transformer_seg import SETRModel

    torch.manual_seed(0)
    model = SETRModel(patch_size=(16, 16), in_channels=3, out_channels=1, hidden_size=64,
                      num_hidden_layers=1, num_attention_heads=4, decode_features=[32, 16, 8, 4])
    tokens = torch.randn(1, 197, 64, generator=torch.Generator().manual_seed(3))
    model.encoder_2d.bert_model = FixedTokens(tokens)
    state = model.state_dict()
    keys = []
    for name, t in state.items():
        if t.dtype != torch.float32:
            continue
        state[name] = torch.from_numpy(weight_values(name, list(t.shape)))
        keys.append([name, list(t.shape)])
    model.load_state_dict(state)
    images = torch.zeros(1, 3, 224, 224)
    model.train()
    with torch.no_grad():
        train = model(images).squeeze(1)
    model.eval()
    with torch.no_grad():
        evaluation = model(images).squeeze(1)
    tensors = {"setr.tokens": tokens, "setr.logits_train": train.contiguous(), "setr.logits_eval": evaluation.contiguous()}
    meta = {"generator": "gen_setr_case.py", "reference": "HKU-MedAI/MGCA 680fe4a6ee0c transformer_seg.SETRModel",
            "torch": torch.__version__, "keys": json.dumps(keys)}
    save_file(tensors, str(HERE / "setr_case.safetensors"), metadata=meta)
    print(keys, float(train.abs().max()), float(evaluation.abs().max()))


if __name__ == "__main__":
    main()
