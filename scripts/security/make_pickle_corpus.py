#!/usr/bin/env python3
"""Writes a corpus of malicious model files for the pickle policy's tests (docs/SECURITY.md).

    make_pickle_corpus.py OUTDIR MARKER

Every file under OUTDIR/evil/ would, if it were loaded the way its name suggests (pickle.load,
joblib.load, torch.load), create the file MARKER (or run a command that does): a test loads or
scans each one and asserts MARKER is still absent. OUTDIR/safe/ holds files that must pass.
Nothing here is run: payloads are built from names and opcodes, never by calling the gadgets.
Files that need joblib or scikit-learn are written only where those are importable.
Prints one line per file: its path relative to OUTDIR.
"""
import io
import os
import pickle
import struct
import sys
import zipfile


def reduce(module, name, *args):
    """An object whose pickle calls module.name(*args) when loaded (pickle looks the callable up by name)."""
    class Fn:
        pass
    Fn.__module__, Fn.__qualname__, Fn.__name__ = module, name, name.split(".")[-1]

    class R:
        def __reduce__(self):
            return (Fn, args)
    return R()


def by_name(module, name):
    """Pickles a reference to module.name without importing it."""
    class Fn:
        pass
    Fn.__module__, Fn.__qualname__, Fn.__name__ = module, name, name.split(".")[-1]
    return Fn


def dumps(obj, protocol):
    """pickle.dumps, writing the stand-ins of by_name/reduce as the globals they name (pickle itself
    would check that they resolve, which means importing them)."""
    class P(pickle._Pickler):
        def save_global(self, obj, name=None):
            module, qual = obj.__module__, obj.__qualname__
            if self.proto >= 4:
                self.save(module)
                self.save(qual)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + module.encode() + b"\n" + qual.encode() + b"\n")
            self.memoize(obj)
    f = io.BytesIO()
    P(f, protocol=protocol).dump(obj)
    return f.getvalue()


def u(s):  # protocol 0 unicode literal
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def su(s):  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def torch_zip(entries, method=zipfile.ZIP_STORED):
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return f.getvalue()


def main():
    out, marker = sys.argv[1], os.path.abspath(sys.argv[2])
    evil_dir, safe_dir = os.path.join(out, "evil"), os.path.join(out, "safe")
    os.makedirs(evil_dir, exist_ok=True)
    os.makedirs(safe_dir, exist_ok=True)
    files = {}
    touch = f"touch {marker}"
    write_marker = f"open({marker!r}, 'w').close()"

    # __reduce__ to the usual callables, every protocol.
    for proto in range(6):
        files[f"evil/os_system_p{proto}.pkl"] = dumps(reduce("os", "system", touch), proto)
        files[f"evil/posix_system_p{proto}.pickle"] = dumps(reduce("posix", "system", touch), proto)
    files["evil/subprocess_popen.pkl"] = dumps(reduce("subprocess", "Popen", ["touch", marker]), 4)
    files["evil/subprocess_check_call.pkl"] = dumps(reduce("subprocess", "check_call", ["touch", marker]), 2)
    files["evil/runpy_run_code.pkl"] = dumps(reduce("runpy", "_run_code", write_marker, {}), 4)
    files["evil/builtins_exec.pkl"] = dumps(reduce("builtins", "exec", write_marker), 4)
    files["evil/builtins_eval.pkl"] = dumps(reduce("builtins", "eval", write_marker), 2)
    files["evil/py2_builtin_eval_p0.pkl"] = b"c__builtin__\neval\n(" + u(write_marker) + b"tR."
    files["evil/builtins_compile_exec.pkl"] = dumps(reduce("builtins", "exec", reduce("builtins", "compile", write_marker, "x", "exec")), 3)
    # getattr chains: builtins.getattr(__import__('os'), 'system')(cmd), and getattr on an allowed module.
    files["evil/getattr_import_os.pkl"] = (
        b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostRX\x06\x00\x00\x00systemtR(X"
        + struct.pack("<I", len(touch)) + touch.encode() + b"tR.")
    files["evil/getattr_allowed_class.pkl"] = (
        b"\x80\x02cbuiltins\ngetattr\ncnumpy\nndarray\nX\x07\x00\x00\x00__new__\x86R.")
    # Protocol 4 qualified names walk attributes: numpy -> testing._private.utils.runstring (exec).
    files["evil/qualname_walk_runstring.pkl"] = (
        b"\x80\x04" + su("numpy") + su("testing._private.utils.runstring") + b"\x93" + su(write_marker) + b"}\x86R.")
    # numpy / scipy gadgets: functions that exec, load pickles or write files; classes that create files.
    files["evil/numpy_runstring.pkl"] = dumps(reduce("numpy.testing._private.utils", "runstring", write_marker, {}), 4)
    inner = os.path.join(evil_dir, "inner_payload.bin")
    files["evil/inner_payload.bin"] = dumps(reduce("os", "system", touch), 2)
    files["evil/numpy_load_allow_pickle.pkl"] = dumps(reduce("numpy", "load", inner, None, True), 4)
    files["evil/numpy_lib_npyio_load.pkl"] = dumps(reduce("numpy.lib.npyio", "load", inner, None, True), 2)
    files["evil/numpy_memmap_creates_file.pkl"] = dumps(reduce("numpy", "memmap", marker, "uint8", "w+", 0, (1,)), 4)
    files["evil/numpy_fromfunction_callable.pkl"] = dumps(
        reduce("numpy", "fromfunction", by_name("builtins", "exec"), (1,)), 4)
    files["evil/numpy_frompyfunc.pkl"] = dumps(reduce("numpy", "frompyfunc", by_name("os", "system"), 1, 1), 4)
    files["evil/scipy_fortranfile_creates_file.pkl"] = dumps(reduce("scipy.io", "FortranFile", marker, "w"), 4)
    files["evil/scipy_netcdf_creates_file.pkl"] = dumps(reduce("scipy.io._netcdf", "netcdf_file", marker, "w"), 2)
    files["evil/scipy_optimize_callable.pkl"] = dumps(
        reduce("scipy.optimize", "brute", by_name("builtins", "exec"), ((0, 1),)), 4)
    files["evil/numpy_random_ctor_callable.pkl"] = dumps(
        reduce("numpy.random._pickle", "__randomstate_ctor", write_marker, by_name("builtins", "exec")), 4)
    files["evil/torch_load_from_bytes.pkl"] = dumps(reduce("torch.storage", "_load_from_bytes", b"x"), 2)
    files["evil/sklearn_function_transformer.pkl"] = dumps(
        reduce("sklearn.preprocessing", "FunctionTransformer", by_name("builtins", "exec")), 4)
    # INST and OBJ call what they name too.
    files["evil/inst_os_system.pkl"] = b"(" + u(touch) + b"ios\nsystem\n."
    files["evil/obj_os_system.pkl"] = b"\x80\x02(cos\nsystem\n" + u(touch) + b"o."
    # Memo tricks: module and name strings memoized, popped, and fetched back for STACK_GLOBAL.
    files["evil/memo_binget_stack_global.pkl"] = (
        b"\x80\x04" + su("os") + b"\x94" + su("system") + b"\x94" + b"00" + b"h\x00h\x01\x93" + su(touch) + b"\x85R.")
    files["evil/memo_long_binget.pkl"] = (
        b"\x80\x04" + su("subprocess") + b"r\x05\x00\x00\x00" + su("getoutput") + b"r\x06\x00\x00\x00" + b"00"
        + b"j\x05\x00\x00\x00j\x06\x00\x00\x00\x93" + su(touch) + b"\x85R.")
    files["evil/memo_get_p0.pkl"] = b"(Vos\np1\nVsystem\np2\n1g1\ng2\n\x93" + u(touch) + b"\x85R."
    files["evil/memo_dup_stack_global.pkl"] = b"\x80\x04" + su("builtins") + su("exec") + b"2" + b"0\x93" + su(write_marker) + b"\x85R."
    # Frame tricks: allowed strings pushed after a MARK and dropped by POP_MARK, so that a scanner that
    # ignores frames sees collections.OrderedDict where the unpickler pops os.system; and a POP on an
    # empty frame, which pops the MARK instead of a value.
    files["evil/mark_decoy_pop_mark.pkl"] = (
        b"\x80\x04" + su("os") + su("system") + su("system") + b"(" + su("collections") + su("OrderedDict") + b"1" + b"0"
        + b"\x93" + su(touch) + b"\x85R.")
    files["evil/pop_on_empty_frame.pkl"] = (
        b"\x80\x04" + su("os") + su("system") + b"(0\x93" + su(touch) + b"\x85R.")
    files["evil/frame_stack_global.pkl"] = (
        b"\x80\x04\x95" + struct.pack("<Q", 40) + su("posix") + b"\x94" + su("system") + b"\x94\x93\x94" + su(touch) + b"\x94\x85\x94R\x94.")
    # PyTorch archives: data.pkl in the usual place, deep in subdirectories, compressed, a second
    # pickle entry, a torch archive nested in a ZIP, legacy raw pickles with the payload fourth.
    evil4 = dumps(reduce("os", "system", touch), 4)
    files["evil/torch_data_pkl.pt"] = torch_zip([("archive/data.pkl", evil4), ("archive/version", b"3\n")])
    files["evil/torch_deep_dir.pth"] = torch_zip([("a/b/c/data.pkl", evil4), ("a/b/c/version", b"3\n")])
    files["evil/torch_deflated.pt"] = torch_zip([("archive/data.pkl", evil4)], method=zipfile.ZIP_DEFLATED)
    safe_data = pickle.dumps({"w": [1.0, 2.0]}, protocol=2)
    files["evil/torch_second_pickle.pt"] = torch_zip(
        [("archive/data.pkl", safe_data), ("archive/constants.pkl", evil4), ("archive/version", b"3\n")])
    files["evil/torch_nested_zip.pt"] = torch_zip([("outer/model.pt", torch_zip([("archive/data.pkl", evil4)]))])
    files["evil/torch_in_pkl_name.pkl"] = torch_zip([("archive/data.pkl", evil4)])
    legacy = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
              pickle.dumps({"protocol_version": 1001}, protocol=2), dumps(reduce("os", "system", touch), 2),
              pickle.dumps(["0"], protocol=2)]
    files["evil/torch_legacy_raw.pt"] = b"".join(legacy)
    files["evil/ckpt_raw.ckpt"] = dumps(reduce("builtins", "exec", write_marker), 2)
    # joblib: a plain payload; a compressed one; a payload hidden after an array's raw bytes.
    files["evil/joblib_plain.joblib"] = dumps(reduce("os", "system", touch), 4)
    try:
        import joblib
        import numpy as np
        files["evil/joblib_zlib.joblib"] = __import__("zlib").compress(dumps(reduce("os", "system", touch), 4))
        path = os.path.join(out, ".tmp.joblib")
        class Real:
            def __reduce__(self):
                return (os.system, (touch,))
        joblib.dump([np.arange(64, dtype=np.float64), Real()], path)
        with open(path, "rb") as fh:
            files["evil/joblib_after_array.joblib"] = fh.read()
        os.remove(path)
    except ImportError:
        pass

    # Files that must pass: plain data pickles, every protocol; scikit-learn models where installed.
    for proto in range(6):
        files[f"safe/dict_p{proto}.pkl"] = pickle.dumps({"a": [1, 2.0, (3,)], "b": {1, 2}, "c": b"x" * 300}, protocol=proto)
    files["safe/torch_like.pt"] = torch_zip([("archive/data.pkl", (
        b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.")), ("archive/version", b"3\n")])
    try:
        import warnings
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
        X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
        y = (X[:, 0] > 0).astype(np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models = {"logistic": LogisticRegression().fit(X, y),
                      "mlp": MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0).fit(X, y)}
        for kind, model in models.items():
            for proto in range(6):
                files[f"safe/sklearn_{kind}_p{proto}.pkl"] = pickle.dumps(model, protocol=proto)
    except ImportError:
        pass

    for rel, data in sorted(files.items()):
        with open(os.path.join(out, rel), "wb") as fh:
            fh.write(data)
        print(rel)


if __name__ == "__main__":
    main()
