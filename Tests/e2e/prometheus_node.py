#!/usr/bin/env python3
"""A real Prometheus (Debian's `prometheus` package, 2.42) for end-to-end tests, scraping Triton metrics
ports on loopback every second (see the shared notes "prometheus").

Library (standard library only):
    prom = prometheus_node.start(["127.0.0.1:8002", "127.0.0.1:8012"])   # free port, waits for /-/ready
    prom.url, prom.pid, prom.port, prom.data_dir, prom.config_path, prom.log_path
    prometheus_node.query(prom.url, 'nv_inference_request_success{model="m",version="1"}')
        -> [{"metric": {...labels}, "value": [ts, "12"]}, ...]   (instant-query vector; [] = no data)
    prometheus_node.value(prom.url, promql)      -> float of the first sample, or None when there is none
    prometheus_node.wait_for(prom.url, promql, timeout=15)   -> first non-empty result (or raises)
    prometheus_node.targets(prom.url)            -> [{"scrapeUrl":..., "health": "up"|"down"|"unknown", ...}]
    prometheus_node.wait_targets_up(prom.url)    # every target scraped once (first scrape ~5-6 s after ready)
    prometheus_node.stop(prom)                   # SIGTERM, bounded wait, SIGKILL; removes a data dir it made

CLI:
    prometheus_node.py serve --target 127.0.0.1:8002 [--target ...] [--port N]   (until Ctrl-C / SIGTERM)
    prometheus_node.py query URL 'PROMQL'

Environment: DEPOT_E2E_PROMETHEUS = the binary (default: `prometheus` on PATH, then /usr/bin/prometheus).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request


class PrometheusError(RuntimeError):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary():
    explicit = os.environ.get("DEPOT_E2E_PROMETHEUS")
    if explicit:
        return explicit
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if not found:
        raise PrometheusError("prometheus not found: apt-get install prometheus (scripts/install-deps.sh --test)")
    return found


def _target(t):
    """'http://127.0.0.1:8002/metrics' or '127.0.0.1:8002' -> '127.0.0.1:8002'."""
    t = t.strip()
    if "://" in t:
        t = urllib.parse.urlsplit(t).netloc
    t = t.rstrip("/")
    if not t or ":" not in t:
        raise ValueError(f"target {t!r}: expected host:port")
    return t


def render_config(targets, scrape_interval="1s", evaluation_interval="1s", job="triton"):
    # JSON is valid YAML, so no YAML library is needed.
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                   "scrape_timeout": scrape_interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [_target(t) for t in targets]}]}],
    }
    return json.dumps(config, indent=2) + "\n"


class PrometheusNode:
    def __init__(self, proc, port, data_dir, own_data_dir, config_path, log_path, workdir):
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.config_path = config_path
        self.log_path = log_path
        self._own_data_dir = own_data_dir
        self._workdir = workdir
        self.stopped = False

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def query(self, promql, time_=None):
        return query(self.url, promql, time_)

    def value(self, promql):
        return value(self.url, promql)

    def wait_for(self, promql, timeout=15.0, predicate=None):
        return wait_for(self.url, promql, timeout, predicate)

    def targets(self):
        return targets(self.url)


def _get(url, timeout=10.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(targets, port=None, data_dir=None, scrape_interval="1s", ready_timeout=30.0, extra_args=(),
          wait_up=False):
    """Writes a config (scrape and evaluation every second, job `triton`, the targets as host:port), starts
    prometheus on 127.0.0.1 and waits (bounded) until /-/ready answers 200. A port not given is picked free;
    a start that loses the port race is retried. A data dir not given is a temporary one stop() removes.
    wait_up=True also waits until every target has been scraped once (about 5-6 s more, see
    wait_targets_up); otherwise the first samples arrive that much after this returns."""
    prog = binary()
    workdir = tempfile.mkdtemp(prefix="depot-prometheus-")
    config_path = os.path.join(workdir, "prometheus.yml")
    with open(config_path, "w") as f:
        f.write(render_config(targets, scrape_interval, scrape_interval))
    log_path = os.path.join(workdir, "prometheus.log")
    attempts = 1 if port else 3
    last = ""
    for attempt in range(attempts):
        p = port or free_port()
        own = data_dir is None
        ddir = data_dir or tempfile.mkdtemp(prefix="tsdb-", dir=workdir)
        os.makedirs(ddir, exist_ok=True)
        args = [prog, f"--config.file={config_path}", f"--storage.tsdb.path={ddir}",
                f"--web.listen-address=127.0.0.1:{p}", "--storage.tsdb.retention.time=1d",
                "--log.level=info"] + list(extra_args)
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    cwd=workdir, start_new_session=True)
        node = PrometheusNode(proc, p, ddir, own, config_path, log_path, workdir)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _get(node.url + "/-/ready", timeout=2)[0] == 200:
                    if wait_up:
                        try:
                            wait_targets_up(node.url, timeout=max(ready_timeout, 20.0))
                        except PrometheusError:
                            stop(node)
                            raise
                    return node
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        last = node.log_tail()
        exited = proc.poll()
        _terminate(node)
        if own:
            shutil.rmtree(ddir, ignore_errors=True)
        if exited is None:
            shutil.rmtree(workdir, ignore_errors=True)
            raise PrometheusError(f"prometheus not ready within {ready_timeout:.0f} s; log tail:\n{last}")
        if "address already in use" not in last.lower():
            break
    shutil.rmtree(workdir, ignore_errors=True)
    raise PrometheusError(f"prometheus exited during start-up; log tail:\n{last}")


def _terminate(node, timeout=10.0):
    if node.proc.poll() is None:
        try:
            node.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                node.proc.kill()
            except ProcessLookupError:
                pass
            node.proc.wait(timeout=10)
    return node.proc.returncode


def stop(node, timeout=10.0, keep_files=False):
    """SIGTERM, wait up to `timeout`, then SIGKILL (by PID). Removes the config/log folder and a data dir
    start() made, unless keep_files. Idempotent; returns the exit status."""
    if node.stopped:
        return node.proc.returncode
    rc = _terminate(node, timeout)
    if not keep_files:
        if node._own_data_dir:
            shutil.rmtree(node.data_dir, ignore_errors=True)
        shutil.rmtree(node._workdir, ignore_errors=True)
    node.stopped = True
    return rc


def _api(url, path, params, timeout=10.0):
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        status, body = _get(full, timeout)
    except (OSError, urllib.error.URLError) as e:
        raise PrometheusError(f"GET {path}: {e}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise PrometheusError(f"GET {path}: HTTP {status}: {body[:300]!r}") from None
    if status != 200 or doc.get("status") != "success":
        raise PrometheusError(f"GET {path} {params}: HTTP {status}: {doc.get('errorType')}: {doc.get('error')}")
    return doc["data"]


def query(url, promql, time_=None, timeout=10.0):
    """Instant query; returns the result vector ([] = no data). A scalar result comes back as one
    element {"metric": {}, "value": [ts, "v"]}. Raises PrometheusError on a bad query or HTTP error."""
    params = {"query": promql}
    if time_ is not None:
        params["time"] = str(time_)
    data = _api(url, "/api/v1/query", params, timeout)
    if data.get("resultType") in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data.get("result", [])


def value(url, promql):
    """The first sample of an instant query as a float, or None when there is no data.
    NaN (0/0, e.g. a latency ratio with no successes) comes back as float('nan')."""
    result = query(url, promql)
    if not result:
        return None
    return float(result[0]["value"][1])


def wait_for(url, promql, timeout=15.0, predicate=None, interval=0.25):
    """Polls an instant query until its result is non-empty (and predicate(result) is true); returns it.
    Raises PrometheusError after timeout with the last result."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = query(url, promql)
        if last and (predicate is None or predicate(last)):
            return last
        if time.monotonic() >= deadline:
            raise PrometheusError(f"no matching data for {promql!r} within {timeout:.0f} s; last: {last}")
        time.sleep(interval)


def targets(url):
    return _api(url, "/api/v1/targets", None).get("activeTargets", [])


def wait_targets_up(url, count=None, timeout=20.0, interval=0.2):
    """Waits until `count` scrape targets (default: all active ones, at least one) report health "up",
    i.e. each has been scraped once. Prometheus applies its target list on a 5 s tick after start-up, so
    the first scrape comes about 5-6 s after /-/ready. Returns the targets; raises PrometheusError."""
    deadline = time.monotonic() + timeout
    while True:
        active = targets(url)
        up = [t for t in active if t.get("health") == "up"]
        want = len(active) if count is None else count
        if want and len(up) >= want:
            return active
        if time.monotonic() >= deadline:
            states = [(t.get("scrapeUrl"), t.get("health"), t.get("lastError")) for t in active]
            raise PrometheusError(f"scrape targets not up within {timeout:.0f} s: {states}")
        time.sleep(interval)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a real Prometheus scraping Triton metrics ports, or query one.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--target", action="append", required=True, help="host:port of a metrics endpoint (repeatable)")
    s.add_argument("--port", type=int)
    s.add_argument("--data-dir")
    q = sub.add_parser("query")
    q.add_argument("url")
    q.add_argument("promql")
    args = ap.parse_args(argv)
    if args.cmd == "query":
        print(json.dumps(query(args.url, args.promql)))
        return 0
    node = start(args.target, args.port, args.data_dir)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        print(json.dumps({"pid": node.pid, "url": node.url, "config": node.config_path, "log": node.log_path}),
              flush=True)
        while not stopping and node.proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        rc = stop(node)
        print(f"prometheus stopped (exit status {rc})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
