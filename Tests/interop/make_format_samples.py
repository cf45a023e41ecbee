#!/usr/bin/env python3
"""Writes real sample files for the format tests into DIR:

  model.onnx      an ONNX model built with onnx.helper (a 2-layer MLP: MatMul, Add, Relu),
                  checked with onnx.checker and run once with onnxruntime when it is installed
  external.onnx   the same model with its initializers saved as external data (weights.bin)
  safe.pt         a PyTorch-style zip (archive/data.pkl + archive/data/0) whose pickle only
                  imports collections.OrderedDict and torch._utils._rebuild_tensor_v2
  evil.pt         the same layout, but its pickle calls os.system (what picklescan flags)

Usage: make_format_samples.py DIR. Prints a JSON description of what it wrote."""
import io
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

rng = np.random.default_rng(7)
w1 = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1")
b1 = numpy_helper.from_array(np.zeros(32, dtype=np.float32), "b1")
w2 = numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")
nodes = [
    helper.make_node("MatMul", ["input", "w1"], ["h0"]),
    helper.make_node("Add", ["h0", "b1"], ["h1"]),
    helper.make_node("Relu", ["h1"], ["h2"]),
    helper.make_node("MatMul", ["h2", "w2"], ["logits"]),
]
graph = helper.make_graph(
    nodes, "mlp",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    initializer=[w1, b1, w2])
model = helper.make_model(graph, producer_name="depot-tests", producer_version="1.0",
                          opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, os.path.join(out, "model.onnx"))
try:
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    sess.run(None, {"input": np.ones((2, 16), dtype=np.float32)})
except ImportError:
    pass

external = onnx.load(os.path.join(out, "model.onnx"))
onnx.save_model(external, os.path.join(out, "external.onnx"), save_as_external_data=True,
                all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)


def torch_like(path, payload_pickle):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload_pickle)
        z.writestr("archive/data/0", rng.standard_normal(1024).astype(np.float32).tobytes())
        z.writestr("archive/version", "3\n")


# A state dict pickle that references torch's tensor rebuild function by name (GLOBAL opcode).
safe = (b"\x80\x02" + b"ccollections\nOrderedDict\nq\x00)Rq\x01"
        + b"ctorch._utils\n_rebuild_tensor_v2\nq\x02" + b"0" + b".")
torch_like(os.path.join(out, "safe.pt"), safe)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


torch_like(os.path.join(out, "evil.pt"), pickle.dumps({"model": Evil()}, protocol=4))
print(json.dumps({"onnx": {"inputs": ["input"], "outputs": ["logits"], "initializers": 3, "opset": 17,
                           "initializer_bytes": (16 * 32 + 32 + 32 * 4) * 4},
                  "files": sorted(os.listdir(out))}))
