"""A parity case for the YOLOv3 neck: the reference's own `ModelMain` (`_make_cbl`,
`_make_embedding` and `forward`, from `mgca/models/ssl_detector.py`) with every width divided
by 32 (so the weights stay small), on random C3/C4/C5 features, in training mode (batch
statistics, as the detector trains) and in evaluation mode (running statistics, after one
training pass updated them).

Writes `neck_case.safetensors`: the neck's state dict under the reference's key names,
`in.c3|c4|c5`, `out.train.0|1|2`, `out.eval.0|1|2`. Run once:
    python gen_neck_case.py --reference-repo /path/to/MGCA
Only the text of `class ModelMain` is taken from the reference module (the rest imports
Lightning and mgca's datasets), its literal widths divided by 32 before it is executed.
"""
import argparse
import pathlib

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).parent
SCALE = 32


def model_main_source(repo):
    """The text of `class ModelMain` in the reference's `ssl_detector.py` (up to the module's
    `if __name__ == "__main__":`); the rest of that module (Lightning, datasets) is not needed."""
    source = (pathlib.Path(repo) / "mgca/models/ssl_detector.py").read_text()
    start = source.index("class ModelMain")
    return source[start:source.index('if __name__ == "__main__":', start)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-repo", required=True)
    args = ap.parse_args()
    source = model_main_source(args.reference_repo)

    class Backbone(torch.nn.Module):
        filters = [512 // SCALE, 1024 // SCALE, 2048 // SCALE]

        def forward(self, x):
            return x

    # Build with scaled literals: re-run the reference __init__ on a scaled copy of its source.
    torch.manual_seed(0)
    init = source
    for w in (1024, 512, 256, 128):
        init = init.replace(f"[{w}, ", f"[{w // SCALE}, ").replace(f", {w}]", f", {w // SCALE}]")
    init = init.replace("self._make_cbl(512, 256, 1)", f"self._make_cbl({512 // SCALE}, {256 // SCALE}, 1)")
    init = init.replace("self._make_cbl(256, 128, 1)", f"self._make_cbl({256 // SCALE}, {128 // SCALE}, 1)")
    init = init.replace("+ 256,", f"+ {256 // SCALE},").replace("+ 128,", f"+ {128 // SCALE},")
    from collections import OrderedDict

    namespace = {"nn": torch.nn, "torch": torch, "OrderedDict": OrderedDict}
    exec(init, namespace)
    model = namespace["ModelMain"](Backbone())
    print(model)

    b = 2
    c3 = torch.randn(b, 512 // SCALE, 28, 28)
    c4 = torch.randn(b, 1024 // SCALE, 14, 14)
    c5 = torch.randn(b, 2048 // SCALE, 7, 7)
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone")}
    model.train()
    with torch.no_grad():
        train_out = model((c3, c4, c5))
    model.eval()
    with torch.no_grad():
        eval_out = model((c3, c4, c5))
    tensors = {k: v.float().contiguous() for k, v in state.items() if v.dtype != torch.int64}
    tensors.update({"in.c3": c3, "in.c4": c4, "in.c5": c5})
    for i in range(3):
        tensors[f"out.train.{i}"] = train_out[i].contiguous()
        tensors[f"out.eval.{i}"] = eval_out[i].contiguous()
    save_file(tensors, str(HERE / "neck_case.safetensors"), metadata={"generator": "gen_neck_case.py", "scale": str(SCALE)})
    print({k: tuple(v.shape) for k, v in tensors.items() if not k.startswith("embedding")})


if __name__ == "__main__":
    main()
