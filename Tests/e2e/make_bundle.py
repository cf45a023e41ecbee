#!/usr/bin/env python3
"""Writes a tiny Triton python-backend model directory for canary end-to-end tests:

    OUTDIR/NAME/config.pbtxt
    OUTDIR/NAME/1/model.py

The model adds two FP32 vectors: OUTPUT0 = INPUT0 + INPUT1 (dims [-1], max_batch_size 0, one CPU instance,
no version_policy, so Triton's default "latest: 1" applies). Behaviours:

    ok     answers correctly
    fail   raises an exception in execute(); Triton answers HTTP 500 and counts
           nv_inference_request_failure{model=NAME,reason="BACKEND",version=V}
    slow   sleeps --delay-ms per request, then answers correctly

The bytes are a pure function of the arguments (no timestamps, no random names), so the same arguments give
the same bundle digest. File modification times are left alone on purpose: Triton's explicit-mode reload
decides whether a model changed partly from modification times. Needs no Python package to run (only the
Triton python backend's numpy when served).

    make_bundle.py OUTDIR --model-name NAME --behaviour ok|fail|slow [--delay-ms 300]
"""
import argparse
import os
import re
import sys

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }},
  {{ name: "INPUT1", data_type: TYPE_FP32, dims: [ -1 ] }}
]
output [
  {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

MODEL = '''\
# Canary test model written by Tests/e2e/make_bundle.py: behaviour={behaviour} delay_ms={delay_ms}
import time

import numpy as np
import triton_python_backend_utils as pb_utils

BEHAVIOUR = "{behaviour}"
DELAY_S = {delay_ms} / 1000.0


class TritonPythonModel:
    def initialize(self, args):
        self.version = args["model_version"]

    def execute(self, requests):
        if BEHAVIOUR == "fail":
            raise RuntimeError("canary test model: behaviour=fail (version " + self.version + ")")
        responses = []
        for request in requests:
            if BEHAVIOUR == "slow":
                time.sleep(DELAY_S)
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def render(name, behaviour, delay_ms=300):
    """{relative path: bytes} of the bundle."""
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '-', '.'")
    if behaviour not in ("ok", "fail", "slow"):
        raise ValueError(f"behaviour {behaviour!r}: ok, fail or slow")
    delay_ms = int(delay_ms)
    if delay_ms < 0 or delay_ms > 600_000:
        raise ValueError(f"delay-ms {delay_ms}: 0..600000")
    if behaviour != "slow":
        delay_ms = 0  # same bytes whatever --delay-ms says when it does not apply
    return {
        f"{name}/config.pbtxt": CONFIG.format(name=name).encode(),
        f"{name}/1/model.py": MODEL.format(behaviour=behaviour, delay_ms=delay_ms).encode(),
    }


def write(outdir, name, behaviour, delay_ms=300):
    """Writes the bundle under outdir; returns the model directory (outdir/name)."""
    files = render(name, behaviour, delay_ms)
    for rel, data in files.items():
        path = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return os.path.join(outdir, name)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a Triton python-backend test model (INPUT0 + INPUT1).")
    ap.add_argument("outdir")
    ap.add_argument("--model-name", required=True)
    ap.add_argument("--behaviour", "--behavior", required=True, choices=["ok", "fail", "slow"])
    ap.add_argument("--delay-ms", type=int, default=300, help="per-request sleep for --behaviour slow (default 300)")
    args = ap.parse_args(argv)
    try:
        path = write(args.outdir, args.model_name, args.behaviour, args.delay_ms)
    except ValueError as e:
        ap.error(str(e))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
