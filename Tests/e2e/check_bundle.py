#!/usr/bin/env python3
"""Serves a packaged Triton bundle on a real Triton and compares it with the original scikit-learn model.

    check_bundle.py --bundle DIR --model-name NAME --original model.pkl --samples sample_inputs.npy
                    [--tolerance 0.05] [--min-label-agreement 1.0]

Starts Triton (tests/e2e/triton_node.py, explicit model control) with DIR as the model repository,
loads NAME, checks it is READY, infers all sample rows in one request, and compares:
  - the label output with the original model's predict(): at least --min-label-agreement of the rows
    must match exactly (default 1.0: all);
  - the probabilities with predict_proba(): max abs difference <= --tolerance (default 0.05, which
    leaves room for a dynamically quantized model; a float model is within about 1e-6);
  - for a model without predict_proba, its single output with predict() within --tolerance.
Prints one line per check ("ok: ..." / "FAIL: ..."), stops Triton (and checks that no python-backend
stub or /dev/shm region is left behind), exits 0 only when every check passed.
The original is unpickled as is: run this only on models you made (it is a test tool).
"""
import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton_node  # noqa: E402


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def ok(self, msg):
        self.passed += 1
        print(f"ok: {msg}", flush=True)

    def fail(self, msg):
        self.failed += 1
        print(f"FAIL: {msg}", flush=True)

    def check(self, cond, msg_ok, msg_fail):
        (self.ok if cond else self.fail)(msg_ok if cond else msg_fail)
        return cond


def load_original(path):
    if path.endswith(".joblib"):
        import joblib
        return joblib.load(path)
    with open(path, "rb") as f:
        return pickle.load(f)


def pick_outputs(outputs, metadata):
    """(label output name, probabilities output name) by name first, then by type."""
    names = [o["name"] for o in metadata.get("outputs", [])] or list(outputs)
    label = "label" if "label" in outputs else next(
        (n for n in names if outputs[n].dtype.kind in "iuUSO" and outputs[n].ndim == 1), None)
    proba = "probabilities" if "probabilities" in outputs else next(
        (n for n in names if outputs[n].dtype.kind == "f" and outputs[n].ndim == 2), None)
    return label, proba


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="the Triton model repository (package's output directory)")
    ap.add_argument("--model-name", required=True)
    ap.add_argument("--original", required=True, help="the scikit-learn model the bundle was made from (.pkl/.joblib)")
    ap.add_argument("--samples", required=True, help="sample_inputs.npy")
    ap.add_argument("--tolerance", type=float, default=0.05, help="max abs difference of the probabilities")
    ap.add_argument("--min-label-agreement", type=float, default=1.0, help="fraction of labels that must match")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--load-timeout", type=float, default=120.0)
    ap.add_argument("--in-place", action="store_true",
                    help="serve DIR itself (the python backend then writes 1/__pycache__/ into it); default: a copy")
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.bundle, args.model_name)):
        print(f"FAIL: {args.bundle} has no model directory {args.model_name}/", flush=True)
        return 1

    c = Checks()
    x = np.load(args.samples, allow_pickle=False).astype(np.float32)
    model = load_original(args.original)
    if args.in_place:
        run_checks(c, args, x, model)
    else:
        # Triton's python backend compiles model.py into <version>/__pycache__/ next to it: serve a
        # copy so the bundle under test stays byte-identical (it may be pushed afterwards).
        with tempfile.TemporaryDirectory(prefix="check-bundle-") as tmp:
            repo = os.path.join(tmp, "repo")
            shutil.copytree(args.bundle, repo, symlinks=True)
            args.bundle = repo
            run_checks(c, args, x, model)
    print(f"{'PASS' if c.failed == 0 else 'FAILED'}: {c.passed} ok, {c.failed} failed", flush=True)
    return 0 if c.failed == 0 else 1


def run_checks(c, args, x, model):
    node = None
    try:
        t0 = time.monotonic()
        try:
            node = triton_node.start(args.bundle, mode="explicit", ready_timeout=args.ready_timeout)
        except triton_node.TritonError as e:
            c.fail(f"Triton did not start: {e}")
            return
        c.ok(f"Triton started (pid {node.pid}, {node.url}) and live+ready in {time.monotonic() - t0:.2f} s")
        try:
            seconds = node.load(args.model_name, timeout=args.load_timeout)
            c.ok(f"loaded {args.model_name} in {seconds:.2f} s")
        except triton_node.TritonError as e:
            c.fail(str(e))
            print(node.log_tail(40), file=sys.stderr)
            return
        states = {(m.get("name"), m.get("version")): m.get("state") for m in node.index()}
        ready = [v for (n, v), s in states.items() if n == args.model_name and s == "READY"]
        c.check(bool(ready), f"index: {args.model_name} version {', '.join(ready)} READY",
                f"index: {args.model_name} is not READY: {states}")
        meta = node.metadata(args.model_name)
        inputs = meta.get("inputs", [])
        if not c.check(len(inputs) == 1, f"metadata: platform {meta.get('platform')}, input {inputs[0]['name'] if inputs else '?'} "
                       f"{inputs[0]['datatype'] if inputs else ''} {inputs[0]['shape'] if inputs else ''}, outputs "
                       f"{', '.join(o['name'] for o in meta.get('outputs', []))}",
                       f"metadata: expected one input, got {inputs}"):
            return
        t1 = time.monotonic()
        try:
            out = node.infer(args.model_name, {inputs[0]["name"]: x})
        except triton_node.TritonError as e:
            c.fail(str(e))
            return
        c.ok(f"inferred {len(x)} rows in one request in {(time.monotonic() - t1) * 1000:.1f} ms: "
             + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in out.items()))

        if hasattr(model, "predict_proba"):
            label_name, proba_name = pick_outputs(out, meta)
            expected_labels = model.predict(x)
            if label_name is None:
                c.fail(f"no label output among {list(out)}")
            else:
                got = out[label_name].reshape(-1)
                if got.dtype.kind == "O":
                    got = np.array([v.decode() if isinstance(v, bytes) else v for v in got])
                same = np.array([str(a) == str(b) for a, b in zip(got, expected_labels)])
                agreement = float(same.mean()) if same.size else 0.0
                c.check(got.shape == expected_labels.shape and agreement >= args.min_label_agreement,
                        f"labels ({label_name}): {int(same.sum())}/{same.size} match predict() "
                        f"(agreement {agreement:.4f} >= {args.min_label_agreement:g})",
                        f"labels ({label_name}): {int(same.sum())}/{same.size} match predict() (agreement "
                        f"{agreement:.4f} < {args.min_label_agreement:g}); rows differing: {np.flatnonzero(~same)[:10].tolist()}")
            expected_proba = model.predict_proba(x)
            if proba_name is None:
                c.fail(f"no probabilities output among {list(out)}")
            else:
                got = out[proba_name]
                if got.shape != expected_proba.shape:
                    c.fail(f"probabilities ({proba_name}): shape {got.shape}, predict_proba gives {expected_proba.shape}")
                else:
                    diff = float(np.abs(got.astype(np.float64) - expected_proba).max())
                    c.check(diff <= args.tolerance,
                            f"probabilities ({proba_name}): max abs diff {diff:.3g} vs predict_proba <= {args.tolerance:g}",
                            f"probabilities ({proba_name}): max abs diff {diff:.3g} vs predict_proba > {args.tolerance:g}")
        else:
            expected = np.asarray(model.predict(x), dtype=np.float64).reshape(-1)
            name = next(iter(out))
            got = out[name].astype(np.float64).reshape(-1)
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            c.check(diff <= args.tolerance, f"{name}: max abs diff {diff:.3g} vs predict() <= {args.tolerance:g}",
                    f"{name}: shape {out[name].shape} / max abs diff {diff:.3g} vs predict() (tolerance {args.tolerance:g})")
    finally:
        if node is not None:
            t2 = time.monotonic()
            rc = triton_node.stop(node)
            left = [p for p, s in node._stubs.items() if triton_node._alive(p, s)]
            shm = [n for n in node._shm if os.path.exists("/dev/shm/" + n)]
            c.check(node.proc.poll() is not None and not left and not shm,
                    f"Triton stopped in {time.monotonic() - t2:.2f} s (exit status {rc}); no stub process or "
                    "/dev/shm region left",
                    f"Triton stop: server exit {node.proc.poll()}, stubs still alive {left}, shm left {shm}")


if __name__ == "__main__":
    sys.exit(main())
