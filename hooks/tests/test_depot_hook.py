"""depot_hook: parameters, workspace, result file, toolchain line and the main wrapper."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from typing import Any

import hookenv
from hookenv import EX_CONFIG, environ

import depot_hook
from depot_hook import StageError


class Params(hookenv.TempDirTest):
    def setUp(self) -> None:
        super().setUp()
        depot_hook.setup("test", 1)

    def test_param_prefers_the_variable_over_depot_params(self) -> None:
        with environ(DEPOT_PARAM_TOLERANCE="0.5", DEPOT_PARAMS='{"tolerance": "0.1", "runs": 7}'):
            self.assertEqual(depot_hook.param("tolerance"), "0.5")
            self.assertEqual(depot_hook.param("runs"), "7")  # str() of a JSON number
            self.assertIsNone(depot_hook.param("missing"))
            self.assertEqual(depot_hook.param("missing", "d"), "d")

    def test_param_null_in_depot_params_is_absent(self) -> None:
        with environ(DEPOT_PARAMS='{"x": null}'):
            self.assertEqual(depot_hook.param("x", "default"), "default")

    def test_invalid_depot_params_is_a_config_error(self) -> None:
        with environ(DEPOT_PARAMS="{not json"):
            with self.assertRaises(StageError) as e:
                depot_hook.param("x")
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("DEPOT_PARAMS is not valid JSON", str(e.exception))

    def test_structured_values(self) -> None:
        with environ(DEPOT_PARAMS='{"input_shape": [1, 3]}'):
            self.assertEqual(depot_hook.param("input_shape"), "[1, 3]")  # str() of the list
            depot_hook.setup("test", 1, structured_params_as_json=True)
            self.assertEqual(depot_hook.param("input_shape"), "[1, 3]")
            self.assertEqual(depot_hook.shape_param("input_shape"), [1, 3])
        with environ(DEPOT_PARAMS='{"m": {"a": "b"}}'):
            self.assertEqual(json.loads(depot_hook.param("m") or ""), {"a": "b"})

    def test_choice_param(self) -> None:
        with environ(DEPOT_PARAM_METHOD=" ONNXRuntime "):
            self.assertEqual(depot_hook.choice_param("method", ["auto", "onnxruntime"], "auto"), "onnxruntime")
        with environ():
            self.assertEqual(depot_hook.choice_param("method", ["auto", "onnxruntime"], "auto"), "auto")
        with environ(DEPOT_PARAM_METHOD="gpu"):
            with self.assertRaises(StageError) as e:
                depot_hook.choice_param("method", ["auto", "onnxruntime"], "auto")
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("must be one of auto, onnxruntime", str(e.exception))

    def test_number_param(self) -> None:
        with environ():
            self.assertEqual(depot_hook.number_param("runs", 50, int), 50)
        with environ(DEPOT_PARAM_RUNS=""):
            self.assertEqual(depot_hook.number_param("runs", 50, int), 50)
        with environ(DEPOT_PARAM_RUNS="12", DEPOT_PARAM_TOLERANCE="1e-3"):
            self.assertEqual(depot_hook.number_param("runs", 50, int, low=1), 12)
            self.assertEqual(depot_hook.number_param("tolerance", 1e-4), 1e-3)
        cases: list[tuple[str, Any, str]] = [("1.5", int, "is not an integer"), ("abc", float, "is not a number"),
                                             ("0", int, "must be >= 1"), ("nan", float, "must be >= 1")]
        for value, kind, message in cases:
            with self.subTest(value=value), environ(DEPOT_PARAM_X=value):
                with self.assertRaises(StageError) as e:
                    depot_hook.number_param("x", 1, kind, low=1)
                self.assertEqual(e.exception.code, EX_CONFIG)
                self.assertIn(message, str(e.exception))

    def test_bool_param(self) -> None:
        for value, want in (("true", True), ("YES", True), ("1", True), ("off", False), ("False", False)):
            with self.subTest(value=value), environ(DEPOT_PARAM_TRUST_PICKLE=value):
                self.assertIs(depot_hook.bool_param("trust_pickle"), want)
        with environ():
            self.assertIs(depot_hook.bool_param("trust_pickle"), False)
        with environ(DEPOT_PARAM_TRUST_PICKLE="maybe"):
            with self.assertRaises(StageError) as e:
                depot_hook.bool_param("trust_pickle")
        self.assertEqual(e.exception.code, EX_CONFIG)

    def test_shape_param(self) -> None:
        for value, want in (("1,3,224,224", [1, 3, 224, 224]), ("1x3x8", [1, 3, 8]), ("[2, 4]", [2, 4]), (" ", None)):
            with self.subTest(value=value), environ(DEPOT_PARAM_INPUT_SHAPE=value):
                self.assertEqual(depot_hook.shape_param("input_shape"), want)
        for value in ("1,a", "1,0", "[1, -2]", "[]", '["x"]'):
            with self.subTest(value=value), environ(DEPOT_PARAM_INPUT_SHAPE=value):
                with self.assertRaises(StageError) as e:
                    depot_hook.shape_param("input_shape")
                self.assertEqual(e.exception.code, EX_CONFIG)


class Workspace(hookenv.TempDirTest):
    def setUp(self) -> None:
        super().setUp()
        depot_hook.setup("test", 1)

    def test_stage_dirs(self) -> None:
        with environ(DEPOT_INPUT_DIR=self.inp, DEPOT_OUTPUT_DIR=self.out):
            self.assertEqual(depot_hook.stage_dirs(), (self.inp, self.out))
        self.assertTrue(os.path.isdir(self.out))

    def test_stage_dirs_missing_input(self) -> None:
        for env in ({"DEPOT_OUTPUT_DIR": self.out}, {"DEPOT_INPUT_DIR": os.path.join(self.tmp, "nope"), "DEPOT_OUTPUT_DIR": self.out},
                    {"DEPOT_INPUT_DIR": self.inp}):
            with self.subTest(env=env), environ(**env):
                with self.assertRaises(StageError) as e:
                    depot_hook.stage_dirs()
                self.assertEqual(e.exception.code, EX_CONFIG)

    def test_write_result(self) -> None:
        path = os.path.join(self.tmp, "result.json")
        result = {depot_hook.RESULT_RELATION: depot_hook.RELATION_CONVERTED_FROM,
                  depot_hook.RESULT_ANNOTATIONS: {depot_hook.METRIC_PREFIX + "x": "1"}}
        stdout = io.StringIO()
        with environ(DEPOT_RESULT=path), contextlib.redirect_stdout(stdout):
            depot_hook.write_result(result)
        with open(path) as f:
            self.assertEqual(json.load(f), result)
        self.assertEqual(stdout.getvalue(), "test: result " + json.dumps(result, sort_keys=True) + "\n")

    def test_write_result_without_depot_result_only_prints(self) -> None:
        stdout = io.StringIO()
        with environ(), contextlib.redirect_stdout(stdout):
            depot_hook.write_result({"relation": "converted-from"})
        self.assertIn('result {"relation": "converted-from"}', stdout.getvalue())
        self.assertEqual(os.listdir(self.tmp), ["input"])


class Toolchain(hookenv.TempDirTest):
    def test_line(self) -> None:
        depot_hook.setup("demo", 3)
        line = depot_hook.toolchain_line([("numpy", ["numpy"]), ("nothing", ["no-such-distribution-xyz"])],
                                         optional=[("alsonothing", ["no-such-distribution-xyz"])], extra=["tensorrt=10.3.0"])
        fields = line.split(" ")
        self.assertEqual(fields[0], "demo/3")
        self.assertRegex(fields[1], r"^python=\d+\.\d+\.\d+$")
        self.assertIn("nothing=absent", fields)
        self.assertFalse(any(f.startswith("alsonothing=") for f in fields))
        self.assertEqual(fields[-2], "tensorrt=10.3.0")
        with open(os.path.join(hookenv.BUILTIN, "depot_hook.py"), "rb") as f:
            self.assertEqual(fields[-1], "depot_hook=" + hashlib.sha256(f.read()).hexdigest()[:12])

    def test_dist_version(self) -> None:
        self.assertIsNone(depot_hook.dist_version("no-such-distribution-xyz"))
        self.assertRegex(depot_hook.dist_version("no-such-distribution-xyz", "pip") or "", r"^\d+")


class Main(hookenv.TempDirTest):
    def setUp(self) -> None:
        super().setUp()
        depot_hook.setup("test", 1)

    def call(self, argv: list[str], run: "object") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = depot_hook.main(argv, run, lambda: "test/1 toolchain")  # type: ignore[arg-type]
        return rc, out.getvalue(), err.getvalue()

    def test_toolchain_flag(self) -> None:
        self.assertEqual(self.call(["x.py", "--toolchain"], lambda: 5), (0, "test/1 toolchain\n", ""))

    def test_usage(self) -> None:
        rc, _, err = self.call(["x.py", "extra"], lambda: 0)
        self.assertEqual(rc, 2)
        self.assertIn("usage: x.py [--toolchain]", err)

    def test_run_status(self) -> None:
        rc, out, _ = self.call(["x.py"], lambda: 0)
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"test: done in \d+\.\d\d s")

    def test_stage_error_is_one_line_with_its_code(self) -> None:
        def run() -> int:
            raise StageError("bad input", EX_CONFIG)
        rc, _, err = self.call(["x.py"], run)
        self.assertEqual((rc, err), (EX_CONFIG, "test: error: bad input\n"))
        self.assertIsNone(re.search("Traceback", err))


if __name__ == "__main__":
    import unittest
    unittest.main()
