#!/usr/bin/env python3
"""Built-in pipeline stage `convert`: a model -> model.onnx (docs/PIPELINES.md, "The stage contract").

Inputs (DEPOT_INPUT_DIR):
  - a scikit-learn model saved with skops (*.skops: no code, only types skops trusts), pickled as
    *.pkl / *.pickle (pickle) or *.joblib (joblib, uncompressed) -> skl2onnx;
  - a PyTorch *.pt / *.pth (TorchScript archive, or a whole pickled nn.Module, both only with trust_pickle)
    -> torch.onnx.export, when torch is importable (needs the input_shape parameter);
  - a TensorFlow SavedModel directory (saved_model.pb) -> tf2onnx, when tf2onnx and tensorflow are
    importable;
  - optionally sample_inputs.npy (the rows to verify the conversion on).
Outputs (DEPOT_OUTPUT_DIR): model.onnx, sample_inputs.npy, sample_outputs.npz (the SOURCE model's
outputs on the samples, keyed by the ONNX output names; later stages compare against it).

Checks: onnx.checker (full_check), then onnxruntime against the source model on the samples;
fails (exit 1) when the max absolute difference exceeds the tolerance.

Parameters (DEPOT_PARAM_<NAME>, or DEPOT_PARAMS): target_opset, tolerance (default 1e-4),
model_file (which file when the input holds several models), input_shape (PyTorch: e.g.
"1,3,224,224"; also used for random samples of a TensorFlow model), trust_pickle (true: unpickle
anything; set by the server only, for a repository the operator lists in pipelines.trust_pickle;
pipeline files cannot set it).

Pickles: every pickle is scanned without being run and refused (exit 78) when it imports anything
outside pickle_allowlist.txt (the list the server's scanner uses), then loaded through an unpickler
restricted to the same list (docs/SECURITY.md).

Exit status: 0 done; 78 the input can never be converted on this runner (unknown format, missing
library, unconvertible model); 1 the conversion ran but failed verification, or another error.
`--toolchain` prints the hook version, library versions and the hash of the shared depot_hook.py (the line
is part of the job's memoization key).
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import re
import subprocess
import sys
import time
import warnings
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Optional

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnx

    Array = npt.NDArray[Any]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared module, even under PYTHONSAFEPATH
import depot_hook  # noqa: E402
from depot_hook import (EX_CONFIG, METRIC_PREFIX, RELATION_CONVERTED_FROM, RESULT_ANNOTATIONS, RESULT_ARTIFACT_TYPE,  # noqa: E402
                        RESULT_RELATION, StageError, bool_param, fmt, log, number_param, param, shape_param, stage_dirs,
                        write_result)

HOOK = "convert"
HOOK_VERSION = 1
ONNX_ARTIFACT_TYPE = "application/vnd.depot.onnx.v1"
RELATION = RELATION_CONVERTED_FROM

SKLEARN_EXT = (".pkl", ".pickle", ".joblib", ".skops")
TORCH_EXT = (".pt", ".pth")

# A list-valued parameter given in DEPOT_PARAMS (input_shape: [1, 3, 224, 224]) reaches shape_param as JSON.
depot_hook.setup(HOOK, HOOK_VERSION, structured_params_as_json=True)


def toolchain() -> str:
    return depot_hook.toolchain_line(
        [("skl2onnx", ["skl2onnx"]), ("onnx", ["onnx"]), ("onnxruntime", ["onnxruntime", "onnxruntime-gpu"]),
         ("scikit-learn", ["scikit-learn"]), ("numpy", ["numpy"])],
        # Optional converters appear only when installed, so a runner without them keeps its key.
        optional=[("joblib", ["joblib"]), ("torch", ["torch"]), ("tensorflow", ["tensorflow", "tensorflow-cpu"]),
                  ("tf2onnx", ["tf2onnx"])])


def first_sentence(e: object, limit: int = 300) -> str:
    """A library's error message, one line: ANSI colours removed, cut at the first sentence."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().replace("\n", " ")
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return (m.group(1) if m else text)[:limit]


def list_files(root: str) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".depot"))
        for fn in sorted(filenames):
            out.append(os.path.relpath(os.path.join(dirpath, fn), root))
    return out


# ---------------------------------------------------------------------------------------------
# Pickles. A pickle runs what it imports when it is loaded, and a runner converts whatever was pushed.
# The policy (docs/SECURITY.md): a pickle may import only the exact (module, qualified name)
# pairs of pickle_allowlist.txt, the file the server's scanner is checked against (one list). Every
# pickle is first scanned without being run (scan_pickle, the same walk as the server's
# Sources/DepotFormats/Pickle.swift), and refused when it imports anything else; it is then loaded
# through an unpickler that imports nothing outside the list either. trust_pickle lifts both, and
# only the server sets it: for a repository the operator lists in pipelines.trust_pickle.

ALLOWLIST_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pickle_allowlist.txt")
PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
JOBLIB_ARRAYS = "<joblib arrays: raw bytes inside the pickle, not scanned>"
JOBLIB_WRAPPERS = {"NumpyArrayWrapper", "NDArrayWrapper", "ZNDArrayWrapper"}
UNRESOLVED = "<unresolved STACK_GLOBAL>"
MAX_TRACKED = 1024
# joblib's compressors, by magic (a compressed dump cannot be scanned before it is decompressed).
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ", "xz"), (b"\x5d\x00\x00", "lzma"),
              (b"\x04\x22\x4d\x18", "lz4"), (b"ZF", "zlib"))


def load_allowlist(path: str = ALLOWLIST_FILE) -> frozenset[tuple[str, str]]:
    """The (module, qualified name) pairs of pickle_allowlist.txt ("module name" lines, # comments)."""
    pairs: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'module name', got {line!r}")
            pairs.add((parts[0], parts[1]))
    return frozenset(pairs)


ALLOWED = load_allowlist()


def allowed(module: str, name: str) -> bool:
    return (PY2_MODULES.get(module.strip(), module.strip()), name.strip()) in ALLOWED


def compression(head: bytes) -> Optional[str]:
    for magic, kind in COMPRESSED:
        if head.startswith(magic):
            return kind
    if len(head) >= 2 and head[0] & 0x0F == 8 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "zlib"
    return None


class StackModel:
    """The unpickler's stack as the scanner follows it (Pickle.swift's StackModel): the current frame (values
    pushed since the last MARK; its newest 64 kept, older ones counted as unknown) and the frames below. A
    value it does not know is None; it never returns a known value where the unpickler would pop another."""
    UNKNOWN_FRAME = sys.maxsize // 2

    def __init__(self) -> None:
        self.items: list[Optional[tuple[str, Any]]] = []
        self.unknown = 0
        self.frames: list[tuple[list[Optional[tuple[str, Any]]], int]] = []
        self.frames_not_kept = 0

    def top(self) -> Optional[tuple[str, Any]]:
        return self.items[-1] if self.items else None

    def push(self, item: Optional[tuple[str, Any]]) -> None:
        self.items.append(item)
        if len(self.items) > 64:
            del self.items[:32]
            self.unknown += 32

    def pop(self, n: int = 1) -> Optional[tuple[str, Any]]:
        item = None
        for _ in range(n):
            if self.items:
                item = self.items.pop()
            else:
                item = None
                if self.unknown > 0:
                    self.unknown -= 1
        return item

    def mark(self) -> None:
        if len(self.frames) < 1 << 16:
            self.frames.append((self.items, self.unknown))
        else:
            self.frames_not_kept += 1
        self.items, self.unknown = [], 0

    def pop_mark(self) -> None:
        if self.frames_not_kept > 0:
            self.frames_not_kept -= 1
            self.items, self.unknown = [], self.UNKNOWN_FRAME
        elif self.frames:
            self.items, self.unknown = self.frames.pop()
        else:
            self.items, self.unknown = [], self.UNKNOWN_FRAME

    def pop_or_mark(self) -> None:
        if not self.items and self.unknown == 0:
            self.pop_mark()
        else:
            self.pop()


# Each opcode's effect on the stack (pickle.py): (values popped, values pushed); MARK and the frame ones apart.
STACK_EFFECT = {
    "TUPLE1": (1, 1), "BINPERSID": (1, 1), "READONLY_BUFFER": (1, 1), "TUPLE2": (2, 1), "REDUCE": (2, 1),
    "NEWOBJ": (2, 1), "TUPLE3": (3, 1), "NEWOBJ_EX": (3, 1), "APPEND": (1, 0), "SETITEM": (2, 0), "BUILD": (2, 1),
}
FRAME_TO_VALUE = {"TUPLE", "LIST", "DICT", "FROZENSET", "OBJ"}
FRAME_CONSUMED = {"APPENDS", "SETITEMS", "ADDITEMS", "POP_MARK"}
STRING_OPS = {"STRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINSTRING", "SHORT_BINSTRING"}


def scan_pickle(f: IO[bytes]) -> list[str]:
    """The imports of the pickle at f's position that are not allowed ("module.name"), found by walking its
    opcodes without running any (the server's scan: Pickle.swift). Reads up to and including STOP; raises
    ValueError on a malformed pickle. Linear in its size."""
    import pickletools
    unsafe: list[str] = []
    stack = StackModel()
    memo: dict[int, tuple[str, Any]] = {}
    memo_count = 0
    array_wrapper = False

    def add_import(module: str, name: str) -> None:
        nonlocal array_wrapper
        module = PY2_MODULES.get(module.strip(), module.strip())
        name = name.strip()
        if (module, name) not in ALLOWED:
            unsafe.append(f"{module}.{name}")
        if module == "joblib.numpy_pickle" and name in JOBLIB_WRAPPERS:
            array_wrapper = True
        stack.push(("g", (module, name)) if len(module) <= MAX_TRACKED and len(name) <= MAX_TRACKED else None)

    for op, arg, _ in pickletools.genops(f):
        if array_wrapper:
            # joblib writes each array's raw bytes into the stream right after its wrapper: not opcodes.
            unsafe.append(JOBLIB_ARRAYS)
            return unsafe
        name = op.name
        if name == "STOP":
            break
        if name in STRING_OPS:
            text = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            stack.push(("s", text) if len(text.encode("utf-8", "surrogatepass")) <= MAX_TRACKED else None)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            add_import(module, attr)
        elif name == "INST":
            module, _, attr = str(arg).partition(" ")
            add_import(module, attr)
            stack.pop()
            stack.pop_mark()
            stack.push(None)
        elif name == "STACK_GLOBAL":
            n = stack.pop()
            m = stack.pop()
            if m is not None and n is not None and m[0] == "s" and n[0] == "s":
                add_import(m[1], n[1])
            else:
                unsafe.append(UNRESOLVED)
                stack.push(None)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = memo_count if name == "MEMOIZE" else int(str(arg))
            memo_count = max(memo_count, index + 1)
            top = stack.top()
            if top is not None and (len(memo) < 1 << 18 or index in memo):
                memo[index] = top
            else:
                memo.pop(index, None)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.push(memo.get(int(str(arg))))
        elif name in STACK_EFFECT:
            pops, pushes = STACK_EFFECT[name]
            stack.pop(pops)
            if pushes:
                stack.push(None)
        elif name in FRAME_TO_VALUE:
            stack.pop_mark()
            stack.push(None)
        elif name in FRAME_CONSUMED:
            stack.pop_mark()
        elif name == "MARK":
            stack.mark()
        elif name == "POP":
            stack.pop_or_mark()
        elif name == "DUP":
            stack.push(stack.top())
        elif name in ("PROTO", "FRAME"):
            pass
        else:
            stack.push(None)
    else:
        if array_wrapper:
            unsafe.append(JOBLIB_ARRAYS)
            return unsafe
        raise ValueError("pickle ends without a STOP opcode")
    return unsafe


def scan_file(path: str) -> list[str]:
    """Unsafe imports of a pickle-bearing file, as the server finds them: every *.pkl entry of a ZIP (a
    PyTorch archive), else the pickles at the start of the file (up to five back to back, as torch.save's
    legacy format writes). Raises ValueError for a file that cannot be scanned."""
    import zipfile
    name = os.path.basename(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        out: list[str] = []
        with zipfile.ZipFile(path) as z:
            entries = [i for i in z.infolist() if i.filename.endswith(".pkl")]
            if not any(i.filename == "data.pkl" or i.filename.endswith("/data.pkl") for i in entries):
                raise ValueError(f"{name} is a ZIP archive without a data.pkl entry, not a PyTorch checkpoint")
            for info in entries:
                with z.open(info) as entry:
                    out += scan_pickle(entry)
        return out
    kind = compression(head)
    if kind:
        raise ValueError(f"{name} is {kind}-compressed and cannot be scanned for the code it would run; save it "
                         "uncompressed (joblib.dump(..., compress=0)) or as a .skops file")
    out = []
    with open(path, "rb") as f:
        for i in range(5):
            if i > 0:
                at = f.tell()
                nxt = f.read(2)
                if len(nxt) < 2 or nxt[0] != 0x80 or not 2 <= nxt[1] <= 5:
                    break
                f.seek(at)
            out += scan_pickle(f)
    return out


def check_pickle(path: str) -> None:
    """Refuses (exit 78) a pickle-bearing file that imports anything outside the allow-list, without running it."""
    name = os.path.basename(path)
    try:
        unsafe = scan_file(path)
    except StageError:
        raise
    except Exception as e:  # ValueError from pickletools, zipfile.BadZipFile, EOFError...
        raise StageError(f"refusing to load {name}: it cannot be scanned for the code it would run ({type(e).__name__}: "
                         f"{first_sentence(e)})", EX_CONFIG)
    if unsafe:
        listed = ", ".join(sorted(set(unsafe))[:10])
        raise StageError(f"refusing to unpickle {name}: it references {listed}, outside the pickle allow-list "
                         "(pickles run code when loaded; hooks/builtin/pickle_allowlist.txt). Push safetensors, ONNX or a "
                         ".skops file, or have the operator trust this repository (pipelines.trust_pickle)", EX_CONFIG)


def make_find_class(filename: str) -> Callable[[Any, str, str], Any]:
    """A find_class that imports only allow-listed pairs, checked before anything is imported."""
    def find_class(self: Any, module: str, name: str) -> Any:
        mod_name = PY2_MODULES.get(module.strip(), module.strip())
        if (mod_name, name.strip()) not in ALLOWED:
            raise StageError(
                f"refusing to unpickle {filename}: it references {mod_name}.{name}, outside the pickle allow-list (pickles "
                "run code when loaded). Push safetensors, ONNX or a .skops file, or have the operator trust this "
                "repository (pipelines.trust_pickle)", EX_CONFIG)
        obj: Any = importlib.import_module(mod_name)
        for part in name.strip().split("."):
            obj = getattr(obj, part)
        return obj

    return find_class


def restricted_unpickler(f: BinaryIO, filename: str) -> pickle.Unpickler:
    """A pickle.Unpickler whose find_class admits only the allow-listed pairs."""
    find_class = make_find_class(filename)

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return find_class(self, module, name)

    return Restricted(f)


def load_skops(path: str) -> Any:
    """A .skops file: no code, only the types skops trusts by default are rebuilt (never the file's own list)."""
    name = os.path.basename(path)
    try:
        import skops.io as sio
    except ImportError:
        raise StageError(f"{name} is a skops file but skops is not installed on this runner", EX_CONFIG)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as e:
        raise StageError(f"{name} is not a valid skops file: {type(e).__name__}: {first_sentence(e)}", EX_CONFIG)
    if untrusted:
        raise StageError(f"refusing to load {name}: it holds types skops does not trust ({', '.join(untrusted[:10])})",
                         EX_CONFIG)
    try:
        return sio.load(path)
    except Exception as e:
        raise StageError(f"{name} could not be loaded by skops: {type(e).__name__}: {first_sentence(e)}", EX_CONFIG)


def load_sklearn(path: str, trusted: bool) -> Any:
    name = os.path.basename(path)
    if path.lower().endswith(".skops"):
        return load_skops(path)
    is_joblib = path.lower().endswith(".joblib")
    if not trusted:
        check_pickle(path)
    try:
        if is_joblib:
            try:
                import joblib
                import joblib.numpy_pickle as jnp
            except ImportError:
                raise StageError(f"{name} is a joblib file but joblib is not installed on this runner", EX_CONFIG)
            if trusted:
                return joblib.load(path)
            original = jnp.NumpyUnpickler.__dict__.get("find_class")
            jnp.NumpyUnpickler.find_class = make_find_class(name)
            try:
                return joblib.load(path)
            finally:
                if original is None:
                    del jnp.NumpyUnpickler.find_class
                else:
                    jnp.NumpyUnpickler.find_class = original
        with open(path, "rb") as f:
            if trusted:
                return pickle.load(f)
            return restricted_unpickler(f, name).load()
    except StageError:
        raise
    except (ModuleNotFoundError, ImportError) as e:
        raise StageError(f"{name} needs a Python module that is not installed on this runner: {e}", EX_CONFIG)
    except MemoryError:
        raise StageError(f"{name} could not be unpickled: out of memory", 1)
    except Exception as e:  # UnpicklingError, EOFError, ValueError, KeyError, ... from a corrupt file
        kind = "joblib" if is_joblib else "pickle"
        raise StageError(f"{name} is not a valid {kind} file: {type(e).__name__}: {str(e)[:300]}", EX_CONFIG)


# ---------------------------------------------------------------------------------------------
# Inputs

def find_model(inp: str) -> tuple[tuple[str, str], list[str]]:
    files = list_files(inp)
    sk = [f for f in files if f.lower().endswith(SKLEARN_EXT)]
    pt = [f for f in files if f.lower().endswith(TORCH_EXT)]
    tf = sorted({os.path.dirname(f) or "." for f in files if os.path.basename(f) == "saved_model.pb"})
    candidates = [("sklearn", f) for f in sk] + [("pytorch", f) for f in pt] + [("tensorflow", d) for d in tf]
    wanted = param("model_file")
    if wanted:
        chosen = [c for c in candidates if c[1] == wanted.strip("/")]
        if not chosen:
            raise StageError(f"model_file {wanted!r} is not a model file of the input; models seen: "
                             f"{', '.join(c[1] for c in candidates) or 'none'}; files: {', '.join(files) or 'none'}", EX_CONFIG)
        return chosen[0], files
    if not candidates:
        onnx_files = [f for f in files if f.lower().endswith(".onnx")]
        hint = f" ({', '.join(onnx_files)} is already ONNX: there is nothing to convert)" if onnx_files else ""
        raise StageError("no convertible model in the input: expected a scikit-learn pickle (*.pkl, *.pickle, *.joblib), "
                         "a PyTorch checkpoint (*.pt, *.pth) or a TensorFlow SavedModel (saved_model.pb)" + hint
                         + f"; files seen: {', '.join(files) or 'none (empty input)'}", EX_CONFIG)
    if len(candidates) > 1:
        raise StageError(f"the input holds {len(candidates)} models ({', '.join(c[1] for c in candidates)}); "
                         "set the parameter model_file to the one to convert", EX_CONFIG)
    return candidates[0], files


def load_samples(inp: str, files: list[str]) -> tuple[Array, str] | tuple[None, None]:
    import numpy as np
    rel = "sample_inputs.npy" if "sample_inputs.npy" in files else next(
        (f for f in files if os.path.basename(f) == "sample_inputs.npy"), None)
    if rel is None:
        return None, None
    try:
        arr = np.load(os.path.join(inp, rel), allow_pickle=False)
    except Exception as e:
        raise StageError(f"{rel} is not a readable .npy array: {type(e).__name__}: {e}", EX_CONFIG)
    if arr.size == 0:
        raise StageError(f"{rel} is empty (shape {arr.shape})", EX_CONFIG)
    return arr, rel


# ---------------------------------------------------------------------------------------------
# Comparison

def compare(name: str, reference: Any, actual: Any, tolerance: float, probabilities: Any = None) -> float:
    """Returns the max abs difference of a numeric output; labels must match (up to ties)."""
    import numpy as np
    ref, act = np.asarray(reference), np.asarray(actual)
    if ref.size != act.size:
        raise StageError(f"output {name!r}: the ONNX model returns shape {act.shape}, the source model {ref.shape}")
    ref, act = ref.reshape(-1), act.reshape(-1)
    if ref.dtype.kind in "iubUSO" or act.dtype.kind in "iubUSO":
        mismatch = [i for i in range(ref.size) if str(ref[i]) != str(act[i])]
        if probabilities is not None and mismatch:
            # A flip between two classes whose probabilities tie within the tolerance is no error.
            p = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)
            mismatch = [i for i in mismatch if p.shape[1] < 2 or p[i, -1] - p[i, -2] > tolerance]
        if mismatch:
            rows = ", ".join(f"row {i}: source {ref[i]!r} onnx {act[i]!r}" for i in mismatch[:5])
            raise StageError(f"output {name!r}: {len(mismatch)} of {ref.size} labels differ between the source model and "
                             f"onnxruntime ({rows})")
        return 0.0
    diff = np.abs(ref.astype(np.float64) - act.astype(np.float64))
    if not np.all(np.isfinite(diff)):
        raise StageError(f"output {name!r}: non-finite values (source or onnxruntime returned NaN/inf)")
    return float(diff.max()) if diff.size else 0.0


def run_onnx(path: str, samples: Array) -> tuple[dict[str, Array], Any]:
    """Runs a single-input ONNX model on the samples with onnxruntime: ({output name: array}, session)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    if len(sess.get_inputs()) != 1:
        raise StageError(f"the converted model has {len(sess.get_inputs())} inputs; verification supports one")
    feeds = {sess.get_inputs()[0].name: samples}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds))), sess


def onnx_np_dtype(sess_output_type: Optional[str]) -> Optional[type[Any]]:
    import numpy as np
    return {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}.get(sess_output_type or "")


def check_onnx(path: str) -> tuple[onnx.ModelProto, int | None]:
    import onnx
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        raise StageError(f"onnx.checker rejects the converted model: {str(e).strip()[:500]}")
    model = onnx.load(path, load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return model, opset


# ---------------------------------------------------------------------------------------------
# Converters

def convert_sklearn(inp: str, out: str, rel: str, files: list[str], tolerance: float) -> int:
    import numpy as np
    try:
        import skl2onnx
        from skl2onnx import convert_sklearn as to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as e:
        raise StageError(f"scikit-learn pickle {rel} needs skl2onnx, which is not importable on this runner: {e}", EX_CONFIG)
    model = load_sklearn(os.path.join(inp, rel), bool_param("trust_pickle"))
    kind = type(model).__module__ + "." + type(model).__qualname__
    if not type(model).__module__.startswith("sklearn") and not hasattr(model, "predict") and not hasattr(model, "transform"):
        raise StageError(f"{rel} holds a {kind}, not a scikit-learn model", EX_CONFIG)
    log(f"loaded {rel}: {kind}")

    samples, samples_rel = load_samples(inp, files)
    n_features = getattr(model, "n_features_in_", None)
    if samples is None:
        if n_features is None:
            raise StageError(f"{rel} ({kind}) does not record n_features_in_; push a sample_inputs.npy with the input",
                             EX_CONFIG)
        samples = np.random.default_rng(0).standard_normal((16, int(n_features))).astype(np.float32)
        log(f"no sample_inputs.npy: using 16 random rows (seed 0) of {n_features} features")
    else:
        if samples.ndim == 1:
            samples = samples.reshape(1, -1)
        if samples.ndim != 2 or (n_features is not None and samples.shape[1] != n_features):
            raise StageError(f"{samples_rel} has shape {samples.shape}, the model expects (rows, {n_features})", EX_CONFIG)
        samples = samples.astype(np.float32)
        log(f"sample inputs: {samples_rel} {samples.shape}")
    n_features = samples.shape[1]

    opset = param("target_opset")
    target_opset = None
    if opset:
        try:
            target_opset = int(opset)
        except ValueError:
            raise StageError(f"parameter target_opset={opset!r} is not an integer", EX_CONFIG)
    # Classifiers: no ZipMap, so the probabilities come out as a plain float tensor (Triton-friendly).
    from sklearn.base import is_classifier
    options = {"zipmap": False} if is_classifier(model) else None
    t0 = time.monotonic()
    try:
        onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, n_features]))],
                      target_opset=target_opset, options=options)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__
        raise StageError(f"skl2onnx {skl2onnx.__version__} cannot convert {kind}: {first}", EX_CONFIG)
    # skl2onnx may list a domain twice in opset_import (e.g. ('', 22) twice for tree/linear models);
    # keep one entry per domain: onnxruntime.quantization and some readers refuse duplicates.
    versions: dict[str, int] = {}
    for o in onx.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    if len(versions) != len(onx.opset_import):
        del onx.opset_import[:]
        for domain, version in versions.items():
            onx.opset_import.add(domain=domain, version=version)
    path = os.path.join(out, "model.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    log(f"skl2onnx {skl2onnx.__version__}: wrote model.onnx ({os.path.getsize(path)} bytes) in {time.monotonic() - t0:.2f} s")
    _, graph_opset = check_onnx(path)
    log(f"onnx.checker (full_check): ok, opset {graph_opset}")

    got, sess = run_onnx(path, samples)
    names = list(got)
    reference: dict[str, Any] = {}
    proba = None
    if hasattr(model, "predict_proba") and len(names) == 2:
        reference[names[0]] = model.predict(samples)
        proba = model.predict_proba(samples)
        reference[names[1]] = proba
    elif len(names) == 1:
        reference[names[0]] = model.predict(samples) if hasattr(model, "predict") else model.transform(samples)
    else:
        if hasattr(model, "predict"):
            reference[names[0]] = model.predict(samples)
        log(f"outputs {names[1:]} are not compared (no matching scikit-learn method)")
    return finish(out, samples, sess, got, reference, proba, tolerance, "sklearn", graph_opset, kind, target_opset)


def finish(out: str, samples: Array, sess: Any, got: dict[str, Array], reference: dict[str, Any], proba: Any, tolerance: float,
           source_format: str, opset: int | None, kind: str, target_opset: int | None = None) -> int:
    import numpy as np
    types = {o.name: o.type for o in sess.get_outputs()}
    max_diff = 0.0
    saved: dict[str, Array] = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        d = compare(name, ref, got[name], tolerance, probabilities=proba if ref.dtype.kind in "iubUSO" else None)
        log(f"output {name!r}: max abs diff {fmt(d)} over {ref.size} values" if ref.dtype.kind not in "iubUSO"
            else f"output {name!r}: all {ref.size} labels match")
        max_diff = max(max_diff, d)
        dt = onnx_np_dtype(types.get(name))
        if ref.dtype.kind == "O":
            ref = ref.astype(str)
        saved[name] = ref.astype(dt).reshape(got[name].shape) if dt is not None and ref.dtype.kind in "fiub" else ref
    if max_diff > tolerance:
        raise StageError(f"onnxruntime differs from the source model by {fmt(max_diff)} (max abs diff over "
                         f"{len(samples)} sample rows), above the tolerance {fmt(tolerance)}")
    np.save(os.path.join(out, "sample_inputs.npy"), samples)
    np.savez(os.path.join(out, "sample_outputs.npz"), **saved)
    log(f"wrote sample_inputs.npy {samples.shape} and sample_outputs.npz ({', '.join(saved)})")
    write_result({
        RESULT_ARTIFACT_TYPE: ONNX_ARTIFACT_TYPE,
        RESULT_RELATION: RELATION,
        RESULT_ANNOTATIONS: {
            METRIC_PREFIX + "max_abs_diff": fmt(max_diff),
            "dev.depot.convert.tolerance": fmt(tolerance),
            "dev.depot.convert.source_format": source_format,
            "dev.depot.convert.opset": str(opset),
            "dev.depot.convert.source_class": kind,
        } | ({"dev.depot.convert.target_opset": str(target_opset)} if target_opset else {}),
    })
    log(f"ok: max abs diff {fmt(max_diff)} <= tolerance {fmt(tolerance)}")
    return 0


def convert_pytorch(inp: str, out: str, rel: str, files: list[str], tolerance: float) -> int:
    import numpy as np
    name = os.path.basename(rel)
    try:
        import torch
    except ImportError:
        raise StageError(f"PyTorch checkpoint {name} needs torch (torch.onnx.export); torch is not installed on this runner",
                         EX_CONFIG)
    path = os.path.join(inp, rel)
    samples, samples_rel = load_samples(inp, files)
    shape = shape_param("input_shape")
    if samples is None:
        if shape is None:
            raise StageError(f"PyTorch checkpoint {name}: set the parameter input_shape (e.g. 1,3,224,224) or push a "
                             "sample_inputs.npy: torch.onnx.export needs an example input", EX_CONFIG)
        samples = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        log(f"no sample_inputs.npy: using random inputs (seed 0) of shape {tuple(shape)}")
    else:
        samples = samples.astype(np.float32)
        log(f"sample inputs: {samples_rel} {samples.shape}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise StageError(f"PyTorch checkpoint {name} is neither a ZIP archive nor a pickle (starts with {head!r}): "
                         "not a PyTorch checkpoint", EX_CONFIG)
    trusted = bool_param("trust_pickle")
    if not trusted:
        check_pickle(path)  # before torch reads it: torch.jit.load unpickles its constants too
    model = None
    try:
        model = torch.jit.load(path, map_location="cpu")
        kind = "torchscript"
    except Exception:
        pass
    if model is None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trusted)
        except Exception as e:
            if not trusted:
                raise StageError(f"PyTorch checkpoint {name} is neither a TorchScript archive nor loadable with "
                                 "weights_only=True (it pickles a whole module, or other objects); loading that runs "
                                 "code: set trust_pickle: true for a trusted input, or push a TorchScript archive "
                                 f"(torch.jit.save). torch said: {first_sentence(e)}", EX_CONFIG)
            if isinstance(e, (AttributeError, ImportError)):
                raise StageError(f"PyTorch checkpoint {name} pickles a module whose code is not importable on this runner "
                                 f"({first_sentence(e)}); push a TorchScript archive (torch.jit.save) instead", EX_CONFIG)
            raise StageError(f"PyTorch checkpoint {name} could not be loaded: {type(e).__name__}: {first_sentence(e)}",
                             EX_CONFIG)
        if not isinstance(obj, torch.nn.Module):
            raise StageError(f"PyTorch checkpoint {name} holds a {type(obj).__name__} (a state_dict or weights only), not a "
                             "module: exporting needs the model's code; push a TorchScript archive (torch.jit.save) instead",
                             EX_CONFIG)
        model, kind = obj, "module"
    model.eval()
    x = torch.from_numpy(samples)
    opset = int(param("target_opset") or 17)
    onnx_path = os.path.join(out, "model.onnx")
    t0 = time.monotonic()
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["output"], opset_version=opset,
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
            try:
                torch.onnx.export(model, (x,), onnx_path, dynamo=False, **kwargs)
            except TypeError:  # torch < 2.5 has no dynamo argument
                torch.onnx.export(model, (x,), onnx_path, **kwargs)
    except Exception as e:
        raise StageError(f"torch.onnx.export failed for {name}: {type(e).__name__}: {str(e).strip().splitlines()[0][:400]}",
                         EX_CONFIG)
    log(f"torch {torch.__version__}: exported {kind} {name} to model.onnx in {time.monotonic() - t0:.2f} s")
    _, graph_opset = check_onnx(onnx_path)
    log(f"onnx.checker (full_check): ok, opset {graph_opset}")
    got, sess = run_onnx(onnx_path, samples)
    with torch.no_grad():
        ref = model(x)
    if isinstance(ref, (tuple, list)):
        ref = ref[0]
    reference = {list(got)[0]: ref.detach().cpu().numpy()}
    return finish(out, samples, sess, got, reference, None, tolerance, "pytorch", graph_opset, kind)


def convert_tensorflow(inp: str, out: str, rel: str, files: list[str], tolerance: float) -> int:
    # Not exercised on the project's machines (no TensorFlow wheel is installed there).
    import numpy as np
    missing = [m for m in ("tf2onnx", "tensorflow") if importlib.util.find_spec(m) is None]
    if missing:
        raise StageError(f"TensorFlow SavedModel {rel or '.'} needs tf2onnx and tensorflow; not installed on this runner: "
                         f"{', '.join(missing)}", EX_CONFIG)
    import tensorflow as tf
    saved = os.path.join(inp, rel)
    onnx_path = os.path.join(out, "model.onnx")
    opset = param("target_opset") or "17"
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--output", onnx_path, "--opset", str(opset)]
    log("running " + " ".join(cmd))
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0 or not os.path.exists(onnx_path):
        tail = "\n".join(p.stdout.strip().splitlines()[-5:])
        raise StageError(f"tf2onnx failed (exit {p.returncode}) for SavedModel {rel or '.'}: {tail}", EX_CONFIG)
    log(f"tf2onnx: wrote model.onnx in {time.monotonic() - t0:.2f} s")
    _, graph_opset = check_onnx(onnx_path)
    fn = tf.saved_model.load(saved).signatures.get("serving_default")
    if fn is None:
        raise StageError(f"SavedModel {rel or '.'} has no serving_default signature to verify against", EX_CONFIG)
    in_specs = list(fn.structured_input_signature[1].items())
    if len(in_specs) != 1:
        raise StageError(f"SavedModel {rel or '.'}: verification supports one input, the signature has {len(in_specs)}",
                         EX_CONFIG)
    samples, _ = load_samples(inp, files)
    if samples is None:
        shape = shape_param("input_shape") or [d if d is not None else 1 for d in in_specs[0][1].shape.as_list()]
        samples = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    samples = samples.astype(in_specs[0][1].dtype.as_numpy_dtype)
    got, sess = run_onnx(onnx_path, samples)
    ref = fn(**{in_specs[0][0]: tf.constant(samples)})
    ref_values = [v.numpy() for _, v in sorted(ref.items())]
    reference: dict[str, Any] = {}
    for name, arr in zip(got, ref_values):
        reference[name] = arr
    return finish(out, samples, sess, got, reference, None, tolerance, "tensorflow", graph_opset, "savedmodel")


def run() -> int:
    inp, out = stage_dirs()
    tolerance = number_param("tolerance", 1e-4)
    (fmt_name, rel), files = find_model(inp)
    log(f"input {inp}: {len(files)} file(s); converting {rel} ({fmt_name}); tolerance {fmt(tolerance)}")
    for mod in ("numpy", "onnx", "onnxruntime"):
        if importlib.util.find_spec(mod) is None:
            raise StageError(f"{mod} is not installed on this runner (needed for every conversion)", EX_CONFIG)
    if fmt_name == "sklearn":
        return convert_sklearn(inp, out, rel, files, tolerance)
    if fmt_name == "pytorch":
        return convert_pytorch(inp, out, rel, files, tolerance)
    return convert_tensorflow(inp, out, "" if rel == "." else rel, files, tolerance)


if __name__ == "__main__":
    sys.exit(depot_hook.main(sys.argv, run, toolchain))
