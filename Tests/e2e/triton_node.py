#!/usr/bin/env python3
"""A real Triton Inference Server (2.51, python backend only) for end-to-end tests, run from the venv
that scripts/e2e/python-env.sh makes (nvidia-pytriton wheel; see the shared notes "triton-on-cpu").

Library:
    node = triton_node.start("/path/to/repo")           # free loopback ports, explicit model control
    node.load("iris")                                    # POST /v2/repository/models/iris/load, then ready check
    node.index()                                         # [{"name": ..., "version": ..., "state": ...}]
    out = node.infer("iris", {"input": x})               # KServe v2 JSON over HTTP -> {name: np.ndarray}
    triton_node.stop(node)                               # SIGTERM, bounded wait, SIGKILL server + stubs, /dev/shm cleanup

CLI:
    triton_node.py serve REPO [--load NAME ...] [--http-port N] [--mode explicit|poll]   (until Ctrl-C / SIGTERM)

Environment: DEPOT_E2E_VENV (default ~/.cache/depot/e2e-venv).
"""
import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import time

import numpy as np
import requests

SHM_PREFIX = "triton_python_backend_shm_region_"
DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8, "INT16": np.int16,
          "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "BOOL": np.bool_, "BYTES": object}


class TritonError(RuntimeError):
    pass


def venv_dir():
    return os.environ.get("DEPOT_E2E_VENV") or os.path.expanduser("~/.cache/depot/e2e-venv")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count, taken=()):
    """`count` distinct free ports, none of `taken`: all bound at once, so the kernel cannot hand
    the same one out twice (two calls of free_port() in a row can, and Triton then refuses an
    HTTP and a gRPC port that are equal)."""
    sockets = []
    try:
        ports = []
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in taken and port not in ports:
                ports.append(port)
        return ports
    finally:
        for s in sockets:
            s.close()


# --- /proc helpers: find the server's stub children by PID (they outlive a SIGKILLed server) ----

def _stat(pid):
    """(ppid, starttime) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19])


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def descendants(pid):
    """{pid: starttime} of every live descendant of pid."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                children.setdefault(st[0], []).append((int(entry), st[1]))
    out, todo = {}, [pid]
    while todo:
        for child, start in children.get(todo.pop(), []):
            if child not in out:
                out[child] = start
                todo.append(child)
    return out


def _alive(pid, starttime=None):
    st = _stat(pid)
    if st is None:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/status") as f:
            if any(l.startswith("State:") and "Z" in l.split()[1] for l in f):
                return False
    except OSError:
        return False
    return starttime is None or st[1] == starttime


class TritonNode:
    def __init__(self, proc, model_repository, http_port, grpc_port, metrics_port, log_path, shm_before):
        self.proc = proc
        self.pid = proc.pid
        self.model_repository = model_repository
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.url = f"http://127.0.0.1:{http_port}"
        self.log_path = log_path
        self._shm_before = shm_before
        self._stubs = {}  # pid -> starttime, remembered while the server is alive
        self._shm = set()
        self.stopped = False

    # -- bookkeeping --------------------------------------------------------------------------
    def _remember_children(self):
        if self.proc.poll() is None:
            for pid, start in descendants(self.pid).items():
                self._stubs[pid] = start
                for arg in _cmdline(pid):
                    if arg.startswith(SHM_PREFIX):
                        self._shm.add(arg)

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # -- HTTP API -----------------------------------------------------------------------------
    def _request(self, method, path, timeout, **kw):
        try:
            return requests.request(method, self.url + path, timeout=timeout, **kw)
        except requests.RequestException as e:
            raise TritonError(f"{method} {path}: {e}") from None

    def live(self):
        try:
            return requests.get(self.url + "/v2/health/live", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def ready(self):
        try:
            return requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def index(self):
        r = self._request("POST", "/v2/repository/index", 10, json={})
        if r.status_code != 200:
            raise TritonError(f"repository index: HTTP {r.status_code}: {r.text[:500]}")
        return r.json()

    def load(self, name, timeout=120):
        """Loads (or reloads) a model in explicit mode; returns the seconds it took. Raises TritonError."""
        t0 = time.monotonic()
        r = self._request("POST", f"/v2/repository/models/{name}/load", timeout, json={})
        self._remember_children()
        if r.status_code != 200:
            raise TritonError(f"load {name}: HTTP {r.status_code}: {r.text[:2000]}")
        if not self.model_ready(name):
            raise TritonError(f"load {name} returned 200 but the model is not ready: {self.index()}")
        return time.monotonic() - t0

    def unload(self, name, timeout=30):
        r = self._request("POST", f"/v2/repository/models/{name}/unload", timeout, json={})
        if r.status_code != 200:
            raise TritonError(f"unload {name}: HTTP {r.status_code}: {r.text[:500]}")

    def model_ready(self, name, version=None):
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
        return self._request("GET", path, 10).status_code == 200

    def metadata(self, name):
        r = self._request("GET", f"/v2/models/{name}", 10)
        if r.status_code != 200:
            raise TritonError(f"metadata {name}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json()

    def metrics(self):
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text

    def infer(self, name, inputs, outputs=None, timeout=60):
        """inputs: {name: np.ndarray}; returns {output name: np.ndarray} (KServe v2 JSON)."""
        body = {"inputs": []}
        for tname, arr in inputs.items():
            arr = np.asarray(arr)
            if arr.dtype.kind in "OUS":
                datatype = "BYTES"
                data = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
            else:
                datatype = next((k for k, v in DTYPES.items() if v is not object and np.dtype(v) == arr.dtype), None)
                if datatype is None:
                    raise TritonError(f"input {tname}: no KServe datatype for numpy {arr.dtype}")
                data = arr.reshape(-1).tolist()
            body["inputs"].append({"name": tname, "shape": list(arr.shape), "datatype": datatype, "data": data})
        if outputs:
            body["outputs"] = [{"name": o} for o in outputs]
        r = self._request("POST", f"/v2/models/{name}/infer", timeout, json=body)
        if r.status_code != 200:
            raise TritonError(f"infer {name}: HTTP {r.status_code}: {r.text[:1000]}")
        result = {}
        for o in r.json().get("outputs", []):
            dtype = DTYPES.get(o["datatype"])
            if dtype is None:
                raise TritonError(f"output {o['name']}: unknown datatype {o['datatype']}")
            result[o["name"]] = np.array(o["data"], dtype=dtype).reshape(o["shape"])
        return result


def start(model_repository, http_port=None, grpc_port=None, metrics_port=None, mode="explicit",
          venv=None, log_path=None, ready_timeout=30.0, extra_args=()):
    """Starts tritonserver on 127.0.0.1 and waits (bounded) until /v2/health/live and /ready answer 200.
    Ports not given are picked free (bind to port 0); a start that loses a port race is retried."""
    venv = venv or venv_dir()
    server = os.path.join(venv, "triton-server")
    binary = os.path.join(server, "bin", "tritonserver")
    if not os.access(binary, os.X_OK):
        raise TritonError(f"{binary} not found: run scripts/e2e/python-env.sh first")
    try:
        with open(os.path.join(server, "LIBS_PATH")) as f:
            libs = f.read().strip()
    except OSError:
        raise TritonError(f"{server}/LIBS_PATH missing: run scripts/e2e/python-env.sh --force") from None
    if mode not in ("explicit", "poll", "none"):
        raise ValueError(f"mode {mode!r}")
    repo = os.path.abspath(model_repository)
    if not os.path.isdir(repo):
        raise TritonError(f"model repository {repo} is not a directory")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    # The python-backend stub finds its Python (and so the venv's numpy/onnxruntime) via `python3` on PATH.
    env["PATH"] = os.path.join(venv, "bin") + ":" + env.get("PATH", "/usr/bin:/bin")
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    import subprocess
    attempts = 1 if all((http_port, grpc_port, metrics_port)) else 3
    last = ""
    for attempt in range(attempts):
        picked = iter(free_ports(3, taken={p for p in (http_port, grpc_port, metrics_port) if p}))
        hp, gp, mp = http_port or next(picked), grpc_port or next(picked), metrics_port or next(picked)
        if log_path:
            path = log_path
        else:
            fd, path = tempfile.mkstemp(prefix="triton-", suffix=".log")
            os.close(fd)
        args = [binary, f"--model-repository={repo}",
                f"--backend-directory={server}/backends", f"--cache-directory={server}/caches",
                f"--model-control-mode={mode}",
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                f"--http-port={hp}", f"--grpc-port={gp}", f"--metrics-port={mp}",
                "--exit-timeout-secs=5", "--strict-readiness=false",
                "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
        if mode == "poll":
            args += ["--repository-poll-secs=2", "--exit-on-error=false"]
        args += list(extra_args)
        shm_before = set(n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX)) if os.path.isdir("/dev/shm") else set()
        with open(path, "ab") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        node = TritonNode(proc, repo, hp, gp, mp, path, shm_before)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if node.live() and node.ready():
                node._remember_children()
                return node
            time.sleep(0.05)
        last = node.log_tail()
        exited = proc.poll()
        stop(node)
        if exited is None:
            raise TritonError(f"tritonserver not live+ready within {ready_timeout:.0f} s; log {path}:\n{last}")
        if not any(m in last.lower() for m in ("address already in use", "failed to start", "at the same address and port")):
            break
    raise TritonError(f"tritonserver exited during start-up; log tail:\n{last}")


def stop(node, timeout=10.0):
    """SIGTERM, wait up to `timeout`, then SIGKILL the server and its stub children by PID; removes the
    /dev/shm regions of its python-backend stubs. Idempotent; returns the server's exit status."""
    if node.stopped:
        return node.proc.returncode
    node._remember_children()
    if node.proc.poll() is None:
        try:
            node.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            node.proc.wait(timeout=timeout)
        except Exception:  # subprocess.TimeoutExpired
            try:
                node.proc.kill()
            except ProcessLookupError:
                pass
            node.proc.wait(timeout=10)
    # Stubs normally exit with the server; one that does not is killed, only if it is still the same process.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in node._stubs.items()):
        time.sleep(0.05)
    for pid, start_time in node._stubs.items():
        if _alive(pid, start_time):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Regions its stubs named, plus new ones no live process holds open.
    if os.path.isdir("/dev/shm"):
        now = set(n for n in os.listdir("/dev/shm") if n.startswith(SHM_PREFIX))
        for name in now & (node._shm | (now - node._shm_before)):
            if name in node._shm or not _held_open("/dev/shm/" + name):
                try:
                    os.unlink("/dev/shm/" + name)
                except OSError:
                    pass
    node.stopped = True
    return node.proc.returncode


def _held_open(path):
    """Whether any process has the file open or mapped (another Triton's live region)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                if path in f.read():
                    return True
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") == path:
                    return True
        except OSError:
            continue
    return False


# Module-level spellings of the handle's methods.
def load(node, name, timeout=120):
    return node.load(name, timeout)


def index(node):
    return node.index()


def infer(node, name, inputs, outputs=None):
    return node.infer(name, inputs, outputs)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a real Triton server from the e2e venv until interrupted.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("repo")
    s.add_argument("--load", action="append", default=[])
    s.add_argument("--mode", default="explicit", choices=["explicit", "poll", "none"])
    s.add_argument("--http-port", type=int)
    s.add_argument("--grpc-port", type=int)
    s.add_argument("--metrics-port", type=int)
    args = ap.parse_args(argv)
    node = start(args.repo, args.http_port, args.grpc_port, args.metrics_port, mode=args.mode)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        print(json.dumps({"pid": node.pid, "http": node.url, "grpc_port": node.grpc_port,
                          "metrics_port": node.metrics_port, "log": node.log_path}), flush=True)
        for name in args.load:
            print(f"loaded {name} in {node.load(name):.2f} s", flush=True)
        print(json.dumps(node.index()), flush=True)
        while not stopping and node.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        rc = stop(node)
        print(f"tritonserver stopped (exit status {rc})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
