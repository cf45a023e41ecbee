#!/usr/bin/env python3
"""The Python SDK against the `depot` CLI, side by side in one run (issue #17): wall time and
wire bytes of the same operations on the same kind of data, against one `depot serve`.

  1. push a base checkpoint (N layers of random fp32-like bytes, safetensors layout);
  2. push a fine-tune of it (2 layers changed), with lineage to the base;
  3. pull the fine-tune into an empty directory with an empty chunk cache.

Each tool gets its own random data (the server deduplicates across repositories: the second
tool would otherwise find every chunk already there). The SDK drives the same executable, so
the difference is its own overhead (process start, JSON). huggingface_hub's upload path needs a
Hub endpoint and does not run offline: it is not measured here (the Xet comparison is
scripts/bench/xet_dedup.py beside `depot bench dedup`).

Usage: Benchmarks/python_vs_cli.py [--depot .build/release/depot] [--layers 16] [--layer-mib 16]
       [--repeat 3] [--json]
Needs: `pip install ./clients/python` in the Python that runs it; a release build for numbers
that mean anything (a debug build shows the same ratio, slower).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def write_checkpoint(path: Path, layers: int, layer_bytes: int, seed: int, changed: tuple[int, ...] = ()) -> None:
    entries = {
        f"layer.{i}.weight": {"dtype": "F32", "shape": [layer_bytes // 4], "data_offsets": [i * layer_bytes, (i + 1) * layer_bytes]}
        for i in range(layers)
    }
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for i in range(layers):
            f.write(random.Random(seed * 1000 + i + (7_777_777 if i in changed else 0)).randbytes(layer_bytes))


def cli(depot: str, args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    start = time.monotonic()
    out = subprocess.run([depot, *args, "--json", "--quiet"], env=env, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - start, json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depot", default=".build/release/depot")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--layer-mib", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    depot_bin = os.path.abspath(a.depot)
    import depot

    work = Path(tempfile.mkdtemp(prefix="depot-bench-sdk-"))
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    url = f"http://127.0.0.1:{p}"
    server = subprocess.Popen(
        [depot_bin, "serve", "--listen", f"127.0.0.1:{p}", "--storage", str(work / "storage")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: dict[str, dict[str, list[float]]] = {"cli": {}, "sdk": {}}
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        env = dict(os.environ, DEPOT_REGISTRY=url)
        layer = a.layer_mib << 20
        changed_bytes = 2 * layer
        seed = 0
        for round_ in range(a.repeat):
            for tool in ("cli", "sdk"):
                seed += 1
                d = work / f"{tool}-{round_}"
                write_checkpoint(d / "base" / "model.safetensors", a.layers, layer, seed)
                write_checkpoint(d / "ft" / "model.safetensors", a.layers, layer, seed, changed=(3, a.layers - 1))
                repo = f"bench/{tool}{round_}"
                cache = str(d / "cache")
                r = rows[tool]
                if tool == "cli":
                    t1, s1 = cli(depot_bin, ["push", f"{repo}:base", str(d / "base")], env)
                    t2, s2 = cli(depot_bin, ["push", f"{repo}:ft", str(d / "ft"), "--from", f"{repo}:base", "--relation", "fine-tuned-from"], env)
                    t3, s3 = cli(depot_bin, ["pull", f"{repo}:ft", "--output", str(d / "out"), "--cache", cache], env)
                else:
                    reg = depot.Registry(url, executable=depot_bin, cache=cache)
                    start = time.monotonic()
                    s1 = vars(reg.push(f"{repo}:base", d / "base"))
                    t1 = time.monotonic() - start
                    start = time.monotonic()
                    s2 = vars(reg.push(f"{repo}:ft", d / "ft", parent=f"{repo}:base", relation="fine-tuned-from"))
                    t2 = time.monotonic() - start
                    start = time.monotonic()
                    s3 = vars(reg.pull(f"{repo}:ft", d / "out"))
                    t3 = time.monotonic() - start
                assert (d / "out" / "model.safetensors").read_bytes() == (d / "ft" / "model.safetensors").read_bytes()
                for key, value in (
                    ("base_push_s", t1),
                    ("base_push_mb_s", s1["logical_bytes"] / t1 / 1e6),
                    ("ft_push_s", t2),
                    ("ft_sent_over_changed", s2["bytes_sent"] / changed_bytes),
                    ("pull_s", t3),
                    ("pull_mb_s", s3["logical_bytes"] / t3 / 1e6),
                    ("pull_received_over_size", s3["bytes_received"] / s3["logical_bytes"]),
                ):
                    r.setdefault(key, []).append(value)
                shutil.rmtree(d)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    summary = {tool: {k: statistics.median(v) for k, v in r.items()} for tool, r in rows.items()}
    summary["sdk_over_cli_time"] = {
        k: summary["sdk"][k] / summary["cli"][k] for k in ("base_push_s", "ft_push_s", "pull_s")
    }
    summary["setup"] = {"layers": a.layers, "layer_mib": a.layer_mib, "repeat": a.repeat, "depot": depot_bin}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        size = a.layers * a.layer_mib
        print(f"{size} MiB checkpoint, fine-tune changes 2 layers ({2 * a.layer_mib} MiB); median of {a.repeat}")
        print(f"{'':28}{'CLI':>12}{'SDK':>12}{'SDK/CLI':>10}")
        for k in ("base_push_s", "base_push_mb_s", "ft_push_s", "ft_sent_over_changed", "pull_s", "pull_mb_s", "pull_received_over_size"):
            c, s = summary["cli"][k], summary["sdk"][k]
            print(f"{k:28}{c:12.3f}{s:12.3f}{s / c:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
