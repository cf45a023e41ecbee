#!/usr/bin/env python3
"""Built-in pipeline stage `accelerate`: model.onnx -> a faster model (docs/PIPELINES.md, "The stage contract").

Input (DEPOT_INPUT_DIR): model.onnx, and normally sample_inputs.npy + sample_outputs.npz from convert.

Two paths:
  - GPU (`trtexec` on PATH and `nvidia-smi` lists a GPU): a TensorRT engine model.plan built with
    trtexec (fp16 with precision=fp16), plus tensorrt.json (compute capability, TensorRT version,
    precision, and the ONNX inputs/outputs, which package needs to write config.pbtxt for a plan).
    Relation compiled-from. NOTE: this path cannot run on the project's machines (no GPU, no
    TensorRT): it is written from trtexec's documented flags and output and was exercised only with
    stand-in `trtexec` / `nvidia-smi` scripts (command line, parsing, tensorrt.json, result).
    skl2onnx classifiers use ai.onnx.ml operators (ArrayFeatureExtractor, ZipMap, TreeEnsemble...)
    that TensorRT's ONNX parser does not support: expect those to fail here with exit 78.
  - CPU (otherwise): onnxruntime graph optimization (level basic: the saved model has only standard
    ONNX operators and loads in any onnxruntime), then onnxruntime.quantization.quantize_dynamic
    (QInt8 weights) unless quantize=none. The latency before/after (median over `runs`) and the
    accuracy delta against sample_outputs.npz are measured; when quantization fails, quantizes
    nothing, or costs more accuracy than allowed, the optimized float model is kept and the reason
    recorded. Relation quantized-from (compiled-from when only the graph was optimized).

Output (DEPOT_OUTPUT_DIR): model.onnx or model.plan (+ tensorrt.json), sample_inputs.npy and
sample_outputs.npz carried forward unchanged.

Parameters: method (auto | onnxruntime | tensorrt; default auto), precision (fp32 | fp16, TensorRT),
max_batch (TensorRT, default 64), quantize (int8 | none; default int8), optimization_level
(basic | extended; default basic), runs (default 50), max_accuracy_delta (max abs difference of the
float outputs, default 0.05), min_label_agreement (fraction of labels that must still match,
default 1.0).

Exit status: 0 done; 78 the input can never work here (no model.onnx, unknown parameter value,
tensorrt requested without a GPU, an ONNX model TensorRT cannot parse); 1 other failures.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

# One graph input or output as graph_signature reports it (also the "inputs"/"outputs" of tensorrt.json).
TensorInfo = dict[str, Any]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared module, even under PYTHONSAFEPATH
import depot_hook  # noqa: E402
from depot_hook import (EX_CONFIG, METRIC_PREFIX, PLATFORM_ANNOTATION, RELATION_COMPILED_FROM,  # noqa: E402
                        RELATION_QUANTIZED_FROM, RESULT_ANNOTATIONS, RESULT_ARTIFACT_TYPE, RESULT_RELATION, StageError,
                        choice_param, fmt, log, number_param, stage_dirs, write_result)

HOOK = "accelerate"
HOOK_VERSION = 1
ONNX_ARTIFACT_TYPE = "application/vnd.depot.onnx.v1"
TENSORRT_ARTIFACT_TYPE = "application/vnd.depot.tensorrt.plan.v1"  # ModelMediaType.tensorrtPlan (DepotClient)
SAMPLE_FILES = ("sample_inputs.npy", "sample_outputs.npz")

depot_hook.setup(HOOK, HOOK_VERSION)


def trtexec_version(trtexec: str) -> str | None:
    """TensorRT version from trtexec's banner ('&&&& RUNNING TensorRT.trtexec [TensorRT v100300] ...')."""
    try:
        p = subprocess.run([trtexec, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"TensorRT v(\d+)", p.stdout)
    if not m:
        return None
    n = int(m.group(1))  # 100300 -> 10.3.0, 8601 -> 8.6.1
    return f"{n // 10000}.{n // 100 % 100}.{n % 100}" if n >= 10000 else f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def toolchain() -> str:
    trtexec = shutil.which("trtexec")
    return depot_hook.toolchain_line(
        [("onnx", ["onnx"]), ("onnxruntime", ["onnxruntime", "onnxruntime-gpu"]), ("numpy", ["numpy"])],
        extra=[f"tensorrt={trtexec_version(trtexec) or 'unknown'}"] if trtexec else [])


def gpu_compute_capability() -> str | None:
    """'9.0' for the first GPU nvidia-smi lists, or None (no nvidia-smi, no GPU, driver error)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        p = subprocess.run([smi, "--query-gpu=compute_cap,name", "--format=csv,noheader"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if p.returncode != 0 or not lines:
        return None
    cc = lines[0].split(",")[0].strip()
    return cc if re.fullmatch(r"\d+\.\d+", cc) else None


def graph_signature(path: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The ONNX graph's real inputs and its outputs: [{name, elem_type, dims}], dims -1 where dynamic."""
    import onnx
    model = onnx.load(path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def info(v: Any) -> TensorInfo:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": v.name, "elem_type": onnx.TensorProto.DataType.Name(t.elem_type), "dims": dims}

    return ([info(v) for v in model.graph.input if v.name not in initializers],
            [info(v) for v in model.graph.output])


def load_samples(inp: str, model_path: str) -> tuple[Array, Optional[dict[str, Array]]]:
    import numpy as np
    x_path, y_path = os.path.join(inp, "sample_inputs.npy"), os.path.join(inp, "sample_outputs.npz")
    if os.path.exists(x_path):
        try:
            x = np.load(x_path, allow_pickle=False)
        except Exception as e:
            raise StageError(f"sample_inputs.npy is not a readable .npy array: {e}", EX_CONFIG)
        log(f"sample inputs: sample_inputs.npy {x.shape} {x.dtype}")
    else:
        inputs, _ = graph_signature(model_path)
        if len(inputs) != 1 or any(d == -1 for d in inputs[0]["dims"][1:]):
            raise StageError("no sample_inputs.npy and the model's input shape is not fixed apart from the batch: "
                             "push sample_inputs.npy (convert writes one)", EX_CONFIG)
        shape = [16] + inputs[0]["dims"][1:] if inputs[0]["dims"] else []
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        log(f"no sample_inputs.npy: using random inputs (seed 0) of shape {tuple(shape)}")
    ref = None
    if os.path.exists(y_path):
        try:
            with np.load(y_path, allow_pickle=False) as z:
                ref = {k: z[k] for k in z.files}
        except Exception as e:
            raise StageError(f"sample_outputs.npz is not a readable .npz file: {e}", EX_CONFIG)
        log(f"reference outputs: sample_outputs.npz ({', '.join(ref)})")
    return x, ref


def carry_samples(inp: str, out: str) -> None:
    for name in SAMPLE_FILES:
        if os.path.exists(os.path.join(inp, name)):
            shutil.copyfile(os.path.join(inp, name), os.path.join(out, name))


# ---------------------------------------------------------------------------------------------
# CPU path: onnxruntime

def session(path: str) -> Any:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # what the Triton python-onnxruntime bundle uses; also steadier timings
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feeds_for(sess: Any, x: Array) -> dict[str, Array]:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise StageError(f"the model has {len(inputs)} inputs; accelerate supports single-input models", EX_CONFIG)
    want = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
            "tensor(int32)": "int32", "tensor(float16)": "float16"}.get(inputs[0].type)
    return {inputs[0].name: x.astype(want) if want else x}


def run_model(path: str, x: Array) -> dict[str, Array]:
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds_for(sess, x))))


def median_latency_ms(path: str, x: Array, runs: int) -> float:
    sess = session(path)
    feeds = feeds_for(sess, x)
    for _ in range(min(3, runs)):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def accuracy(outputs: dict[str, Any], reference: dict[str, Any]) -> tuple[float, float | None, list[str]]:
    """(max abs diff over float outputs, label agreement fraction or None, compared output names)."""
    import numpy as np
    delta: float = 0.0
    agreement: float | None = None
    compared: list[str] = []
    for name, ref in reference.items():
        if name not in outputs:
            continue
        got = np.asarray(outputs[name]).reshape(-1)
        ref = np.asarray(ref).reshape(-1)
        if got.size != ref.size:
            raise StageError(f"output {name!r}: the model returns {got.size} values, sample_outputs.npz holds {ref.size}")
        compared.append(name)
        if ref.dtype.kind in "iubUSO" or got.dtype.kind in "iubUSO":
            same = float(np.mean([str(a) == str(b) for a, b in zip(got, ref)])) if ref.size else 1.0
            agreement = same if agreement is None else min(agreement, same)
        else:
            d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            delta = max(delta, float(d.max()) if d.size else 0.0) if np.all(np.isfinite(d)) else float("inf")
    return delta, agreement, compared


QUANTIZABLE = {"MatMul", "Gemm", "Conv", "ConvTranspose", "LSTM", "GRU", "Attention", "EmbedLayerNormalization", "Gather"}


def all_ops(path: str) -> set[str]:
    import onnx
    return {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type
            for n in onnx.load(path, load_external_data=False).graph.node}


def quantizable_ops(path: str) -> list[str]:
    import onnx
    return [n.op_type for n in onnx.load(path, load_external_data=False).graph.node
            if n.domain in ("", "ai.onnx", "com.microsoft") and n.op_type in QUANTIZABLE]


def write_pruned(src: str, dst: str) -> None:
    """Copies the model, keeping only the opset imports its nodes use: onnxruntime's saved models
    import every domain it knows (ai.onnx.training, org.pytorch.aten, com.microsoft.nchwc, ...),
    which other runtimes need not accept."""
    import onnx
    model = onnx.load(src)
    used = {n.domain if n.domain != "ai.onnx" else "" for n in model.graph.node} | {""}
    for f in model.functions:
        used |= {n.domain for n in f.node}
    keep = [(o.domain, o.version) for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        for domain, version in keep:
            model.opset_import.add(domain=domain, version=version)
    onnx.save(model, dst)
    onnx.checker.check_model(dst)
    session(dst)


def quantized_node_count(path: str) -> int:
    import onnx
    model = onnx.load(path, load_external_data=False)
    ops = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv",
           "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "MatMulIntegerToFloat"}
    return sum(1 for n in model.graph.node if n.op_type in ops)


def accelerate_cpu(inp: str, out: str, model_path: str) -> int:
    import onnxruntime as ort
    quantize = choice_param("quantize", ["int8", "none"], "int8")
    level_name = choice_param("optimization_level", ["basic", "extended"], "basic")
    runs = number_param("runs", 50, int, low=1)
    max_delta = number_param("max_accuracy_delta", 0.05)
    min_agreement = number_param("min_label_agreement", 1.0)
    x, reference = load_samples(inp, model_path)
    before = median_latency_ms(model_path, x, runs)
    log(f"onnxruntime {ort.__version__}: input model median latency {before:.4f} ms over {runs} runs "
        f"(batch of {len(x)}, 1 thread)")
    if reference is None:
        reference = run_model(model_path, x)
        log("no sample_outputs.npz: comparing against the input model's onnxruntime outputs")

    work = tempfile.mkdtemp(prefix="depot-accelerate-")
    try:
        # 1. Graph optimization. Level basic keeps standard ONNX operators only (constant folding,
        #    redundant-node elimination); extended adds onnxruntime contrib ops (com.microsoft) that
        #    only onnxruntime runs, and the result is tied to the onnxruntime version that wrote it.
        optimized = os.path.join(work, "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level_name]
        so.optimized_model_filepath = optimized
        try:
            ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
            session(optimized)  # it must load in a plain session
        except Exception as e:
            raise StageError(f"onnxruntime cannot load or optimize model.onnx: {str(e).strip()[:400]}", EX_CONFIG)
        log(f"graph optimization ({level_name}): {os.path.getsize(model_path)} -> {os.path.getsize(optimized)} bytes")

        method = f"onnxruntime-{level_name}-optimization"
        relation: str = RELATION_COMPILED_FROM
        chosen, note = optimized, None
        opt_out = run_model(optimized, x)
        opt_delta, opt_agree, _ = accuracy(opt_out, reference)

        # 2. Dynamic int8 quantization of the optimized model.
        if quantize == "none":
            note = "quantization disabled (quantize=none)"
        else:
            import logging
            from onnxruntime.quantization import QuantType, quantize_dynamic
            quantized = os.path.join(work, "quantized.onnx")
            candidates = quantizable_ops(optimized)
            count: int | None = 0
            if candidates:
                logging.disable(logging.WARNING)  # "Please consider to run pre-processing ..." on every call
                try:
                    quantize_dynamic(optimized, quantized, weight_type=QuantType.QInt8)
                    count = quantized_node_count(quantized)
                    session(quantized)
                except Exception as e:
                    count, note = None, f"quantize_dynamic failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
                finally:
                    logging.disable(logging.NOTSET)
            if count == 0:
                note = ("nothing quantizable: no MatMul/Gemm/Conv/LSTM/GRU/Attention node (operators: "
                        + ", ".join(sorted(all_ops(optimized))) + ")") if not candidates else \
                    f"quantize_dynamic quantized none of {len(candidates)} candidate node(s)"
            elif count:
                q_delta, q_agree, compared = accuracy(run_model(quantized, x), reference)
                log(f"quantize_dynamic (QInt8): {count} quantized node(s); accuracy delta {fmt(q_delta)}"
                    + (f", label agreement {q_agree:.4f}" if q_agree is not None else "")
                    + f" (compared {', '.join(compared) or 'nothing'})")
                if q_delta > max_delta:
                    note = f"quantized accuracy delta {fmt(q_delta)} exceeds max_accuracy_delta {fmt(max_delta)}"
                elif q_agree is not None and q_agree < min_agreement:
                    note = f"quantized label agreement {q_agree:.4f} is below min_label_agreement {min_agreement:g}"
                else:
                    chosen, method, relation = quantized, method + "+dynamic-int8", RELATION_QUANTIZED_FROM
        if note:
            log(f"keeping the optimized float model: {note}")

        after = median_latency_ms(chosen, x, runs)
        delta, agreement, _ = accuracy(run_model(chosen, x), reference) if chosen != optimized else (opt_delta, opt_agree, None)
        if chosen == optimized and (delta > max_delta or (agreement is not None and agreement < min_agreement)):
            raise StageError(f"the graph-optimized model already differs from the reference by {fmt(delta)}"
                             + (f" (label agreement {agreement:.4f})" if agreement is not None else "")
                             + f"; above max_accuracy_delta {fmt(max_delta)}")
        write_pruned(chosen, os.path.join(out, "model.onnx"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    carry_samples(inp, out)
    log(f"wrote model.onnx ({os.path.getsize(os.path.join(out, 'model.onnx'))} bytes, {method}); median latency "
        f"{before:.4f} -> {after:.4f} ms; accuracy delta {fmt(delta)}")
    annotations = {
        METRIC_PREFIX + "latency_before_ms": "%.4f" % before,
        METRIC_PREFIX + "latency_after_ms": "%.4f" % after,
        METRIC_PREFIX + "accuracy_delta": fmt(delta),
        "dev.depot.accelerate.method": method,
        "dev.depot.accelerate.runs": str(runs),
        "dev.depot.accelerate.batch": str(len(x)),
    }
    if agreement is not None:
        annotations[METRIC_PREFIX + "label_agreement"] = "%.4f" % agreement
    if note:
        annotations["dev.depot.accelerate.note"] = note
    write_result({RESULT_ARTIFACT_TYPE: ONNX_ARTIFACT_TYPE, RESULT_RELATION: relation, RESULT_ANNOTATIONS: annotations})
    return 0


# ---------------------------------------------------------------------------------------------
# GPU path: TensorRT via trtexec. Not runnable on the project's machines (no GPU, no TensorRT):
# written against trtexec's documented flags and output, never executed here.

def accelerate_tensorrt(inp: str, out: str, model_path: str, trtexec: str, cc: str) -> int:
    import numpy as np
    precision = choice_param("precision", ["fp32", "fp16"], "fp32")
    max_batch = number_param("max_batch", 64, int, low=1)
    inputs, outputs = graph_signature(model_path)
    x = None
    if os.path.exists(os.path.join(inp, "sample_inputs.npy")):
        x = np.load(os.path.join(inp, "sample_inputs.npy"), allow_pickle=False)
    shapes = {}
    for i in inputs:
        dims = i["dims"]
        if any(d == -1 for d in dims):
            if any(d == -1 for d in dims[1:]) and (x is None or len(inputs) != 1):
                raise StageError(f"input {i['name']} has dynamic dimensions besides the batch {dims}; push "
                                 "sample_inputs.npy so the optimization profile can be set", EX_CONFIG)
            rest = list(x.shape[1:]) if x is not None and len(inputs) == 1 else dims[1:]
            opt = len(x) if x is not None and len(inputs) == 1 else 1
            shapes[i["name"]] = ([1] + rest, [min(opt, max_batch)] + rest, [max(max_batch, opt)] + rest)
    plan = os.path.join(out, "model.plan")
    cmd = [trtexec, f"--onnx={model_path}", f"--saveEngine={plan}"]
    if precision == "fp16":
        cmd.append("--fp16")
    if shapes:
        for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            cmd.append(flag + "=" + ",".join(f"{n}:{'x'.join(str(d) for d in s[k])}" for n, s in shapes.items()))
    log("running " + " ".join(cmd))
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        raise StageError("trtexec did not finish within 3600 s")
    if p.returncode != 0 or not os.path.exists(plan):
        tail = "\n".join(l for l in p.stdout.splitlines() if "[E]" in l or "Error" in l)[-1500:] or p.stdout[-1500:]
        # A graph TensorRT cannot parse (e.g. ai.onnx.ml operators from skl2onnx) never builds: permanent.
        code = EX_CONFIG if "onnx" in tail.lower() and ("unsupported" in tail.lower() or "parse" in tail.lower()) else 1
        raise StageError(f"trtexec failed (exit {p.returncode}):\n{tail}", code)
    m = re.search(r"TensorRT v(\d+)", p.stdout)
    version = None
    if m:
        n = int(m.group(1))
        version = f"{n // 10000}.{n // 100 % 100}.{n % 100}" if n >= 10000 else f"{n // 1000}.{n // 100 % 10}.{n % 100}"
    latency = re.search(r"GPU Compute Time:.*?median = ([0-9.]+) ms", p.stdout)
    log(f"trtexec built model.plan ({os.path.getsize(plan)} bytes, {precision}) in {time.monotonic() - t0:.1f} s")
    info = {"compute_capability": cc, "tensorrt_version": version, "precision": precision,
            "inputs": inputs, "outputs": outputs, "max_batch": max_batch}
    with open(os.path.join(out, "tensorrt.json"), "w") as f:
        json.dump(info, f, indent=2)
    carry_samples(inp, out)
    short_version = ".".join((version or "").split(".")[:2])
    annotations = {
        "dev.depot.tensorrt.compute_capability": cc,
        "dev.depot.tensorrt.version": version or "unknown",
        "dev.depot.tensorrt.precision": precision,
        "dev.depot.accelerate.method": f"tensorrt-{precision}",
        # The platform string Depot's format reader checks plans against (Annotation.platform).
        PLATFORM_ANNOTATION: f"sm_{cc.replace('.', '')}" + (f",trt{short_version}" if version else ""),
    }
    if latency:
        annotations[METRIC_PREFIX + "latency_after_ms"] = latency.group(1)
    write_result({RESULT_ARTIFACT_TYPE: TENSORRT_ARTIFACT_TYPE, RESULT_RELATION: RELATION_COMPILED_FROM,
                  RESULT_ANNOTATIONS: annotations})
    return 0


def run() -> int:
    inp, out = stage_dirs()
    model_path = os.path.join(inp, "model.onnx")
    if not os.path.isfile(model_path):
        seen = sorted(os.listdir(inp))
        raise StageError(f"no model.onnx in the input (run convert first); files seen: {', '.join(seen) or 'none'}",
                         EX_CONFIG)
    method = choice_param("method", ["auto", "onnxruntime", "tensorrt"], "auto")
    trtexec = shutil.which("trtexec")
    cc = gpu_compute_capability() if trtexec and method != "onnxruntime" else None
    if method == "tensorrt" and not (trtexec and cc):
        raise StageError("method=tensorrt needs trtexec on PATH and a GPU that nvidia-smi lists; this runner has "
                         + ("neither" if not trtexec and not shutil.which("nvidia-smi") else
                            "no trtexec" if not trtexec else "no usable GPU"), EX_CONFIG)
    if trtexec and not cc and method == "auto":
        log(f"trtexec at {trtexec} but nvidia-smi lists no GPU with a compute capability: CPU path")
    if trtexec and cc:
        log(f"trtexec at {trtexec}, GPU compute capability {cc}: building a TensorRT engine")
        return accelerate_tensorrt(inp, out, model_path, trtexec, cc)
    log("no trtexec/GPU: onnxruntime graph optimization + dynamic int8 quantization on CPU"
        if method == "auto" else "method=onnxruntime: onnxruntime graph optimization + dynamic int8 quantization")
    return accelerate_cpu(inp, out, model_path)


if __name__ == "__main__":
    sys.exit(depot_hook.main(sys.argv, run, toolchain))
