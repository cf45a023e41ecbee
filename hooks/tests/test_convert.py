"""convert: input discovery, comparison, the pickle allow-list, and real conversions (scikit-learn
always; PyTorch when torch is importable, else skipped)."""
from __future__ import annotations

import io
import os
import pickle
import unittest

import hookenv
from hookenv import EX_CONFIG, environ, has_module, run_stage

import convert
import depot_hook
from depot_hook import StageError

HAS_SKLEARN = all(has_module(m) for m in ("numpy", "sklearn", "skl2onnx", "onnx", "onnxruntime"))
HAS_TORCH = has_module("torch") and all(has_module(m) for m in ("numpy", "onnx", "onnxruntime"))


class Payload:
    """Pickles to `os.system("touch <marker>")`: a model file that runs code when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class FindModel(hookenv.TempDirTest):
    def find(self, **params: str) -> tuple[tuple[str, str], list[str]]:
        with environ(**{"DEPOT_PARAM_" + k.upper(): v for k, v in params.items()}):
            return convert.find_model(self.inp)

    def test_one_model_of_each_kind(self) -> None:
        self.write("model.pkl", b"x")
        self.assertEqual(self.find()[0], ("sklearn", "model.pkl"))
        os.remove(os.path.join(self.inp, "model.pkl"))
        self.write("sub/net.PTH", b"x")
        self.assertEqual(self.find()[0], ("pytorch", "sub/net.PTH"))
        os.remove(os.path.join(self.inp, "sub/net.PTH"))
        self.write("saved/saved_model.pb", b"x")
        self.assertEqual(self.find()[0], ("tensorflow", "saved"))

    def test_runner_files_are_ignored(self) -> None:
        self.write(".depot/model.pkl", b"x")
        self.write("model.joblib", b"x")
        self.assertEqual(self.find(), (("sklearn", "model.joblib"), ["model.joblib"]))

    def test_nothing_to_convert(self) -> None:
        self.write("model.onnx", b"x")
        with self.assertRaises(StageError) as e:
            self.find()
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("model.onnx is already ONNX", str(e.exception))

    def test_empty_input(self) -> None:
        with self.assertRaises(StageError) as e:
            self.find()
        self.assertIn("none (empty input)", str(e.exception))

    def test_several_models_need_model_file(self) -> None:
        self.write("a.pkl", b"x")
        self.write("b.pt", b"x")
        with self.assertRaises(StageError) as e:
            self.find()
        self.assertIn("set the parameter model_file", str(e.exception))
        self.assertEqual(self.find(model_file="/b.pt")[0], ("pytorch", "b.pt"))
        with self.assertRaises(StageError) as e:
            self.find(model_file="c.pkl")
        self.assertIn("models seen: a.pkl, b.pt", str(e.exception))


class Helpers(unittest.TestCase):
    def test_first_sentence(self) -> None:
        self.assertEqual(convert.first_sentence("\x1b[31mWeights only load failed.\x1b[0m Details\nmore"),
                         "Weights only load failed.")
        self.assertEqual(convert.first_sentence("no stop at all", limit=5), "no st")

    @unittest.skipUnless(has_module("numpy"), "numpy is not installed")
    def test_compare(self) -> None:
        import numpy as np
        self.assertAlmostEqual(convert.compare("y", np.array([1.0, 2.0]), np.array([1.0, 2.5]), 1.0), 0.5)
        self.assertEqual(convert.compare("label", np.array([1, 2]), np.array([1, 2]), 0.0), 0.0)
        with self.assertRaisesRegex(StageError, "1 of 2 labels differ"):
            convert.compare("label", np.array([1, 2]), np.array([1, 3]), 0.0)
        # A flip between two classes whose probabilities tie within the tolerance is no error.
        proba = np.array([[0.9, 0.1], [0.5, 0.5]])
        self.assertEqual(convert.compare("label", np.array([0, 0]), np.array([0, 1]), 1e-3, proba), 0.0)
        with self.assertRaisesRegex(StageError, "returns shape"):
            convert.compare("y", np.zeros(3), np.zeros(4), 1.0)
        with self.assertRaisesRegex(StageError, "non-finite"):
            convert.compare("y", np.array([np.nan]), np.array([0.0]), 1.0)

    def test_onnx_np_dtype(self) -> None:
        self.assertIsNone(convert.onnx_np_dtype(None))
        self.assertIsNone(convert.onnx_np_dtype("tensor(string)"))


class Pickles(hookenv.TempDirTest):
    """A pickle runs code when it is loaded: convert unpickles through an allow-list."""

    def test_refuses_code_and_does_not_run_it(self) -> None:
        marker = os.path.join(self.tmp, "pwned")
        path = self.write("model.pkl", pickle.dumps(Payload(marker)))
        with self.assertRaises(StageError) as e:
            convert.load_sklearn(path, trusted=False)
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("refusing to unpickle model.pkl: it references posix.system", str(e.exception))
        self.assertFalse(os.path.exists(marker), "the pickled code ran")

    def test_refuses_builtins_outside_the_allow_list(self) -> None:
        path = self.write("model.pkl", pickle.dumps(print))
        with self.assertRaisesRegex(StageError, "builtins.print"):
            convert.load_sklearn(path, trusted=False)

    def test_corrupt_pickle(self) -> None:
        path = self.write("model.pkl", b"not a pickle")
        with self.assertRaises(StageError) as e:
            convert.load_sklearn(path, trusted=False)
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("refusing to load model.pkl: it cannot be scanned", str(e.exception))

    def test_plain_data_loads(self) -> None:
        path = self.write("model.pkl", pickle.dumps({"a": [1, 2.0, (3,)], "b": {1, 2}}))
        self.assertEqual(convert.load_sklearn(path, trusted=False), {"a": [1, 2.0, (3,)], "b": {1, 2}})

    def test_restricted_unpickler(self) -> None:
        with self.assertRaises(StageError):
            convert.restricted_unpickler(io.BytesIO(pickle.dumps(Payload("x"))), "m.pkl").load()

    def test_stage_refuses_code_pickle_with_78(self) -> None:
        marker = os.path.join(self.tmp, "pwned")
        self.write("model.pkl", pickle.dumps(Payload(marker)))
        r = run_stage("convert", self.inp, self.out)
        if not HAS_SKLEARN:
            self.skipTest("skl2onnx/scikit-learn not installed: convert stops before unpickling")
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("convert: error: refusing to unpickle model.pkl", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertFalse(os.path.exists(marker), "the pickled code ran")
        self.assertIsNone(r.result)


class StageErrors(hookenv.TempDirTest):
    def test_missing_input_dir(self) -> None:
        r = run_stage("convert", os.path.join(self.tmp, "missing"), self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("DEPOT_INPUT_DIR is not set or not a directory", r.stderr)

    def test_empty_input(self) -> None:
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("no convertible model in the input", r.stderr)

    def test_bad_tolerance(self) -> None:
        self.write("model.pkl", b"x")
        r = run_stage("convert", self.inp, self.out, {"tolerance": "-1"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("parameter tolerance='-1' must be >= 0", r.stderr)

    @unittest.skipIf(HAS_TORCH, "torch is installed")
    def test_pytorch_without_torch(self) -> None:
        self.write("model.pt", b"PK\x03\x04")
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("torch is not installed on this runner", r.stderr)

    def test_usage(self) -> None:
        import subprocess
        import sys
        p = subprocess.run([sys.executable, os.path.join(hookenv.BUILTIN, "convert.py"), "--bogus"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hookenv.clean_environ())
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage: convert.py [--toolchain]", p.stderr)


@unittest.skipUnless(HAS_SKLEARN, "numpy, scikit-learn, skl2onnx, onnx or onnxruntime not installed")
class SklearnConversion(hookenv.TempDirTest):
    def test_logistic_regression(self) -> None:
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        rng = np.random.default_rng(0)
        x = rng.standard_normal((40, 4)).astype(np.float32)
        model = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))
        self.write("model.pkl", pickle.dumps(model))
        np.save(os.path.join(self.inp, "sample_inputs.npy"), x[:8])
        r = run_stage("convert", self.inp, self.out, {"tolerance": "1e-4"})
        self.assertEqual(r.rc, 0, r.describe())
        self.assertEqual(sorted(os.listdir(self.out)), ["model.onnx", "sample_inputs.npy", "sample_outputs.npz"])
        assert r.result is not None
        self.assertEqual(set(r.result), set(depot_hook.RESULT_KEYS))
        self.assertEqual(r.result["artifact_type"], "application/vnd.depot.onnx.v1")
        self.assertEqual(r.result["relation"], "converted-from")
        ann = r.result["annotations"]
        self.assertEqual(ann["dev.depot.convert.source_format"], "sklearn")
        self.assertEqual(ann["dev.depot.convert.source_class"], "sklearn.linear_model._logistic.LogisticRegression")
        self.assertLessEqual(float(ann["dev.depot.metric.max_abs_diff"]), 1e-4)
        self.assertTrue(all(isinstance(v, str) for v in ann.values()))
        self.assertFalse(any(k.startswith(depot_hook.RESERVED_PREFIXES) for k in ann))

    def test_samples_of_the_wrong_width(self) -> None:
        import numpy as np
        from sklearn.linear_model import LinearRegression
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        self.write("model.pkl", pickle.dumps(LinearRegression().fit(x, x.sum(axis=1))))
        np.save(os.path.join(self.inp, "sample_inputs.npy"), np.zeros((2, 5), dtype=np.float32))
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("sample_inputs.npy has shape (2, 5), the model expects (rows, 3)", r.stderr)

    def test_pickled_samples_are_refused(self) -> None:
        import numpy as np
        from sklearn.linear_model import LinearRegression
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        self.write("model.pkl", pickle.dumps(LinearRegression().fit(x, x.sum(axis=1))))
        np.save(os.path.join(self.inp, "sample_inputs.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
        r = run_stage("convert", self.inp, self.out)
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("sample_inputs.npy is not a readable .npy array", r.stderr)


@unittest.skipUnless(HAS_TORCH, "torch is not installed (the e2e venv has none): PyTorch conversion not tested")
class PytorchConversion(hookenv.TempDirTest):
    def tiny(self) -> "object":
        import torch
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()

    def test_torchscript_converts_and_verifies(self) -> None:
        import torch
        model = self.tiny()
        torch.jit.save(torch.jit.script(model), os.path.join(self.inp, "model.pt"))
        # A TorchScript archive imports __torch__ classes, outside the allow-list: it converts only for a
        # repository the operator trusts (the server then sets trust_pickle).
        r = run_stage("convert", self.inp, self.out, {"input_shape": "2,4"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("outside the pickle allow-list", r.stderr)
        r = run_stage("convert", self.inp, self.out, {"input_shape": "2,4", "trust_pickle": "true"})
        self.assertEqual(r.rc, 0, r.describe())
        assert r.result is not None
        self.assertEqual(r.result["relation"], "converted-from")
        self.assertEqual(r.result["annotations"]["dev.depot.convert.source_format"], "pytorch")
        self.assertEqual(r.result["annotations"]["dev.depot.convert.source_class"], "torchscript")
        self.assertLessEqual(float(r.result["annotations"]["dev.depot.metric.max_abs_diff"]), 1e-4)
        self.assertTrue(os.path.isfile(os.path.join(self.out, "model.onnx")))

    def test_without_input_shape_or_samples(self) -> None:
        import torch
        torch.jit.save(torch.jit.script(self.tiny()), os.path.join(self.inp, "model.pt"))
        r = run_stage("convert", self.inp, self.out, {"trust_pickle": "true"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("set the parameter input_shape", r.stderr)

    def test_pickled_module_with_code_is_refused_without_running_it(self) -> None:
        import torch
        marker = os.path.join(self.tmp, "pwned")
        for name, kwargs in (("zip.pt", {}), ("legacy.pt", {"_use_new_zipfile_serialization": False})):
            with self.subTest(format=name):
                torch.save(Payload(marker), os.path.join(self.inp, name), **kwargs)
                r = run_stage("convert", self.inp, self.out, {"input_shape": "1,4", "model_file": name})
                self.assertEqual(r.rc, EX_CONFIG, r.describe())
                self.assertIn("refusing to unpickle " + name, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
                self.assertFalse(os.path.exists(marker), "the pickled code ran")

    def test_state_dict_is_not_a_module(self) -> None:
        import torch
        torch.save(self.tiny().state_dict(), os.path.join(self.inp, "weights.pth"))  # type: ignore[attr-defined]
        r = run_stage("convert", self.inp, self.out, {"input_shape": "1,4"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("(a state_dict or weights only), not a module", r.stderr)

    def test_malformed_checkpoint(self) -> None:
        self.write("model.pt", b"this is not a checkpoint")
        r = run_stage("convert", self.inp, self.out, {"input_shape": "1,4"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("is neither a ZIP archive nor a pickle", r.stderr)
        self.write("model.pt", b"PK\x03\x04 truncated zip")
        r = run_stage("convert", self.inp, self.out, {"input_shape": "1,4"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("refusing to load model.pt: it cannot be scanned", r.stderr)


if __name__ == "__main__":
    unittest.main()
