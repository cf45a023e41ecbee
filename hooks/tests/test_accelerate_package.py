"""accelerate and package: decision logic in-process, and the chain convert -> accelerate -> package
on a real scikit-learn model (CPU path)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import stat
import unittest
import warnings
from unittest import mock

import hookenv
from hookenv import EX_CONFIG, environ, has_module, run_stage

import accelerate
import package
from depot_hook import StageError

HAS_STACK = all(has_module(m) for m in ("numpy", "sklearn", "skl2onnx", "onnx", "onnxruntime"))


class AccelerateLogic(hookenv.TempDirTest):
    def script(self, name: str, body: str) -> str:
        path = self.write(name, "#!/bin/sh\n" + body + "\n", base=self.tmp)
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
        return path

    def test_trtexec_version(self) -> None:
        for banner, want in (("[TensorRT v100300]", "10.3.0"), ("[TensorRT v8601]", "8.6.1"), ("nothing", None)):
            with self.subTest(banner=banner):
                self.assertEqual(accelerate.trtexec_version(self.script("trtexec", f"echo '&&&& RUNNING {banner}'")), want)
        self.assertIsNone(accelerate.trtexec_version(os.path.join(self.tmp, "missing")))

    def test_gpu_compute_capability(self) -> None:
        smi = self.script("nvidia-smi", "echo '9.0, NVIDIA H100'")
        with mock.patch("shutil.which", return_value=smi):
            self.assertEqual(accelerate.gpu_compute_capability(), "9.0")
        bad = self.script("nvidia-smi", "echo 'No devices were found'; exit 6")
        with mock.patch("shutil.which", return_value=bad):
            self.assertIsNone(accelerate.gpu_compute_capability())
        with mock.patch("shutil.which", return_value=None):
            self.assertIsNone(accelerate.gpu_compute_capability())

    @unittest.skipUnless(has_module("numpy"), "numpy is not installed")
    def test_accuracy(self) -> None:
        import numpy as np
        delta, agreement, compared = accelerate.accuracy(
            {"p": np.array([0.1, 0.2]), "label": np.array([1, 2]), "extra": np.zeros(1)},
            {"p": np.array([0.1, 0.25]), "label": np.array([1, 3]), "absent": np.zeros(1)})
        self.assertAlmostEqual(delta, 0.05)
        self.assertEqual((agreement, compared), (0.5, ["p", "label"]))
        with self.assertRaisesRegex(StageError, "returns 1 values"):
            accelerate.accuracy({"p": np.zeros(1)}, {"p": np.zeros(2)})

    def test_no_model(self) -> None:
        with environ(DEPOT_INPUT_DIR=self.inp, DEPOT_OUTPUT_DIR=self.out):
            with self.assertRaises(StageError) as e:
                accelerate.run()
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("no model.onnx in the input (run convert first)", str(e.exception))

    def test_tensorrt_without_gpu_is_permanent(self) -> None:
        self.write("model.onnx", b"x")
        with environ(DEPOT_INPUT_DIR=self.inp, DEPOT_OUTPUT_DIR=self.out, DEPOT_PARAM_METHOD="tensorrt"), \
                mock.patch("shutil.which", return_value=None):
            with self.assertRaises(StageError) as e:
                accelerate.run()
        self.assertEqual(e.exception.code, EX_CONFIG)
        self.assertIn("method=tensorrt needs trtexec on PATH", str(e.exception))

    def test_unknown_method(self) -> None:
        self.write("model.onnx", b"x")
        with environ(DEPOT_INPUT_DIR=self.inp, DEPOT_OUTPUT_DIR=self.out, DEPOT_PARAM_METHOD="magic"):
            with self.assertRaisesRegex(StageError, "must be one of auto, onnxruntime, tensorrt"):
                accelerate.run()


class PackageLogic(hookenv.TempDirTest):
    def test_model_name(self) -> None:
        with environ(DEPOT_PARAM_MODEL_NAME="iris_v1.2-x"):
            self.assertEqual(package.model_name(), "iris_v1.2-x")
        with environ(DEPOT_INPUT_REPOSITORY="team/models/iris/"), contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(package.model_name(), "iris")
        for bad in ("..", "a/b", "x y", "a" * 129):
            with self.subTest(name=bad), environ(DEPOT_PARAM_MODEL_NAME=bad):
                with self.assertRaises(StageError) as e:
                    package.model_name()
                self.assertEqual(e.exception.code, EX_CONFIG)
        with environ():
            with self.assertRaisesRegex(StageError, "set the parameter model_name"):
                package.model_name()

    def test_config_pbtxt(self) -> None:
        t = [{"name": 'in"put', "data_type": "TYPE_FP32", "dims": [-1, 4]}]
        config = package.config_pbtxt("m", "python-onnxruntime", t, t)
        self.assertIn('backend: "python"', config)
        self.assertIn('{ name: "in\\"put", data_type: TYPE_FP32, dims: [ -1, 4 ] }', config)
        self.assertIn("KIND_CPU", config)
        self.assertIn('platform: "onnxruntime_onnx"', package.config_pbtxt("m", "onnxruntime", t, t))
        plan = package.config_pbtxt("m", "tensorrt", t, t, "8.9")
        self.assertIn('platform: "tensorrt_plan"', plan)
        self.assertIn('cc_model_filenames [ { key: "8.9", value: "model.plan" } ]', plan)

    def test_trt_signature(self) -> None:
        ins, outs = package.trt_signature({"inputs": [{"name": "x", "elem_type": "FLOAT", "dims": []}],
                                           "outputs": [{"name": "y", "elem_type": "INT64", "dims": [-1, 3]}]})
        self.assertEqual(ins, [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}])
        self.assertEqual(outs, [{"name": "y", "data_type": "TYPE_INT64", "dims": [-1, 3]}])
        with self.assertRaisesRegex(StageError, "no data type"):
            package.trt_signature({"inputs": [{"name": "x", "elem_type": "COMPLEX64", "dims": [1]}]})

    @unittest.skipUnless(has_module("numpy"), "numpy is not installed")
    def test_tensorrt_plan_bundle(self) -> None:
        self.write("model.plan", b"engine")
        self.write("tensorrt.json", json.dumps({
            "compute_capability": "9.0", "tensorrt_version": "10.3.0",
            "inputs": [{"name": "x", "elem_type": "FLOAT", "dims": [-1, 4]}],
            "outputs": [{"name": "y", "elem_type": "FLOAT", "dims": [-1, 3]}]}))
        r = run_stage("package", self.inp, self.out, {"model_name": "net"})
        self.assertEqual(r.rc, 0, r.describe())
        assert r.result is not None
        self.assertEqual(r.result["relation"], "packaged-from")
        self.assertEqual(r.result["annotations"]["dev.depot.platform"], "sm_90,trt10.3")
        self.assertEqual(r.result["annotations"]["dev.depot.triton.backend"], "tensorrt")
        self.assertTrue(os.path.isfile(os.path.join(self.out, "net", "1", "model.plan")))

    def test_backend_that_does_not_fit(self) -> None:
        self.write("model.plan", b"engine")
        r = run_stage("package", self.inp, self.out, {"model_name": "net", "backend": "onnxruntime"})
        self.assertEqual(r.rc, EX_CONFIG, r.describe())
        self.assertIn("backend onnxruntime needs model.onnx", r.stderr)


@unittest.skipUnless(HAS_STACK, "numpy, scikit-learn, skl2onnx, onnx or onnxruntime not installed")
class Chain(hookenv.TempDirTest):
    def test_convert_accelerate_package(self) -> None:
        import numpy as np
        from sklearn.neural_network import MLPClassifier
        rng = np.random.default_rng(0)
        x = rng.standard_normal((60, 4)).astype(np.float32)
        y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the fit need not be good, only convertible
            model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, y)
        self.write("model.pkl", pickle.dumps(model))
        np.save(os.path.join(self.inp, "sample_inputs.npy"), x[:16])

        stages = [("convert", {}), ("accelerate", {"runs": "5"}), ("package", {"model_name": "mlp"})]
        inp = self.inp
        results = {}
        for hook, params in stages:
            out = os.path.join(self.tmp, hook)
            r = run_stage(hook, inp, out, params)
            self.assertEqual(r.rc, 0, f"{hook}: {r.describe()}")
            assert r.result is not None
            results[hook] = r.result
            inp = out
        self.assertIn(results["accelerate"]["relation"], ("quantized-from", "compiled-from"))
        self.assertIn("dev.depot.metric.latency_before_ms", results["accelerate"]["annotations"])
        self.assertEqual(results["package"]["artifact_type"], "application/vnd.depot.triton.bundle.v1")
        bundle = os.path.join(self.tmp, "package")
        self.assertEqual(sorted(os.listdir(os.path.join(bundle, "mlp", "1"))), ["model.onnx", "model.py"])
        with open(os.path.join(bundle, "mlp", "config.pbtxt")) as f:
            self.assertIn('backend: "python"', f.read())
        self.assertTrue(os.path.isfile(os.path.join(bundle, "samples", "sample_outputs.npz")))


if __name__ == "__main__":
    unittest.main()
