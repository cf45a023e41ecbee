#!/usr/bin/env python3
"""Depot against the reference registry (CNCF distribution, Debian `docker-registry`),
side by side in one run, measured the same way with curl and wrk on loopback:

  monolithic push of a blob (POST, then PUT ?digest= with the whole body)
  chunked push (PATCHes of --chunk-mib, then PUT ?digest=)
  blob GET, warm (just written) and cold (page cache dropped first; needs root); every GET row is
  the median of --rounds GETs (3), the registries alternating after the first
  the same push and warm GET of a safetensors file of fp32 weights distributed like trained ones,
  N(0, 0.02) (needs numpy): what a Triton node pulls. The random blob above is stored raw; weights
  are stored as compressed byte planes and decoded on every GET, so their GET is measured apart.
  manifest GET by tag: wrk -t2 -c32 -d10s
  peak RSS (VmHWM) of each server during the push and, reset before it (needs root), during the GET
  a pull storm: --storm GETs of the blob's first 64 MiB at once, each client reading 4 MiB/s (a
  rollout's nodes pulling together over slow links): peak RSS, reset before it (needs root), and
  the most threads the server ran meanwhile
  a cold pull storm: the page cache dropped (needs root), --storm clients at once each GET a
  different part of the blob, as fast as they can (a fleet restarting, each node loading its
  own model): the aggregate MB/s, a median of --rounds like the GET rows
  Depot's own ingest CPU (`depot bench ingest`: CPU-seconds per GiB)
  `depot push` and `depot pull` of a --client-mib file (a fresh one: every chunk moves) against
  the Depot server, client and server on this machine (0 skips it)

and prints issue #19's goals with the measured value and PASS/FAIL. Both registries' storage
is on the same filesystem: the disk's by default, tmpfs with --tmpfs (takes the disk's noise out).

With --family DIR (made by scripts/bench/make_model_family.py) it also reports the family's
stored-bytes ratio (`depot bench dedup`, cast-aware deduplication included).

Usage: Benchmarks/registry_vs_distribution.py [--mib 1024] [--chunk-mib 64] [--client-mib 4096] [--depot .build/release/depot]
                                             [--storm 64] [--rounds 3] [--tmpfs] [--family DIR] [--json]
Needs: docker-registry, wrk, curl (apt). Build Depot first: swift build -c release.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(url):
    for _ in range(200):
        if subprocess.run(["curl", "-s", "-o", "/dev/null", url + "/v2/"]).returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not start")


def curl(*args):
    out = subprocess.run(["curl", "-s", "-S", "-D", "-", *args], capture_output=True, text=True, check=True)
    return out.stdout


def header(text, name):
    for line in text.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def status(text):
    codes = re.findall(r"^HTTP/1.1 (\d+)", text, re.M)
    return int(codes[-1]) if codes else 0


def absolute(base, location):
    return location if location.startswith("http") else base + location


def with_query(url, q):
    return url + ("&" if "?" in url else "?") + q


def push_monolithic(base, repo, path, digest):
    loc = header(curl("-X", "POST", f"{base}/v2/{repo}/blobs/uploads/"), "Location")
    t = time.perf_counter()
    out = curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", path,
               with_query(absolute(base, loc), f"digest={digest}"))
    dt = time.perf_counter() - t
    assert status(out) == 201, out
    return dt


def push_chunked(base, repo, path, digest, chunk):
    size = os.path.getsize(path)
    loc = absolute(base, header(curl("-X", "POST", f"{base}/v2/{repo}/blobs/uploads/"), "Location"))
    parts = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            n = min(chunk, size - offset)
            part = f"{path}.part{len(parts)}"
            with open(part, "wb") as p:
                p.write(f.read(n))
            parts.append((part, offset, n))
            offset += n
    t = time.perf_counter()
    for part, offset, n in parts:
        out = curl("-X", "PATCH", "-H", "Content-Type: application/octet-stream",
                   "-H", f"Content-Range: {offset}-{offset + n - 1}", "-T", part, loc)
        assert status(out) == 202, out
        loc = absolute(base, header(out, "Location"))
    out = curl("-X", "PUT", with_query(loc, f"digest={digest}"))
    dt = time.perf_counter() - t
    assert status(out) == 201, out
    for part, _, _ in parts:
        os.remove(part)
    return dt


def get_blob(base, repo, digest):
    t = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                          f"{base}/v2/{repo}/blobs/{digest}"], capture_output=True, text=True, check=True).stdout
    dt = time.perf_counter() - t
    assert out.startswith("200"), out
    return dt


def pull_storm(base, repo, digest, size, clients, pid):
    """Peak RSS (MiB) and peak thread count of the server while `clients` curl GETs of the
    blob's first 64 MiB run at once, each limited to 4 MiB/s: what a server holds per slow pull.
    RSS is None without root (the peak cannot be reset after the earlier steps); the peak is
    reset before the storm, so the later `peak_rss_mib` covers the storm and what follows it.
    Threads are sampled every 50 ms from /proc."""
    can_reset = reset_peak_rss(pid)
    length = min(size, 64 << 20)
    rate = 4 << 20
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "--limit-rate", str(rate), "-r", f"0-{length - 1}",
                               "--max-time", str(3 * length // rate + 30), "-w", "%{http_code} %{size_download}",
                               f"{base}/v2/{repo}/blobs/{digest}"], stdout=subprocess.PIPE, text=True)
             for _ in range(clients)]
    threads = 0
    while any(p.poll() is None for p in procs):
        threads = max(threads, proc_threads(pid))
        time.sleep(0.05)
    for p in procs:
        out = p.communicate()[0]
        if p.returncode != 0 or out != f"206 {length}":
            raise SystemExit(f"pull storm against {base}: a GET ended with curl exit {p.returncode}, {out!r}")
    return (vmhwm_mib(pid) if can_reset else None), threads


def cold_storm(base, repo, digest, size, clients):
    """Aggregate MB/s of `clients` ranged GETs at once, each of a different 1/clients of the
    blob, unthrottled, the caller having dropped the page cache: many pulls of data no one
    read recently, so the disk and the server's read path, not a shared cached page, set the pace."""
    part = size // clients
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-r", f"{i * part}-{(i + 1) * part - 1}",
                               "-w", "%{http_code} %{size_download}", f"{base}/v2/{repo}/blobs/{digest}"],
                              stdout=subprocess.PIPE, text=True)
             for i in range(clients)]
    for p in procs:
        out = p.communicate()[0]
        if p.returncode != 0 or out != f"206 {part}":
            raise SystemExit(f"cold pull storm against {base}: a GET ended with curl exit {p.returncode}, {out!r}")
    return clients * part / (time.perf_counter() - start) / 1e6


def proc_threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration, ValueError):
        return 0


def push_manifest(base, repo):
    config = b"{}"
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    loc = header(curl("-X", "POST", f"{base}/v2/{repo}/blobs/uploads/"), "Location")
    path = os.path.join(tempfile.gettempdir(), "depot-bench-config.json")
    with open(path, "wb") as f:
        f.write(config)
    out = curl("-X", "PUT", "-T", path, with_query(absolute(base, loc), f"digest={cd}"))
    assert status(out) == 201, out
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
                           "layers": []})
    out = curl("-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary", manifest,
               f"{base}/v2/{repo}/manifests/latest")
    assert status(out) == 201, out


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-H",
                          "Accept: application/vnd.oci.image.manifest.v1+json", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return rps, p99.group(1) if p99 else "?"


def drop_caches():
    """Drops the page cache (root only); False when it cannot."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux: clear_refs 5); False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5\n")
        return True
    except OSError:
        return False


def make_weights(path, mib):
    """A safetensors file of about `mib` MiB: fp32 tensors of N(0, 0.02) values, 64 MiB each."""
    import numpy as np
    rng = np.random.default_rng(19)
    count = max(1, mib // 64)
    n = (mib << 20) // count // 4
    header = {f"layers.{i}.weight": {"dtype": "F32", "shape": [n], "data_offsets": [i * n * 4, (i + 1) * n * 4]}
              for i in range(count)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for piece in (len(text).to_bytes(8, "little"), text):
            h.update(piece)
            f.write(piece)
        for _ in range(count):
            piece = (rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)).tobytes()
            h.update(piece)
            f.write(piece)
    return "sha256:" + h.hexdigest(), os.path.getsize(path)


def ingest_cpu_seconds_per_gib(depot, mib, workdir):
    out = subprocess.run([depot, "bench", "ingest", "--mib", str(mib), "--workdir", workdir, "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["ingest_cpu_seconds_per_gib"]


# Issue #19's goals: (what, the value's key, "ratio" of depot over distribution or Depot's own
# "value", the comparison, the target).
GOALS = [
    ("blob GET, warm page cache", "blob_get_mbps", "ratio", ">=", 1.2),
    ("blob GET, cold page cache", "blob_get_cold_mbps", "ratio", ">=", 1.2),
    ("blob GET, fp32 weights, warm", "weights_get_mbps", "ratio", ">=", 1.2),
    ("monolithic push", "monolithic_push_mbps", "ratio", ">=", 2.0),
    ("peak RSS during the push", "peak_rss_after_push_mib", "ratio", "<=", 2.0),
    ("peak RSS during the pull", "peak_rss_during_get_mib", "ratio", "<=", 2.0),
    ("peak RSS, pull storm", "peak_rss_storm_mib", "ratio", "<=", 2.0),
    ("manifest GET by tag", "manifest_get_rps", "ratio", ">=", 15.0),
    ("ingest CPU-seconds per GiB", "ingest_cpu_seconds_per_gib", "value", "<=", 2.5),
    ("depot push, MB/s", "client_push_mbps", "value", ">=", 300.0),
    ("depot pull, MB/s", "client_pull_mbps", "value", ">=", 300.0),
    ("stored-bytes ratio, family", "family_dedup_ratio", "value", ">=", 4.0),
]

FAMILY = ("base.safetensors", "finetune.safetensors", "longheader.safetensors", "base.onnx", "fp16.safetensors")


def family_dedup_ratio(depot, family):
    """`depot bench dedup` (the cast pass included) over scripts/bench/make_model_family.py's files."""
    out = subprocess.run([depot, "bench", "dedup", "--json", *[os.path.join(family, n) for n in FAMILY]],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["dedup_ratio"]


def client_transfer(depot, base, mib, work, data_dir):
    """MB/s of `depot push` of a fresh random file and of `depot pull` of it into an empty cache
    and directory (on the storage's filesystem, as a training job's output would be)."""
    path = os.path.join(data_dir, "client.bin")
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    env = dict(os.environ, DEPOT_REGISTRY=base)
    try:
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # the push reads a warm file
        start = time.monotonic()
        subprocess.run([depot, "push", "bench/client:v1", path, "--quiet"], env=env, check=True)
        push = time.monotonic() - start
        os.remove(path)
        start = time.monotonic()
        subprocess.run([depot, "pull", "bench/client:v1", "-o", os.path.join(data_dir, "client-out"), "--quiet",
                        "--cache", os.path.join(data_dir, "client-cache")], env=env, check=True)
        pull = time.monotonic() - start
    finally:
        for p in (path, os.path.join(data_dir, "client-out"), os.path.join(data_dir, "client-cache")):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))
    size = mib << 20
    return size / push / 1e6, size / pull / 1e6


def goals(results, ratios):
    out = []
    for what, key, kind, op, target in GOALS:
        value = ratios.get(key) if kind == "ratio" else results["depot"].get(key)
        passed = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"goal": what, "metric": key, "kind": kind, "value": value, "target": f"{op} {target}", "pass": passed})
    return out


def vmhwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--depot", default=".build/release/depot")
    ap.add_argument("--tmpfs", action="store_true", help="both registries' storage on tmpfs (/dev/shm)")
    ap.add_argument("--no-ingest", action="store_true", help="skip `depot bench ingest`")
    ap.add_argument("--client-mib", type=int, default=4096, help="`depot push`/`pull` of a file this big (0: skip)")
    ap.add_argument("--family", help="a directory made by scripts/bench/make_model_family.py: report its stored-bytes ratio")
    ap.add_argument("--storm", type=int, default=64, help="clients in the pull storm (0: skip it)")
    ap.add_argument("--rounds", type=int, default=3, help="GETs of each kind per registry, alternating; the median counts")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("docker-registry", "wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install docker-registry wrk curl")

    work = tempfile.mkdtemp(prefix="depot-vs-dist-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    data_dir = tempfile.mkdtemp(prefix="depot-vs-dist-data-", dir="/dev/shm" if args.tmpfs else None)
    procs = []
    try:
        def make(path):
            h = hashlib.sha256()
            with open(path, "wb") as f:
                for _ in range(args.mib):
                    piece = os.urandom(1 << 20)
                    h.update(piece)
                    f.write(piece)
            return "sha256:" + h.hexdigest()

        # Two different blobs, so the chunked push is not deduplicated against the monolithic one.
        blob, chunked_blob = os.path.join(work, "a.bin"), os.path.join(work, "b.bin")
        digest, chunked_digest = make(blob), make(chunked_blob)
        size = args.mib << 20
        try:
            weights = os.path.join(work, "weights.safetensors")
            weights_digest, weights_size = make_weights(weights, args.mib)
        except ImportError:
            weights = None
            print("numpy is missing (pip install numpy): the fp32 weights rows are skipped", file=sys.stderr)

        # The reference registry: filesystem storage, delete enabled, as the notes describe.
        dport, pport = free_port(), free_port()
        cfg = os.path.join(work, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {data_dir}/distribution\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{dport}\n")
        dist = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        depot = subprocess.Popen([args.depot, "serve", "--storage", f"{data_dir}/depot", "--listen", f"127.0.0.1:{pport}",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = [dist, depot]
        servers = {"distribution": (f"http://127.0.0.1:{dport}", dist), "depot": (f"http://127.0.0.1:{pport}", depot)}
        results = {}
        for name, (base, proc) in servers.items():
            wait_ready(base)
            r = {"threads_idle": proc_threads(proc.pid)}
            r["monolithic_push_mbps"] = size / push_monolithic(base, "bench/mono", blob, digest) / 1e6
            r["peak_rss_after_push_mib"] = vmhwm_mib(proc.pid)
            r["chunked_push_mbps"] = size / push_chunked(base, "bench/chunked", chunked_blob, chunked_digest, args.chunk_mib << 20) / 1e6
            can_reset = reset_peak_rss(proc.pid)
            r["blob_get_mbps"] = size / get_blob(base, "bench/mono", digest) / 1e6
            if can_reset:
                r["peak_rss_during_get_mib"] = vmhwm_mib(proc.pid)
            if args.storm > 0:
                storm_rss, storm_threads = pull_storm(base, "bench/mono", digest, size, args.storm, proc.pid)
                if storm_rss is not None:
                    r["peak_rss_storm_mib"] = storm_rss
                r["peak_threads_storm"] = storm_threads
            if drop_caches():
                r["blob_get_cold_mbps"] = size / get_blob(base, "bench/mono", digest) / 1e6
            if args.storm > 0 and drop_caches():
                r["cold_storm_mbps"] = cold_storm(base, "bench/mono", digest, size, args.storm)
            if weights:
                r["weights_push_mbps"] = weights_size / push_monolithic(base, "bench/weights", weights, weights_digest) / 1e6
                r["weights_get_mbps"] = weights_size / get_blob(base, "bench/weights", weights_digest) / 1e6
            push_manifest(base, "bench/manifest")
            rps, p99 = wrk(f"{base}/v2/bench/manifest/manifests/latest", args.seconds)
            r["manifest_get_rps"] = rps
            r["manifest_get_p99"] = p99
            r["peak_rss_mib"] = vmhwm_mib(proc.pid)
            results[name] = r
        # The GET rows move with this machine's state from minute to minute (page cache, fresh
        # memory, the other tenant's load), and each registry's first GET came at a different
        # time: more rounds, alternating registries, and the median of each.
        get_keys = [k for k in ("blob_get_mbps", "blob_get_cold_mbps", "cold_storm_mbps", "weights_get_mbps")
                    if k in results["depot"]]
        runs = {name: {k: [results[name][k]] for k in get_keys if k in results[name]} for name in servers}
        for i in range(args.rounds - 1):
            # Depot goes first in the first extra round, distribution in the next, and so on.
            order = list(servers.items())
            for name, (base, _proc) in (order[::-1] if i % 2 == 0 else order):
                got = runs[name]
                if "cold_storm_mbps" in got and drop_caches():
                    got["cold_storm_mbps"].append(cold_storm(base, "bench/mono", digest, size, args.storm))
                # The cold GET comes first: dropping the page cache makes every file cold, the
                # other registry's too, so what follows it reads its bytes once before timing.
                dropped = "blob_get_cold_mbps" in got and drop_caches()
                if dropped:
                    got["blob_get_cold_mbps"].append(size / get_blob(base, "bench/mono", digest) / 1e6)
                if "blob_get_mbps" in got:
                    got["blob_get_mbps"].append(size / get_blob(base, "bench/mono", digest) / 1e6)
                if "weights_get_mbps" in got:
                    if dropped:
                        get_blob(base, "bench/weights", weights_digest)
                    got["weights_get_mbps"].append(weights_size / get_blob(base, "bench/weights", weights_digest) / 1e6)
        for name in servers:
            for k, values in runs[name].items():
                results[name][k] = statistics.median(values)
                results[name][k + "_rounds"] = [round(v, 1) for v in values]
        if not args.no_ingest:
            ingest_dir = tempfile.mkdtemp(prefix="depot-vs-dist-ingest-", dir="/dev/shm" if args.tmpfs else None)
            try:
                results["depot"]["ingest_cpu_seconds_per_gib"] = ingest_cpu_seconds_per_gib(args.depot, args.mib, ingest_dir)
            finally:
                shutil.rmtree(ingest_dir, ignore_errors=True)
        if args.client_mib > 0:
            push_mbps, pull_mbps = client_transfer(args.depot, servers["depot"][0], args.client_mib, work, data_dir)
            results["depot"]["client_push_mbps"] = push_mbps
            results["depot"]["client_pull_mbps"] = pull_mbps
        if args.family:
            results["depot"]["family_dedup_ratio"] = family_dedup_ratio(args.depot, args.family)
        keys = ("monolithic_push_mbps", "chunked_push_mbps", "blob_get_mbps", "blob_get_cold_mbps", "cold_storm_mbps",
                "weights_push_mbps",
                "weights_get_mbps", "manifest_get_rps",
                "peak_rss_after_push_mib", "peak_rss_during_get_mib", "peak_rss_storm_mib", "peak_rss_mib")
        ratios = {k: results["depot"][k] / results["distribution"][k]
                  for k in keys if k in results["depot"] and k in results["distribution"] and results["distribution"][k] > 0}
        checked = goals(results, ratios)
        if args.json:
            print(json.dumps({"results": results, "depot_over_distribution": ratios, "goals": checked,
                              "storage": "tmpfs" if args.tmpfs else "disk"}, indent=2))
        else:
            print(f"storage: {'tmpfs' if args.tmpfs else 'disk'}, blob {args.mib} MiB")
            print(f"{'metric':28} {'distribution':>14} {'depot':>14} {'ratio':>8}")
            for k in keys:
                if k not in results["depot"] or k not in results["distribution"]:
                    why = ("needs numpy" if k.startswith("weights_") else
                           "--storm 0" if "storm" in k and args.storm == 0 else "needs root")
                    print(f"{k:28} {'n/a (' + why + ')':>39}")
                    continue
                dv, pv = results["distribution"][k], results["depot"][k]
                print(f"{k:28} {dv:14.1f} {pv:14.1f} {pv / dv:8.2f}")
            for k in ("blob_get_mbps", "blob_get_cold_mbps", "cold_storm_mbps", "weights_get_mbps"):
                if k + "_rounds" in results["depot"]:
                    print(f"{k + ' rounds':28} {' '.join(f'{v:.0f}' for v in results['distribution'].get(k + '_rounds', [])):>14}"
                          f" {' '.join(f'{v:.0f}' for v in results['depot'][k + '_rounds']):>14}")
            if "peak_threads_storm" in results["depot"]:
                print(f"{'threads idle / pull storm':28} {results['distribution']['threads_idle']:>7} / "
                      f"{results['distribution']['peak_threads_storm']:<4} {results['depot']['threads_idle']:>7} / "
                      f"{results['depot']['peak_threads_storm']:<4}")
            print(f"{'manifest_get_p99':28} {results['distribution']['manifest_get_p99']:>14} {results['depot']['manifest_get_p99']:>14}")
            print()
            print(f"{'goal (issue #19)':30} {'measured':>10} {'target':>10}  result")
            for g in checked:
                value = "n/a" if g["value"] is None else f"{g['value']:.2f}{'x' if g['kind'] == 'ratio' else ''}"
                verdict = "n/a" if g["pass"] is None else ("PASS" if g["pass"] else "FAIL")
                print(f"{g['goal']:30} {value:>10} {g['target']:>10}  {verdict}")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
