"""Tiny torch.save-format checkpoints for the fuzz seed corpus, written without torch.

The containers are PyTorch's (a zip archive with `archive/data.pkl`, `archive/byteorder` and
one stored entry per storage; and the legacy stream of five pickles and raw storages), the
pickles name `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` through stand-in
modules, so the bytes match what torch writes for the same tensors. Run from the repository
root: `python3 ci/fuzz/seeds/make_checkpoints.py`.
"""
import collections, io, pickle, struct, sys, types, zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch._utils = utils
for name in ["FloatStorage", "LongStorage", "HalfStorage"]:
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)


class Storage:
    def __init__(self, key, kind, values, fmt):
        self.key, self.kind, self.values, self.fmt = key, kind, values, fmt

    def raw(self):
        return struct.pack("<%d%s" % (len(self.values), self.fmt), *self.values)


class Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


def state():
    w = Storage("0", torch.FloatStorage, [0.5, -1.0, 2.0, 3.25, 0.0, 1e-3], "f")
    b = Storage("1", torch.FloatStorage, [1.0, 2.0], "f")
    n = Storage("2", torch.LongStorage, [7], "q")
    sd = collections.OrderedDict()
    sd["fc.weight"] = Tensor(w, 0, (2, 3), (3, 1))
    sd["fc.weight_t"] = Tensor(w, 0, (3, 2), (1, 3))  # a strided view of the same storage
    sd["fc.bias"] = Tensor(b, 0, (2,), (1,))
    sd["bn.num_batches_tracked"] = Tensor(n, 0, (), ())
    return sd, [w, b, n]


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", len(obj.values))
        return None


def dumps(obj, protocol=2):
    f = io.BytesIO()
    Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


def zip_checkpoint(path, obj, storages, protocol):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", dumps(obj, protocol))
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr("archive/data/" + s.key, s.raw())
        z.writestr("archive/version", "3\n")


def legacy_checkpoint(path, obj, storages):
    out = io.BytesIO()
    out.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    out.write(pickle.dumps(1001, protocol=2))
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out.write(pickle.dumps(info, protocol=2))
    out.write(dumps(obj, 2))
    out.write(pickle.dumps([s.key for s in storages], protocol=2))
    for s in storages:
        out.write(struct.pack("<q", len(s.values)))
        out.write(s.raw())
    open(path, "wb").write(out.getvalue())


sd, storages = state()
zip_checkpoint("golden/fuzz/torch_zip/tiny_state_dict.pth", sd, storages, 2)
zip_checkpoint("golden/fuzz/torch_zip/tiny_model_p4.pth", {"model": sd, "epoch": 3}, storages, 4)
zip_checkpoint("golden/fuzz/torch_zip/tiny_lightning.ckpt", {"state_dict": sd, "hyper_parameters": {"lr": 1e-4}}, storages, 2)
legacy_checkpoint("golden/fuzz/torch_legacy/tiny_state_dict.bin", sd, storages)
open("golden/fuzz/pickle/tiny_state_dict_p2.pkl", "wb").write(dumps(sd, 2))
open("golden/fuzz/pickle/tiny_model_p4.pkl", "wb").write(dumps({"model": sd, "epoch": 3}, 4))
