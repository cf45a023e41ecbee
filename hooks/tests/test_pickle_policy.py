"""The pickle policy (docs/SECURITY.md): one allow-list shared with the server's scanner, and a
corpus of malicious model files (scripts/security/make_pickle_corpus.py), every one refused by convert
without running anything (a marker file proves it), compared with picklescan, modelscan and fickling
where they are installed (scripts/install-deps.sh --test puts them in the e2e venv)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import hookenv
from hookenv import EX_CONFIG, has_module, run_stage

import convert
from depot_hook import StageError

SWIFT_LIST = os.path.join(hookenv.ROOT, "Sources", "DepotFormats", "PickleAllowList.swift")
CORPUS_SCRIPT = os.path.join(hookenv.ROOT, "scripts", "security", "make_pickle_corpus.py")
SKLEARN_EXT = (".pkl", ".pickle", ".joblib")


def swift_pairs() -> list[tuple[str, str]]:
    """The pairs of PickleAllowList.pairs, in order (each a "module name" string literal)."""
    with open(SWIFT_LIST, encoding="utf-8") as f:
        text = f.read()
    header = "public static let pairs: [String] = ["
    body = text[text.index(header) + len(header):]
    body = body[:body.index("\n    ]")]
    return [tuple(s.split(" ")) for s in re.findall(r'"([^"]*)"', body)]


class AllowList(unittest.TestCase):
    def test_swift_and_python_use_the_same_list(self) -> None:
        pairs = swift_pairs()
        self.assertTrue(all(len(p) == 2 for p in pairs), pairs)
        self.assertEqual(len(pairs), len(set(pairs)), "duplicates in PickleAllowList.swift")
        self.assertEqual(set(pairs), set(convert.ALLOWED),
                         "hooks/builtin/pickle_allowlist.txt and Sources/DepotFormats/PickleAllowList.swift differ")

    def test_exact_pairs_never_packages(self) -> None:
        for module, name in convert.ALLOWED:
            self.assertNotIn("*", module + name)
            self.assertRegex(module, r"^[A-Za-z_][A-Za-z0-9_.]*$")
            self.assertRegex(name, r"^[A-Za-z_][A-Za-z0-9_]*$", "a qualified name that walks attributes")
        for gadget in [("os", "system"), ("builtins", "getattr"), ("builtins", "eval"), ("numpy", "load"),
                       ("torch.storage", "_load_from_bytes"), ("joblib.numpy_pickle", "NDArrayWrapper"),
                       ("numpy", "memmap"), ("builtins", "__import__")]:
            self.assertNotIn(gadget, convert.ALLOWED)

    def test_python2_names_are_renamed_like_the_server(self) -> None:
        self.assertTrue(convert.allowed("copy_reg", "_reconstructor"))
        self.assertTrue(convert.allowed("__builtin__", "set"))
        self.assertFalse(convert.allowed("__builtin__", "eval"))


class Corpus(unittest.TestCase):
    tmp: str
    marker: str
    dir: str
    files: list[str]
    evil: list[str]
    safe: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.mkdtemp(prefix="depot-pickle-corpus-")
        cls.marker = os.path.join(cls.tmp, "MARKER")
        cls.dir = os.path.join(cls.tmp, "corpus")
        out = subprocess.run([sys.executable, CORPUS_SCRIPT, cls.dir, cls.marker], capture_output=True, text=True, check=True)
        cls.files = out.stdout.split()
        cls.evil = [f for f in cls.files if f.startswith("evil/")]
        cls.safe = [f for f in cls.files if f.startswith("safe/")]

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self) -> None:
        if os.path.exists(self.marker):
            os.remove(self.marker)

    def assert_no_marker(self, what: str) -> None:
        self.assertFalse(os.path.exists(self.marker), f"{what}: the payload ran")

    def test_corpus_is_big_enough(self) -> None:
        self.assertGreaterEqual(len(self.evil), 50, self.evil)

    def test_every_malicious_file_is_refused_without_running(self) -> None:
        for rel in self.evil:
            with self.subTest(file=rel):
                path = os.path.join(self.dir, rel)
                with self.assertRaises(StageError) as e:
                    if rel.lower().endswith(SKLEARN_EXT):
                        convert.load_sklearn(path, trusted=False)   # what convert does for a scikit-learn input
                    else:
                        convert.check_pickle(path)                  # what convert does before torch.load
                self.assertEqual(e.exception.code, EX_CONFIG)
                self.assertRegex(str(e.exception), "refusing to (unpickle|load)")
                self.assert_no_marker(rel)

    def test_safe_files_pass(self) -> None:
        for rel in self.safe:
            with self.subTest(file=rel):
                path = os.path.join(self.dir, rel)
                convert.check_pickle(path)
                if rel.endswith(".pkl"):
                    convert.load_sklearn(path, trusted=False)

    def test_the_stage_refuses_with_78(self) -> None:
        with tempfile.TemporaryDirectory() as t:
            inp, out = os.path.join(t, "in"), os.path.join(t, "out")
            os.makedirs(inp)
            os.makedirs(out)
            shutil.copy(os.path.join(self.dir, "evil", "memo_binget_stack_global.pkl"), os.path.join(inp, "model.pkl"))
            r = run_stage("convert", inp, out)
            if not all(has_module(m) for m in ("numpy", "sklearn", "skl2onnx", "onnx", "onnxruntime")):
                self.skipTest("skl2onnx/scikit-learn not installed: convert stops before unpickling")
            self.assertEqual(r.rc, EX_CONFIG, r.describe())
            self.assertIn("refusing to unpickle model.pkl: it references os.system", r.stderr)
            self.assert_no_marker("convert stage")

    def flagged_by(self, tool: str) -> set[str]:
        """Corpus files (evil and safe) the tool flags: an issue reported, or a file it could not scan
        (a refusal, as Depot counts it); a warning about an unparsable file is not. One run per tool over
        the corpus (per-file runs took minutes), fickling through its API."""
        binary = os.path.join(os.path.dirname(sys.executable), tool)
        flagged: set[str] = set()
        rel = {os.path.join(self.dir, f): f for f in self.files}
        if tool == "picklescan":
            r = subprocess.run([binary, "-p", self.dir], capture_output=True, text=True, timeout=600)
            for line in (r.stdout + r.stderr).splitlines():
                m = re.match(r"^(?:ERROR: parsing pickle in )?(/.+?)(?::[^:/]+(?:/[^:]+)*)?: (?:dangerous import|at position|.*FOUND)", line)
                if m and m.group(1) in rel and ("FOUND" in line or line.startswith("ERROR")):
                    flagged.add(rel[m.group(1)])
        elif tool == "modelscan":
            report = os.path.join(self.tmp, "modelscan.json")
            subprocess.run([binary, "-p", self.dir, "-r", "json", "-o", report], capture_output=True, text=True, timeout=600)
            with open(report) as f:
                data = json.load(f)
            for item in data.get("issues", []) + data.get("errors", []):
                source = str(item.get("source", "")).split(":")[0]
                if source in self.files:
                    flagged.add(source)
        else:
            from fickling.analysis import Severity, check_safety
            from fickling.fickle import Pickled
            for path, name in rel.items():
                try:  # fickling.is_likely_safe, with its JSON report kept out of the working directory
                    with open(path, "rb") as fh:
                        pickled = Pickled.load(fh, fail_on_decode_error=False)
                    report = os.path.join(self.tmp, "fickling.json")
                    if pickled.has_invalid_opcode or check_safety(pickled, json_output_path=report).severity != Severity.LIKELY_SAFE:
                        flagged.add(name)
                except Exception:
                    flagged.add(name)
        self.assert_no_marker(tool)
        return flagged

    def test_depot_flags_everything_the_other_scanners_flag(self) -> None:
        tools = [t for t in ("picklescan", "modelscan") if os.path.exists(os.path.join(os.path.dirname(sys.executable), t))]
        tools += ["fickling"] if has_module("fickling") else []
        if not tools:
            self.skipTest("picklescan, modelscan and fickling are not installed (scripts/install-deps.sh --test)")
        depot = set()
        for rel in self.files:
            try:
                convert.check_pickle(os.path.join(self.dir, rel))
            except StageError:
                depot.add(rel)
        self.assertEqual(depot & set(self.evil), set(self.evil))
        report = [f"depot flags {len(depot & set(self.evil))} of {len(self.evil)} malicious files, "
                  f"{len(depot & set(self.safe))} of {len(self.safe)} safe ones"]
        for tool in tools:
            flagged = self.flagged_by(tool)
            missed = sorted(set(self.evil) - flagged)
            report.append(f"{tool}: flags {len(flagged & set(self.evil))} of {len(self.evil)} malicious files, "
                          f"{len(flagged & set(self.safe))} of {len(self.safe)} safe ones; misses: {', '.join(missed) or 'none'}")
            self.assertEqual(sorted(flagged & set(self.evil) - depot), [], f"{tool} flags files Depot does not")
        text = "\n".join(report)
        if os.environ.get("DEPOT_SCANNER_REPORT"):
            with open(os.environ["DEPOT_SCANNER_REPORT"], "w") as f:
                f.write(text + "\n")
        print("\n" + text, file=sys.stderr)


if __name__ == "__main__":
    unittest.main()


class Gadget:
    """A type skops does not trust: loading it would need its code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, str]) -> None:
        open(state["marker"], "w").close()


@unittest.skipUnless(all(has_module(m) for m in ("numpy", "sklearn", "skl2onnx", "onnx", "onnxruntime", "skops")),
                     "skops, scikit-learn or skl2onnx not installed")
class Skops(hookenv.TempDirTest):
    def test_a_skops_model_converts(self) -> None:
        import numpy as np
        import skops.io as sio
        from sklearn.linear_model import LogisticRegression
        x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
        model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
        sio.dump(model, os.path.join(self.inp, "model.skops"))
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, 0, r.describe())
        assert r.result is not None
        self.assertEqual(r.result["annotations"]["dev.depot.convert.source_class"],
                         "sklearn.linear_model._logistic.LogisticRegression")

    def test_untrusted_types_are_refused_without_running(self) -> None:
        import skops.io as sio
        marker = os.path.join(self.tmp, "pwned")
        sio.dump({"model": Gadget(marker)}, os.path.join(self.inp, "model.skops"))
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("holds types skops does not trust", r.stderr)
        self.assertIn("Gadget", r.stderr)
        self.assertFalse(os.path.exists(marker), "the payload ran")
