"""Shared code of the built-in pipeline hooks convert.py, accelerate.py and package.py
(docs/PIPELINES.md, "The stage contract"): parameters, the workspace directories, the result file,
the toolchain line and the `main` wrapper with its exit statuses.

Not a stage itself. The hooks import it as `import depot_hook`: Python puts the directory of the
script it runs on sys.path, so this file must stay next to them (the Dockerfile copies the whole
hooks/builtin directory).

Memoization: the runner's key for a built-in hashes only the hook script and its `--toolchain`
line (Sources/DepotRunner/Runner.swift, ToolchainCache), never this module. So every toolchain line
ends with `depot_hook=<first 12 hex digits of this file's sha256>` (see `toolchain_line`): a change
here changes the key of every built-in and their jobs run again instead of reusing outputs made by
the old code. Keep that field whatever else changes in the line.

Shared vocabulary: the lineage relations, annotation keys, DEPOT_RESULT field names and exit status
below are defined by the Swift side (Sources/DepotAPI/Vocabulary.swift, and the runner's
Sources/DepotRunner/StageExecution.swift). The hooks use them from here only, and
hooks/tests/test_vocabulary.py parses those Swift files and checks that every entry of
SWIFT_VOCABULARY has the same value there: a rename on either side fails that test.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import time
from typing import Any, Callable, Final, Iterable, Mapping, NoReturn, Sequence, TypeVar, Union

# ---------------------------------------------------------------------------------------------
# Vocabulary shared with the Swift side (see the module docstring)

EX_CONFIG: Final = 78  # "this input can never work": the runner fails the job at once, without retries

# Lineage relations (Swift: enum LineageRelation, raw values).
RELATION_CONVERTED_FROM: Final = "converted-from"
RELATION_COMPILED_FROM: Final = "compiled-from"
RELATION_QUANTIZED_FROM: Final = "quantized-from"
RELATION_PACKAGED_FROM: Final = "packaged-from"
RELATION_DERIVED_FROM: Final = "derived-from"  # the runner's default; listed so a stage may name it

# Annotation keys and prefixes (Swift: enum Annotation).
ANNOTATION_PREFIX: Final = "dev.depot."
METRIC_PREFIX: Final = "dev.depot.metric."  # metrics also land on the lineage edge
PLATFORM_ANNOTATION: Final = "dev.depot.platform"  # the platform a TensorRT plan was built for
# The runner writes these itself and refuses them in DEPOT_RESULT (StageExecution.reservedPrefixes).
LINEAGE_PREFIX: Final = "dev.depot.lineage."
JOB_PREFIX: Final = "dev.depot.job."
RESERVED_PREFIXES: Final = (LINEAGE_PREFIX, JOB_PREFIX)

# The keys of the DEPOT_RESULT object (StageResult.read in StageExecution.swift; any other key fails the job).
RESULT_ARTIFACT_TYPE: Final = "artifact_type"
RESULT_RELATION: Final = "relation"
RESULT_ANNOTATIONS: Final = "annotations"
RESULT_KEYS: Final = (RESULT_ARTIFACT_TYPE, RESULT_RELATION, RESULT_ANNOTATIONS)

# Every constant above with where Swift defines it: "<file stem>:<qualified name>", checked by
# hooks/tests/test_vocabulary.py. Add a line here when a hook starts using another shared word.
SWIFT_VOCABULARY: Final[Mapping[str, Union[str, int]]] = {
    "Vocabulary:LineageRelation.convertedFrom": RELATION_CONVERTED_FROM,
    "Vocabulary:LineageRelation.compiledFrom": RELATION_COMPILED_FROM,
    "Vocabulary:LineageRelation.quantizedFrom": RELATION_QUANTIZED_FROM,
    "Vocabulary:LineageRelation.packagedFrom": RELATION_PACKAGED_FROM,
    "Vocabulary:LineageRelation.derivedFrom": RELATION_DERIVED_FROM,
    "Vocabulary:Annotation.prefix": ANNOTATION_PREFIX,
    "Vocabulary:Annotation.metricPrefix": METRIC_PREFIX,
    "Vocabulary:Annotation.platform": PLATFORM_ANNOTATION,
    "Vocabulary:Annotation.Lineage.prefix": LINEAGE_PREFIX,
    "Vocabulary:Annotation.Job.prefix": JOB_PREFIX,
    "StageExecution:reservedPrefixes.0": LINEAGE_PREFIX,
    "StageExecution:reservedPrefixes.1": JOB_PREFIX,
    "StageExecution:resultKeys.0": RESULT_ARTIFACT_TYPE,
    "StageExecution:resultKeys.1": RESULT_RELATION,
    "StageExecution:resultKeys.2": RESULT_ANNOTATIONS,
    "StageExecution:permanentExitStatus": EX_CONFIG,
}

Result = dict[str, Any]  # what write_result takes: RESULT_KEYS -> values (annotations: str -> str)
Number = TypeVar("Number", int, float)

# Set by setup() before anything else runs.
HOOK: str | None = None
HOOK_VERSION: int | None = None
_STRUCTURED_PARAMS_AS_JSON = False


def setup(hook: str, version: int, structured_params_as_json: bool = False) -> None:
    """Names the hook (the prefix of every line it prints) and its version (in the toolchain line).

    structured_params_as_json: a list or dict value in DEPOT_PARAMS is returned by `param` as JSON
    (convert: `input_shape: [1, 3, 224, 224]`), otherwise as Python's str() of it. The runner passes
    strings only; this matters for hooks run by hand."""
    global HOOK, HOOK_VERSION, _STRUCTURED_PARAMS_AS_JSON
    HOOK, HOOK_VERSION, _STRUCTURED_PARAMS_AS_JSON = hook, version, structured_params_as_json


class StageError(Exception):
    """An expected failure: printed as one line on stderr, no traceback; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"{HOOK}: {msg}", flush=True)


def fmt(x: float) -> str:
    return "%.3g" % x


# ---------------------------------------------------------------------------------------------
# Toolchain identity

def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def module_identity() -> str:
    """`depot_hook=<first 12 hex digits of the sha256 of this file>`."""
    with open(os.path.abspath(__file__), "rb") as f:
        return "depot_hook=" + hashlib.sha256(f.read()).hexdigest()[:12]


def toolchain_line(libraries: Iterable[tuple[str, Sequence[str]]], optional: Iterable[tuple[str, Sequence[str]]] = (),
                   extra: Iterable[str] = ()) -> str:
    """`<hook>/<version> python=X.Y.Z <label>=<version>... depot_hook=<hash>`.

    libraries: (label, [distribution names]) always listed, `absent` when not installed; optional:
    listed only when installed, so a runner without them keeps its key; extra: ready-made fields.
    The depot_hook field comes last (see the module docstring: the runner does not hash this file)."""
    parts = [f"{HOOK}/{HOOK_VERSION}", "python=%d.%d.%d" % sys.version_info[:3]]
    for label, dists in libraries:
        parts.append(f"{label}={dist_version(*dists) or 'absent'}")
    for label, dists in optional:
        v = dist_version(*dists)
        if v:
            parts.append(f"{label}={v}")
    parts.extend(extra)
    parts.append(module_identity())
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Parameters: DEPOT_PARAM_<NAME>, else DEPOT_PARAMS (JSON object)

def param(name: str, default: str | None = None) -> str | None:
    v = os.environ.get("DEPOT_PARAM_" + name.upper())
    if v is not None:
        return v
    raw = os.environ.get("DEPOT_PARAMS")
    if raw:
        try:
            params = json.loads(raw)
        except ValueError:
            raise StageError(f"DEPOT_PARAMS is not valid JSON: {raw[:200]!r}", EX_CONFIG)
        if isinstance(params, dict) and params.get(name) is not None:
            v = params[name]
            if _STRUCTURED_PARAMS_AS_JSON and isinstance(v, (list, dict)):
                return json.dumps(v)
            return str(v)
    return default


def choice_param(name: str, choices: Sequence[str], default: str) -> str:
    v = (param(name) or default).strip().lower()
    if v not in choices:
        raise StageError(f"parameter {name}={v!r} must be one of {', '.join(choices)}", EX_CONFIG)
    return v


def number_param(name: str, default: Number, kind: Callable[[str], Number] = float, low: float = 0) -> Number:  # type: ignore[assignment]
    v = param(name)
    if v is None or v == "":
        return default
    try:
        x = kind(v)
    except ValueError:
        raise StageError(f"parameter {name}={v!r} is not a{'n integer' if kind is int else ' number'}", EX_CONFIG)
    if not x >= low:
        raise StageError(f"parameter {name}={v!r} must be >= {low}", EX_CONFIG)
    return x


def bool_param(name: str, default: bool = False) -> bool:
    v = param(name)
    if v is None or v == "":
        return default
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise StageError(f"parameter {name}={v!r} is not a boolean (true/false)", EX_CONFIG)


def shape_param(name: str) -> list[int] | None:
    v = param(name)
    if v is None or v.strip() == "":
        return None
    try:
        dims = json.loads(v) if v.strip().startswith("[") else [int(x) for x in v.replace("x", ",").split(",") if x.strip()]
        dims = [int(d) for d in dims]
    except (ValueError, TypeError):
        raise StageError(f"parameter {name}={v!r} is not a shape like 1,3,224,224", EX_CONFIG)
    if not dims or any(d <= 0 for d in dims):
        raise StageError(f"parameter {name}={v!r} must list positive dimensions", EX_CONFIG)
    return dims


# ---------------------------------------------------------------------------------------------
# Workspace and result

def stage_dirs() -> tuple[str, str]:
    inp, out = os.environ.get("DEPOT_INPUT_DIR"), os.environ.get("DEPOT_OUTPUT_DIR")
    if not inp or not os.path.isdir(inp):
        raise StageError(f"DEPOT_INPUT_DIR is not set or not a directory: {inp!r}", EX_CONFIG)
    if not out:
        raise StageError("DEPOT_OUTPUT_DIR is not set", EX_CONFIG)
    os.makedirs(out, exist_ok=True)
    return inp, out


def write_result(result: Result) -> None:
    print(f"{HOOK}: result " + json.dumps(result, sort_keys=True), flush=True)
    path = os.environ.get("DEPOT_RESULT")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Entry point

def main(argv: Sequence[str], run: Callable[[], int], toolchain: Callable[[], str]) -> int:
    """`--toolchain` prints toolchain() and exits 0; any other argument is a usage error (2);
    otherwise run(): its return value is the exit status, a StageError prints one line on stderr
    and exits with its code."""
    if "--toolchain" in argv[1:]:
        print(toolchain())
        return 0
    if len(argv) > 1:
        print(f"usage: {os.path.basename(argv[0])} [--toolchain]  (inputs come from DEPOT_* environment variables)",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        rc = run()
    except StageError as e:
        print(f"{HOOK}: error: {e}", file=sys.stderr, flush=True)
        return e.code
    log(f"done in {time.monotonic() - t0:.2f} s")
    return rc
