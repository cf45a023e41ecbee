"""Helpers of the hook tests: the hooks' directory on sys.path, a clean DEPOT_* environment, and
running a stage as the runner does (a child process with DEPOT_INPUT_DIR, DEPOT_OUTPUT_DIR,
DEPOT_RESULT and DEPOT_PARAM_<NAME>)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

HOOKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILTIN = os.path.join(HOOKS, "builtin")
ROOT = os.path.dirname(HOOKS)
if BUILTIN not in sys.path:
    sys.path.insert(0, BUILTIN)

EX_CONFIG = 78


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def clean_environ(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """os.environ without any DEPOT_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")}
    env.update(extra or {})
    return env


@contextlib.contextmanager
def environ(**variables: str) -> Iterator[None]:
    """Runs the block with exactly these DEPOT_* variables (others removed), then restores os.environ."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean_environ(variables))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class StageRun:
    rc: int
    stdout: str
    stderr: str
    result: Optional[dict[str, Any]]  # the DEPOT_RESULT file, when the stage wrote one
    out: str

    def describe(self) -> str:
        return f"exit {self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_stage(hook: str, inp: str, out: str, params: Optional[Mapping[str, str]] = None,
              env: Optional[Mapping[str, str]] = None, timeout: float = 300) -> StageRun:
    """Runs hooks/builtin/<hook>.py with this interpreter the way the runner does."""
    result_path = os.path.join(os.path.dirname(out.rstrip("/")) or ".", f"result-{hook}.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    variables = {"DEPOT_INPUT_DIR": inp, "DEPOT_OUTPUT_DIR": out, "DEPOT_RESULT": result_path,
                 "DEPOT_PARAMS": json.dumps(dict(params or {}), sort_keys=True)}
    for k, v in (params or {}).items():
        variables["DEPOT_PARAM_" + k.upper()] = v
    variables.update(env or {})
    p = subprocess.run([sys.executable, os.path.join(BUILTIN, hook + ".py")], env=clean_environ(variables),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    result = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    return StageRun(p.returncode, p.stdout, p.stderr, result, out)


class TempDirTest(unittest.TestCase):
    """A fresh temporary directory per test: self.tmp, with input/ and output/ paths."""

    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="depot-hook-test-")
        self.tmp = self._tmp.name
        self.inp = os.path.join(self.tmp, "input")
        self.out = os.path.join(self.tmp, "output")
        os.makedirs(self.inp)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def write(self, rel: str, data: bytes | str, base: Optional[str] = None) -> str:
        path = os.path.join(base or self.inp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path
