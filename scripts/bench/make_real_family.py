#!/usr/bin/env python3
"""Build a model family from real trained weights shipped in a PyPI wheel, for dedup benchmarks.

The weights are PaddleOCR's PP-OCRv4 text recognition and detection models, which the PyPI
package ``rapidocr-onnxruntime`` (Apache-2.0) ships as ONNX files with the weights in
``Constant`` nodes. For each model this writes:

* ``<model>.onnx``              -- the file from the wheel, as shipped (fp32 weights).
* ``<model>.fp32.safetensors``  -- its float32 weights as a safetensors checkpoint.
* ``<model>.fp16.safetensors``  -- the same tensors cast with numpy's ``astype(float16)``.
* ``<model>.bf16.safetensors``  -- the same tensors cast to bfloat16 by ``ml_dtypes``
  (round to nearest even, as PyTorch's ``.bfloat16()``).

So the set has real weight statistics (not synthetic normals), cross-format copies, and the
16-bit casts a training pipeline publishes next to an fp32 checkpoint. The wheel is fetched
with ``pip download`` unless ``--wheel`` names one. Prints a JSON summary.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

PACKAGE = "rapidocr-onnxruntime==1.4.4"
MODELS = {"rec": "ch_PP-OCRv4_rec_infer.onnx", "det": "ch_PP-OCRv4_det_infer.onnx"}


def save_safetensors(tensors, dtype_name, path):
    """A safetensors file: 8-byte header length, JSON header (sorted names), data in that order."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = tensors[name].tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)


def weights(model):
    """The float32 tensors of an ONNX model: initializers and Constant nodes, by name."""
    out = {}
    for init in model.graph.initializer:
        out[init.name] = numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.dims:
                out[node.output[0]] = numpy_helper.to_array(attr.t)
    return {k: np.ascontiguousarray(v) for k, v in out.items() if v.dtype == np.float32}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--wheel", help="a downloaded rapidocr-onnxruntime wheel (default: pip download it)")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="real-family-") as tmp:
        wheel = a.wheel
        if not wheel:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", tmp], check=True)
            wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        files = []
        with zipfile.ZipFile(wheel) as z:
            for key, name in MODELS.items():
                raw = z.read(f"rapidocr_onnxruntime/models/{name}")
                onnx_path = os.path.join(a.outdir, f"{key}.onnx")
                with open(onnx_path, "wb") as f:
                    f.write(raw)
                t = weights(onnx.load_from_string(raw))
                variants = {
                    "fp32": (t, "F32"),
                    "fp16": ({k: v.astype(np.float16) for k, v in t.items()}, "F16"),
                    "bf16": ({k: v.astype(ml_dtypes.bfloat16).view(np.uint16) for k, v in t.items()}, "BF16"),
                }
                files.append({"name": f"{key}.onnx", "path": onnx_path, "size_bytes": len(raw)})
                for suffix, (tensors, dtype) in variants.items():
                    path = os.path.join(a.outdir, f"{key}.{suffix}.safetensors")
                    save_safetensors(tensors, dtype, path)
                    files.append({"name": os.path.basename(path), "path": path, "size_bytes": os.path.getsize(path),
                                  "tensors": len(tensors)})
    print(json.dumps({"source": PACKAGE, "files": files}, indent=2))


if __name__ == "__main__":
    main()
