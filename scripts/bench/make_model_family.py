#!/usr/bin/env python3
"""Generate a small, deterministic "model family" for deduplication benchmarks.

Each file exercises one dedup case against ``base.safetensors``:

* ``base.safetensors``      -- fp32 MLP-like model: N layers, each ``layers.{i}.weight``
  [H, H] and ``layers.{i}.bias`` [H], values ``standard_normal * 0.02`` (trained-weight
  statistics, i.e. essentially incompressible). The reference everything dedups against.
* ``finetune.safetensors``  -- base with the last 2 layers re-drawn (a partial fine-tune).
  Ideal dedup: only the changed layers' bytes are new.
* ``longheader.safetensors``-- the same tensors as base, but an extra metadata entry makes
  the JSON header >= 16 bytes longer, so every tensor byte is shifted. Fixed-size chunking
  loses everything here; content-defined chunking should still dedup ~all of it.
* ``base.onnx``             -- the same fp32 weights as ONNX initializers (raw_data, byte-
  identical to base) in a MatMul+Add chain, opset 13. Cross-format dedup: the tensor bytes
  sit inside protobuf framing instead of a safetensors layout.
* ``fp16.safetensors``      -- base cast to float16. Negative control: same model, but no
  byte-level overlap, so a chunk-level deduper should find ~nothing.

Prints a JSON summary (file names, sizes, changed bytes of the fine-tune, header growth).

Determinism note: safetensors serializes ``__metadata__`` from a Rust HashMap, so with
more than one metadata key the key order (not the length) varies from run to run. We
rewrite the header with sorted metadata keys so output is byte-identical for a given seed.
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save as st_save


def save_safetensors(tensors, path, metadata):
    """safetensors.numpy.save with metadata keys in a canonical (sorted) order."""
    blob = bytearray(st_save(tensors, metadata=metadata))
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n, b" ")
    assert len(text) == n, "canonical header changed length"
    blob[8:8 + n] = text
    with open(path, "wb") as f:
        f.write(blob)
    return n  # header length


def make_layers(rng, layers, hidden):
    t = {}
    for i in range(layers):
        t[f"layers.{i}.weight"] = (rng.standard_normal((hidden, hidden), dtype=np.float32) * np.float32(0.02))
        t[f"layers.{i}.bias"] = (rng.standard_normal(hidden, dtype=np.float32) * np.float32(0.02))
    return t


def make_onnx(tensors, layers, hidden, path):
    inits, nodes, cur = [], [], "x"
    for i in range(layers):
        w, b = f"layers.{i}.weight", f"layers.{i}.bias"
        inits += [numpy_helper.from_array(tensors[w], w), numpy_helper.from_array(tensors[b], b)]
        out = "y" if i == layers - 1 else f"h{i}"
        nodes += [helper.make_node("MatMul", [cur, w], [f"mm{i}"], name=f"matmul{i}"),
                  helper.make_node("Add", [f"mm{i}", b], [out], name=f"add{i}")]
        cur = out
    for init in inits:  # dedup relies on the initializer bytes being exactly base's bytes
        assert init.raw_data == tensors[init.name].tobytes(), init.name
    graph = helper.make_graph(
        nodes, "depot_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", hidden])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="depot-make_model_family")
    model.ir_version = 8  # opset 13 needs IR >= 7; 8 keeps older onnxruntime builds happy
    onnx.checker.check_model(model)
    onnx.save_model(model, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.layers < 1 or a.hidden < 1:
        ap.error("--layers and --hidden must be >= 1")
    os.makedirs(a.outdir, exist_ok=True)
    p = lambda name: os.path.join(a.outdir, name)

    base = make_layers(np.random.default_rng(a.seed), a.layers, a.hidden)
    meta = {"format": "pt"}
    base_hdr = save_safetensors(base, p("base.safetensors"), meta)

    # Partial fine-tune: last min(2, N) layers re-drawn from an independent stream.
    ft_rng = np.random.default_rng([a.seed, 1])
    ft = dict(base)
    for i in range(max(0, a.layers - 2), a.layers):
        for k in (f"layers.{i}.weight", f"layers.{i}.bias"):
            ft[k] = ft_rng.standard_normal(base[k].shape, dtype=np.float32) * np.float32(0.02)
    save_safetensors(ft, p("finetune.safetensors"), meta)
    changed = sorted(k for k in base if not np.array_equal(base[k], ft[k]))

    long_hdr = save_safetensors(base, p("longheader.safetensors"),
                                {**meta, "comment": "longer header: shifts all tensor data " + "-" * 24})
    assert long_hdr - base_hdr >= 16

    make_onnx(base, a.layers, a.hidden, p("base.onnx"))
    save_safetensors({k: v.astype(np.float16) for k, v in base.items()}, p("fp16.safetensors"), meta)

    tensor_bytes = sum(v.nbytes for v in base.values())
    files = []
    for name in ("base.safetensors", "finetune.safetensors", "longheader.safetensors",
                 "base.onnx", "fp16.safetensors"):
        entry = {"name": name, "path": p(name), "size_bytes": os.path.getsize(p(name))}
        if name == "finetune.safetensors":
            entry["changed_tensors"] = changed
            entry["changed_tensor_bytes"] = sum(base[k].nbytes for k in changed)
        if name == "longheader.safetensors":
            entry["header_growth_bytes"] = long_hdr - base_hdr
        files.append(entry)
    print(json.dumps({"seed": a.seed, "layers": a.layers, "hidden": a.hidden,
                      "tensor_bytes_fp32": tensor_bytes, "files": files}, indent=2))


if __name__ == "__main__":
    main()
