#!/usr/bin/env python3
"""What authentication costs: manifest GET by tag against the same Depot binary with
authentication off and on, side by side in one run, alternating rounds so that machine noise
hits both. The servers are pinned to CPU 1 and wrk (one thread, 32 connections) to CPU 0 with
taskset: unpinned, wrk and the server fight for the same two cores and rounds vary by ±20%,
more than what is measured. With authentication on it measures three credentials: a robot token (Bearer dpt_…, a
catalog lookup cached for 10 s), the ES256 token /token issues (a signature check, cached), and
a user's Basic password (PBKDF2, cached). The issue's budget: at most 5% of throughput.

Usage: Benchmarks/auth_overhead.py [--depot .build/release/depot] [--seconds 8] [--rounds 3] [--json]
Needs: wrk, curl (apt). Build Depot first: swift build -c release.
"""
import argparse
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from registry_vs_distribution import free_port, push_manifest  # noqa: E402


def request(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def cpu_seconds(pid):
    """User + system CPU time of a process (clock ticks in /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_with(url, seconds, header, pid):
    """Requests per second, and the server's CPU microseconds per request (robust against
    noisy neighbours, which change throughput but not the work a request costs)."""
    import re
    before = cpu_seconds(pid)
    cmd = ["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} requests were refused with {header[:30]}…: the benchmark is wrong")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), used / total * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depot", default=".build/release/depot")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install wrk curl")
    work = tempfile.mkdtemp(prefix="depot-auth-bench-")
    admin = secrets.token_hex(32)
    procs = []
    try:
        servers = {}
        pids = {}
        for name, enabled in (("off", False), ("on", True)):
            port = free_port()
            cfg = os.path.join(work, f"{name}.yaml")
            with open(cfg, "w") as f:
                f.write(f"pipelines: {{directory: \"\"}}\nauth: {{enabled: {str(enabled).lower()}, password_iterations: 600000}}\n")
            env = dict(os.environ, DEPOT_ADMIN_TOKEN=admin)
            p = subprocess.Popen(["taskset", "-c", "1", args.depot, "serve", "--config", cfg, "--storage", f"{work}/{name}", "--listen", f"127.0.0.1:{port}",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            procs.append(p)
            servers[name] = f"http://127.0.0.1:{port}"
            pids[f"http://127.0.0.1:{port}"] = p.pid
        for base in servers.values():
            for _ in range(200):
                if subprocess.run(["curl", "-s", "-o", "/dev/null", base + "/healthz"]).returncode == 0:
                    break
                time.sleep(0.05)
        push_manifest(servers["off"], "bench/manifest")
        on = servers["on"]
        # Seed the authenticated server through the API, with the admin token.
        admin_h = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        t = request(f"{on}/depot/v1/admin/tokens", "POST", json.dumps(
            {"name": "reader", "kind": "robot", "grants": [{"role": "reader", "repositories": ["bench/**"]}]}).encode(), admin_h)
        robot = t["secret"]
        request(f"{on}/depot/v1/admin/users", "POST", json.dumps(
            {"name": "alice", "password": "bench-password-1", "grants": [{"role": "reader", "repositories": ["**"]}]}).encode(), admin_h)
        import registry_vs_distribution as rvd
        orig_curl = rvd.curl
        rvd.curl = lambda *a: orig_curl("-H", f"Authorization: Bearer {admin}", *a)
        push_manifest(on, "bench/manifest")
        rvd.curl = orig_curl
        jwt = request(f"{on}/token?service=depot&scope=repository:bench/manifest:pull", headers={
            "Authorization": "Basic " + base64.b64encode(f"x:{robot}".encode()).decode()})["token"]
        basic = "Basic " + base64.b64encode(b"alice:bench-password-1").decode()
        cases = [("auth off", servers["off"], None), ("robot token", on, f"Authorization: Bearer {robot}"),
                 ("token from /token (ES256)", on, f"Authorization: Bearer {jwt}"), ("user password (Basic)", on, f"Authorization: {basic}")]
        runs = {name: [] for name, _, _ in cases}
        cpu = {name: [] for name, _, _ in cases}
        for i in range(args.rounds):
            # Alternate the order too, so that whatever runs first in a round is not always the same case.
            for name, base, h in (cases if i % 2 == 0 else list(reversed(cases))):
                rps, us = wrk_with(f"{base}/v2/bench/manifest/manifests/latest", args.seconds, h, pids[base])
                runs[name].append(rps)
                cpu[name].append(us)
        off = statistics.median(runs["auth off"])
        off_cpu = statistics.median(cpu["auth off"])
        result = {name: {"rps_median": statistics.median(v), "rps": v, "vs_off": statistics.median(v) / off - 1,
                         "cpu_us_per_request": statistics.median(cpu[name]),
                         "cpu_vs_off": statistics.median(cpu[name]) / off_cpu - 1} for name, v in runs.items()}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"manifest GET by tag, server on CPU 1, wrk -t1 -c32 -d{args.seconds}s on CPU 0, {args.rounds} alternating rounds (median req/s)")
            print(f"  {'':28} {'req/s':>10} {'vs off':>7}   {'CPU µs/req':>10} {'vs off':>7}   req/s per round")
            for name, r in result.items():
                print(f"  {name:28} {r['rps_median']:>10.0f} {r['vs_off'] * 100:+6.1f}%   {r['cpu_us_per_request']:>10.1f} "
                      f"{r['cpu_vs_off'] * 100:+6.1f}%   {', '.join(f'{x:.0f}' for x in r['rps'])}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
