#!/usr/bin/env python3
"""The `depot` client's delta transfers, measured (issue #4):

  1. a model family: v1 is N layers (safetensors, random fp32-like bytes); v2 changes the
     last 2 layers. Push v1, push v2: bytes_sent(v2) against the changed bytes. Pull v1, then v2
     into the same chunk cache: bytes_received(v2) against the changed bytes.
  2. wall time of the v2 push against oras-py pushing the same file whole (to the same Depot
     server, a fresh repository; Depot dedups server side, but oras moves every byte).
  3. a large file (default 4 GiB) pushed and pulled: wall time and the client's peak RSS.
  4. with --link-mbit N (default 1000): another fine-tune of v1 (its last 2 layers changed
     otherwise), pushed by Depot and by oras-py to new repositories, both through a
     loopback proxy that limits each direction to N Mbit/s (a token bucket shared by every
     connection, as a link is): on a real link the gain is the bytes that do not move. Only the
     bandwidth is limited, not the latency (loopback's round trip stays).

Usage: Benchmarks/client_transfer.py [--depot .build/release/depot] [--layers 16] [--layer-mib 16]
                                     [--big-gib 4] [--json]
Needs: a release build (swift build -c release --product depot), python3 with oras (pip), GNU time
(/usr/bin/time, Debian `time`) for peak RSS.
"""
import argparse
import json
import os
import shutil
import socket
import struct
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


def write_checkpoint(path, layers, layer_bytes, changed=(), seed=1, variant=1):
    """safetensors with `layers` F32 tensors; layers in `changed` get other random bytes (other
    again for another `variant`)."""
    entries = {}
    for i in range(layers):
        entries[f"layer.{i}.weight"] = {"dtype": "F32", "shape": [layer_bytes // 4],
                                        "data_offsets": [i * layer_bytes, (i + 1) * layer_bytes]}
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    import random
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for i in range(layers):
            rng = random.Random(seed * 1000 + i + (7_777_777 * variant if i in changed else 0))
            f.write(rng.randbytes(layer_bytes))


class LimitedLink:
    """A TCP proxy on 127.0.0.1 whose two directions each carry at most `mbit` Mbit/s, shared by
    all connections: each write waits until the link would have serialized the bytes before it."""

    def __init__(self, upstream_port, mbit):
        import threading
        self.rate = mbit * 1e6 / 8  # bytes per second
        self.upstream = upstream_port
        self.free_at = {"up": 0.0, "down": 0.0}
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def wait(self, direction, n):
        with self.lock:
            now = time.monotonic()
            start = max(now, self.free_at[direction])
            self.free_at[direction] = start + n / self.rate
            done = self.free_at[direction]
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(64 << 10)
                if not data:
                    break
                self.wait(direction, len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept(self):
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self.pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, "down"), daemon=True).start()

    def close(self):
        self.listener.close()


def oras_push_seconds(port, path, target):
    """Seconds oras-py takes to push the file at `path` whole to 127.0.0.1:`port`/`target`;
    None without oras (pip install oras)."""
    try:
        import oras.client
    except ImportError:
        return None
    cwd = os.getcwd()
    os.chdir(os.path.dirname(path))
    try:
        c = oras.client.OrasClient(hostname=f"127.0.0.1:{port}", insecure=True)
        start = time.monotonic()
        c.push(target=f"127.0.0.1:{port}/{target}", files=[os.path.basename(path)])
        return time.monotonic() - start
    finally:
        os.chdir(cwd)


def run_measured(cmd, env=None):
    """Runs a command; returns (seconds, peak RSS in MB, stdout). The peak comes from GNU time
    (`%M`): a child forked from this Python process would report Python's own pages as its
    peak (`ru_maxrss` counts the moments between fork and exec)."""
    rss_file = tempfile.mktemp(prefix="depot-rss-")
    timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd if os.path.exists("/usr/bin/time") else cmd
    start = time.monotonic()
    p = subprocess.run(timed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    rss = None
    if os.path.exists(rss_file):
        with open(rss_file) as f:
            rss = int(f.read().split()[-1]) / 1024
        os.remove(rss_file)
    return elapsed, rss, p.stdout.decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depot", default=".build/release/depot")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--layer-mib", type=int, default=16)
    ap.add_argument("--big-gib", type=float, default=4)
    ap.add_argument("--link-mbit", type=float, default=1000, help="the limited link's rate (0: skip that part)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    depot = os.path.abspath(args.depot)
    if not os.path.exists(depot):
        raise SystemExit(f"{depot} is missing: swift build -c release --product depot")

    work = tempfile.mkdtemp(prefix="depot-client-bench-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([depot, "serve", "--storage", f"{work}/storage", "--listen", f"127.0.0.1:{port}",
                               "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        env = dict(os.environ, DEPOT_REGISTRY=url, DEPOT_CACHE=f"{work}/cache")
        layer_bytes = args.layer_mib << 20
        v1, v2 = f"{work}/v1/model.safetensors", f"{work}/v2/model.safetensors"
        os.makedirs(os.path.dirname(v1)); os.makedirs(os.path.dirname(v2))
        write_checkpoint(v1, args.layers, layer_bytes)
        write_checkpoint(v2, args.layers, layer_bytes, changed=(args.layers - 2, args.layers - 1))
        changed = 2 * layer_bytes

        def summary(out):
            return json.loads(out[out.index("{"):])

        t1, _, o1 = run_measured([depot, "push", "family/model:v1", v1, "--json"], env)
        t2, _, o2 = run_measured([depot, "push", "family/model:v2", v2, "--json"], env)
        s2 = summary(o2)
        p1t, _, po1 = run_measured([depot, "pull", "family/model:v1", "-o", f"{work}/out1", "--json"], env)
        p2t, _, po2 = run_measured([depot, "pull", "family/model:v2", "-o", f"{work}/out2", "--json"], env)
        ps2 = summary(po2)
        results["family"] = {
            "file_bytes": os.path.getsize(v2), "changed_bytes": changed,
            "push_v1_seconds": round(t1, 3), "push_v2_seconds": round(t2, 3),
            "push_v2_bytes_sent": s2["bytes_sent"], "push_v2_sent_over_changed": round(s2["bytes_sent"] / changed, 4),
            "pull_v1_seconds": round(p1t, 3), "pull_v2_seconds": round(p2t, 3),
            "pull_v2_bytes_received": ps2["bytes_received"],
            "pull_v2_received_over_changed": round(ps2["bytes_received"] / changed, 4),
        }

        # oras-py pushing v2 whole (a fresh repository of the same server).
        t = oras_push_seconds(port, v2, "family/oras:v2")
        results["family"]["oras_push_v2_seconds"] = t and round(t, 3)
        if t is not None:
            results["family"]["oras_push_v2_bytes_sent"] = os.path.getsize(v2)

        # A fine-tune pushed over a limited link to a registry that holds its base model: Depot
        # sends the changed chunks, oras-py the whole file.
        if args.link_mbit > 0:
            # Another fine-tune of v1 (v2 is stored already: pushing it again would move nothing).
            v3 = f"{work}/v3/model.safetensors"
            os.makedirs(os.path.dirname(v3))
            write_checkpoint(v3, args.layers, layer_bytes, changed=(args.layers - 2, args.layers - 1), variant=2)
            link = LimitedLink(port, args.link_mbit)
            linked = dict(env, DEPOT_REGISTRY=f"http://127.0.0.1:{link.port}", DEPOT_CACHE=f"{work}/cache-link")
            lt, _, lo = run_measured([depot, "push", "family/linked:v3", v3, "--json"], linked)
            ls = summary(lo)
            oras_t = oras_push_seconds(link.port, v3, "family/oras-linked:v3")
            link.close()
            results["link"] = {"mbit": args.link_mbit, "depot_push_seconds": round(lt, 3), "depot_bytes_sent": ls["bytes_sent"],
                               "oras_push_seconds": oras_t and round(oras_t, 3), "oras_bytes_sent": os.path.getsize(v3),
                               "speedup": oras_t and round(oras_t / lt, 2)}

        # A large file: push and pull, with the client's peak RSS.
        if args.big_gib > 0:
            big = f"{work}/big/weights.bin"
            os.makedirs(os.path.dirname(big))
            total = int(args.big_gib * (1 << 30))
            with open(big, "wb") as f:
                left = total
                while left > 0:
                    n = min(left, 64 << 20)
                    f.write(os.urandom(n))
                    left -= n
            bt, brss, _ = run_measured([depot, "push", "big/model:v1", big, "--json"], env)
            shutil.rmtree(f"{work}/cache", ignore_errors=True)
            pt, prss, _ = run_measured([depot, "pull", "big/model:v1", "-o", f"{work}/bigout", "--json",
                                        "--cache", f"{work}/bigcache"], env)
            results["large"] = {"bytes": total, "push_seconds": round(bt, 2), "push_mb_per_s": round(total / bt / 1e6, 1),
                                "push_peak_rss_mb": brss and round(brss, 1), "pull_seconds": round(pt, 2),
                                "pull_mb_per_s": round(total / pt / 1e6, 1), "pull_peak_rss_mb": prss and round(prss, 1)}
            os.remove(big)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    f = results["family"]
    print(f"family: {f['file_bytes'] >> 20} MiB file, {f['changed_bytes'] >> 20} MiB changed (last 2 of {args.layers} layers)")
    print(f"  push v2: sent {f['push_v2_bytes_sent']} B = {f['push_v2_sent_over_changed']}x the changed bytes, {f['push_v2_seconds']} s"
          f" (oras-py whole-file push: {f.get('oras_push_v2_seconds')} s)")
    print(f"  pull v2: received {f['pull_v2_bytes_received']} B = {f['pull_v2_received_over_changed']}x the changed bytes, {f['pull_v2_seconds']} s")
    if "link" in results:
        k = results["link"]
        print(f"  a fine-tune of v1 pushed over a {k['mbit']:.0f} Mbit/s link: depot {k['depot_push_seconds']} s ({k['depot_bytes_sent']} B sent),"
              f" oras-py {k['oras_push_seconds']} s ({k['oras_bytes_sent']} B): oras-py / depot = {k['speedup']}")
    if "large" in results:
        l = results["large"]
        print(f"large: {l['bytes'] / (1 << 30):.1f} GiB push {l['push_seconds']} s ({l['push_mb_per_s']} MB/s, peak RSS {l['push_peak_rss_mb']} MB),"
              f" pull {l['pull_seconds']} s ({l['pull_mb_per_s']} MB/s, peak RSS {l['pull_peak_rss_mb']} MB)")


if __name__ == "__main__":
    sys.exit(main())
