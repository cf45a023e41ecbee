#!/usr/bin/env python3
"""What tracing costs: the same Depot binary with `tracing:` off, on with every request recorded
(sample_ratio 1.0) and on with a ratio a busy production registry would run (--ratio, default 0.1),
exported over OTLP/HTTP protobuf to a loopback receiver that reads and discards the exports,
side by side in one run, alternating rounds so that machine noise hits all three.

Two workloads, as issue #19 asks (budget: at most 3% on each):
  - manifest GET by tag: wrk (one thread, 32 connections) on CPU 0, the servers pinned to CPU 1;
    reported as requests per second and, more robust against a noisy neighbour, the server's CPU
    microseconds per request (from /proc: the exporter's work is in the server process);
  - a monolithic 1 GiB blob push (curl, a new random blob each round): wall seconds and the
    server's CPU-seconds.

Usage: Benchmarks/tracing_overhead.py [--depot .build/release/depot] [--seconds 8] [--rounds 3] [--mib 1024] [--ratio 0.1] [--json]
Needs: wrk, curl (apt). Build Depot first: swift build -c release --product depot.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from auth_overhead import cpu_seconds, wrk_with  # noqa: E402
from registry_vs_distribution import free_port, push_manifest, push_monolithic  # noqa: E402


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts and discards (decoding is not what is measured)."""
    exports = 0
    received = 0

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        Sink.exports += 1
        Sink.received += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depot", default=".build/release/depot")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--ratio", type=float, default=0.1, help="the sampled server's tracing.sample_ratio")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "curl", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install wrk curl util-linux")
    work = tempfile.mkdtemp(prefix="depot-tracing-bench-")
    sink_port = free_port()
    sink = ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    procs = []
    try:
        servers, pids = {}, {}
        sampled = f"on {args.ratio:g}"
        for name, enabled, ratio in (("off", False, 1.0), ("on", True, 1.0), (sampled, True, args.ratio)):
            port = free_port()
            cfg = os.path.join(work, f"{name}.yaml")
            with open(cfg, "w") as f:
                f.write("pipelines: {directory: \"\"}\n")
                f.write(f"tracing: {{enabled: {str(enabled).lower()}, sample_ratio: {ratio}, "
                        f"endpoint: \"http://127.0.0.1:{sink_port}/v1/traces\"}}\n")
            p = subprocess.Popen(["taskset", "-c", "1", args.depot, "serve", "--config", cfg, "--storage", f"{work}/{name.replace(' ', '')}",
                                  "--listen", f"127.0.0.1:{port}", "--log-level", "error"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            servers[name] = f"http://127.0.0.1:{port}"
            pids[name] = p.pid
        for base in servers.values():
            for _ in range(200):
                if subprocess.run(["curl", "-s", "-o", "/dev/null", base + "/healthz"]).returncode == 0:
                    break
                time.sleep(0.05)
            push_manifest(base, "bench/manifest")
        rps = {n: [] for n in servers}
        us = {n: [] for n in servers}
        push_wall = {n: [] for n in servers}
        push_cpu = {n: [] for n in servers}
        blob = os.path.join(work, "blob")
        for i in range(args.rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(list(servers)))
            for name in order:
                r, u = wrk_with(f"{servers[name]}/v2/bench/manifest/manifests/latest", args.seconds, None, pids[name])
                rps[name].append(r)
                us[name].append(u)
            if args.mib:
                # A new blob per round (no deduplication), the same one for both servers.
                with open(blob, "wb") as f:
                    for _ in range(args.mib):
                        f.write(os.urandom(1 << 20))
                h = hashlib.sha256()
                with open(blob, "rb") as f:
                    for part in iter(lambda: f.read(1 << 20), b""):
                        h.update(part)
                digest = "sha256:" + h.hexdigest()
                subprocess.run(["cat", blob], stdout=subprocess.DEVNULL, check=True)  # page cache warm for both
                for name in order:
                    before = cpu_seconds(pids[name])
                    start = time.monotonic()
                    push_monolithic(servers[name], f"bench/push{i}", blob, digest)
                    push_wall[name].append(time.monotonic() - start)
                    push_cpu[name].append(cpu_seconds(pids[name]) - before)
        med = statistics.median
        result = {
            "manifest_get": {n: {"rps": med(rps[n]), "cpu_us_per_request": med(us[n]), "rounds": rps[n]} for n in servers},
            "push": {n: {"wall_seconds": med(push_wall[n]), "cpu_seconds": med(push_cpu[n]), "rounds": push_wall[n]} for n in servers}
            if args.mib else {},
            "exports": Sink.exports, "export_bytes": Sink.received,
        }
        result["overhead"] = {}
        for on in ("on", sampled):
            result["overhead"][f"{on}: manifest GET req/s"] = 1 - med(rps[on]) / med(rps["off"])
            result["overhead"][f"{on}: manifest GET CPU/req"] = med(us[on]) / med(us["off"]) - 1
            if args.mib:
                result["overhead"][f"{on}: push wall"] = med(push_wall[on]) / med(push_wall["off"]) - 1
                result["overhead"][f"{on}: push CPU"] = med(push_cpu[on]) / med(push_cpu["off"]) - 1
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"tracing off vs on (sample_ratio 1.0 and {args.ratio:g}, OTLP/HTTP protobuf to a discarding receiver), {args.rounds} alternating rounds, medians")
        print(f"  manifest GET by tag (server on CPU 1, wrk -t1 -c32 -d{args.seconds}s on CPU 0):")
        for n in servers:
            m = result["manifest_get"][n]
            print(f"    {n:6} {m['rps']:>9.0f} req/s  {m['cpu_us_per_request']:>7.1f} CPU µs/req   rounds: {', '.join(f'{x:.0f}' for x in m['rounds'])}")
        if args.mib:
            print(f"  push of {args.mib} MiB (monolithic, curl):")
            for n in servers:
                m = result["push"][n]
                print(f"    {n:6} {m['wall_seconds']:>7.2f} s  {m['cpu_seconds']:>6.2f} CPU-s   rounds: {', '.join(f'{x:.2f}' for x in m['rounds'])}")
        print(f"  exports received: {Sink.exports} ({Sink.received} bytes)")
        for k, v in result["overhead"].items():
            print(f"  overhead {k:30} {v * 100:+6.1f}%  {'PASS' if v <= 0.03 else 'FAIL'} (goal ≤ 3%)")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        sink.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
