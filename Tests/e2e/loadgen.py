#!/usr/bin/env python3
"""A bounded load generator for canary end-to-end tests (standard library only, loopback targets only).

Sends KServe v2 JSON infer requests (INPUT0=[1,2], INPUT1=[3,4]; expects OUTPUT0=[4,6]) round-robin to each
target's unversioned POST /v2/models/NAME/infer, at a fixed overall rate, for a fixed duration. Counts per
target and per returned `model_version`: successes, failures (connection error, timeout, HTTP error, or a
wrong answer) and mean latency. A failure with no parsable body has version "unknown" (Triton's error
answers carry no model_version). Never raises on a target being down or reloading: that is a failure.

    loadgen.py --targets http://127.0.0.1:P1,http://127.0.0.1:P2 --model NAME --duration 8 --rate 20 \
               [--out stats.json] [--concurrency 4] [--timeout 5]

Library:
    gen = loadgen.LoadGen(["http://127.0.0.1:P1"], "NAME", rate=20, duration=30)
    gen.start()                 # background thread
    ...; gen.stats()            # snapshot at any time
    gen.stop(); final = gen.join()  # stop early (or wait for the duration)
    # or: loadgen.run(targets, model, duration, rate, stop_event=threading.Event()) -> stats (blocking)

Requests are dispatched on schedule, round-robin, with at most `concurrency` in flight per target; when
a target's slots are all busy (a slow model) its tick is skipped and counted in "skipped", so the
generator never queues without bound and a slow target never starves the others.
"""
import argparse
import http.client
import json
import queue
import sys
import threading
import time
import urllib.parse

BODY = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
    {"name": "INPUT1", "shape": [2], "datatype": "FP32", "data": [3.0, 4.0]},
]}).encode()
EXPECTED = [4.0, 6.0]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_DURATION_S = 3600
MAX_RATE = 1000


def _parse_target(t):
    u = urllib.parse.urlsplit(t.strip() if "://" in t else "http://" + t.strip())
    if u.scheme != "http":
        raise ValueError(f"target {t!r}: only http:// is supported")
    if u.hostname not in LOOPBACK:
        raise ValueError(f"target {t!r}: loopback only (127.0.0.1, localhost, ::1)")
    if not u.port:
        raise ValueError(f"target {t!r}: needs a port")
    return f"http://{u.hostname}:{u.port}" if u.hostname != "::1" else f"http://[::1]:{u.port}", u.hostname, u.port


class _Bucket:
    __slots__ = ("successes", "failures", "latency_sum", "errors")

    def __init__(self):
        self.successes = 0
        self.failures = 0
        self.latency_sum = 0.0
        self.errors = {}

    def add(self, ok, latency, error=None):
        if ok:
            self.successes += 1
        else:
            self.failures += 1
            if error is not None:
                key = error[:200]
                if key in self.errors or len(self.errors) < 5:
                    self.errors[key] = self.errors.get(key, 0) + 1
        self.latency_sum += latency

    def doc(self):
        n = self.successes + self.failures
        d = {"successes": self.successes, "failures": self.failures,
             "mean_latency_ms": round(self.latency_sum / n * 1000, 3) if n else None}
        if self.errors:
            d["errors"] = dict(self.errors)
        return d


class LoadGen:
    def __init__(self, targets, model, rate, duration, concurrency=4, timeout=5.0, stop_event=None):
        if not targets:
            raise ValueError("at least one target")
        self.targets = [_parse_target(t) for t in targets]
        self.model = model
        self.path = "/v2/models/" + urllib.parse.quote(model, safe="") + "/infer"
        self.rate = float(rate)
        self.duration = float(duration)
        if not 0 < self.rate <= MAX_RATE:
            raise ValueError(f"rate {rate}: 0 < rate <= {MAX_RATE}")
        if not 0 < self.duration <= MAX_DURATION_S:
            raise ValueError(f"duration {duration}: 0 < duration <= {MAX_DURATION_S}")
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.stop_event = stop_event or threading.Event()
        self._lock = threading.Lock()
        self._per_target = {url: {"all": _Bucket(), "versions": {}} for url, _, _ in self.targets}
        self._skipped = 0
        self._sent = 0
        self._t0 = None
        self._t1 = None
        self._thread = None
        self._result = None

    # -- recording ----------------------------------------------------------------------------------
    def _record(self, url, version, ok, latency, error=None):
        with self._lock:
            entry = self._per_target[url]
            entry["all"].add(ok, latency, error)
            entry["versions"].setdefault(version, _Bucket()).add(ok, latency, error)

    def stats(self):
        """A JSON-able snapshot: totals, per target, per target and model_version."""
        with self._lock:
            now = self._t1 or time.monotonic()
            elapsed = (now - self._t0) if self._t0 else 0.0
            per_target = {}
            tot = _Bucket()
            versions = {}
            for url, entry in self._per_target.items():
                a = entry["all"]
                tot.successes += a.successes
                tot.failures += a.failures
                tot.latency_sum += a.latency_sum
                per_target[url] = dict(a.doc(), versions={v: b.doc() for v, b in sorted(entry["versions"].items())})
                for v, b in entry["versions"].items():
                    agg = versions.setdefault(v, _Bucket())
                    agg.successes += b.successes
                    agg.failures += b.failures
                    agg.latency_sum += b.latency_sum
            return {"model": self.model, "rate": self.rate, "duration_s": self.duration,
                    "elapsed_s": round(elapsed, 3), "sent": self._sent, "skipped": self._skipped,
                    "total": tot.doc(), "versions": {v: b.doc() for v, b in sorted(versions.items())},
                    "targets": per_target}

    # -- one request ----------------------------------------------------------------------------------
    def _one(self, conns, target):
        url, host, port = target
        t0 = time.monotonic()
        version, ok, error = "unknown", False, None
        conn = conns.get(url)
        try:
            if conn is None:
                conn = conns[url] = http.client.HTTPConnection(host, port, timeout=self.timeout)
            conn.request("POST", self.path, body=BODY, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("model_version") is not None:
                version = str(doc["model_version"])
            if resp.status != 200:
                msg = doc.get("error") if isinstance(doc, dict) else None
                error = f"HTTP {resp.status}: {msg if msg is not None else raw[:200]!r}"
            else:
                data = None
                for o in (doc or {}).get("outputs", []) if isinstance(doc, dict) else []:
                    if o.get("name") == "OUTPUT0":
                        data = o.get("data")
                if data is not None and [float(x) for x in data] == EXPECTED:
                    ok = True
                else:
                    error = f"wrong answer: {raw[:200]!r}"
            if resp.will_close:
                conn.close()
                conns.pop(url, None)
        except Exception as e:  # connection refused/reset, timeout, anything: a failure, never a crash
            error = f"{type(e).__name__}: {e}"
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conns.pop(url, None)
        self._record(url, version, ok, time.monotonic() - t0, error)

    def _worker(self, work, idle):
        conns = {}
        while True:
            target = work.get()
            if target is None:
                break
            try:
                self._one(conns, target)
            finally:
                idle[target].release()  # a slot of this target is free for the next tick
        for c in conns.values():
            try:
                c.close()
            except Exception:
                pass

    # -- the loop -----------------------------------------------------------------------------------
    def run(self):
        """Blocking: runs until the duration is over or stop_event is set; returns stats()."""
        work = queue.Queue()
        # In-flight slots per target: a slow target (a canary that sleeps) must not starve the
        # others of requests, or the stable version has no traffic to compare with.
        idle = {t: threading.Semaphore(self.concurrency) for t in self.targets}
        workers = []
        for i in range(self.concurrency * len(self.targets)):
            t = threading.Thread(target=self._worker, args=(work, idle), name=f"loadgen-{i}", daemon=True)
            t.start()
            workers.append(t)
        self._t0 = time.monotonic()
        end = self._t0 + self.duration
        interval = 1.0 / self.rate
        i = 0
        try:
            while not self.stop_event.is_set():
                due = self._t0 + i * interval
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
                target = self.targets[i % len(self.targets)]
                i += 1
                if idle[target].acquire(blocking=False):
                    with self._lock:
                        self._sent += 1
                    work.put(target)
                else:
                    with self._lock:
                        self._skipped += 1
        finally:
            for _ in workers:
                work.put(None)
            # In-flight requests end within the request timeout.
            deadline = time.monotonic() + self.timeout + 5
            for t in workers:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._t1 = time.monotonic()
        self._result = self.stats()
        return self._result

    def start(self):
        self._thread = threading.Thread(target=self.run, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stop_event.set()

    def join(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)
        return self._result if self._result is not None else self.stats()


def run(targets, model, duration, rate, stop_event=None, concurrency=4, timeout=5.0):
    return LoadGen(targets, model, rate, duration, concurrency, timeout, stop_event).run()


def summary(stats):
    t = stats["total"]
    parts = [f"loadgen {stats['model']}: {stats['sent']} sent ({stats['skipped']} skipped) in {stats['elapsed_s']:.1f} s:"
             f" ok={t['successes']} fail={t['failures']}"]
    for url, d in stats["targets"].items():
        vs = " ".join(f"v{v}:ok={b['successes']}/fail={b['failures']}/{b['mean_latency_ms']}ms"
                      for v, b in d["versions"].items())
        parts.append(f"{url} [{vs}]")
    return " | ".join(parts)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Bounded KServe v2 load generator (loopback only).")
    ap.add_argument("--targets", required=True, help="comma-separated http://127.0.0.1:PORT (Triton HTTP ports)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--duration", type=float, required=True, help="seconds (at most %d)" % MAX_DURATION_S)
    ap.add_argument("--rate", type=float, required=True, help="requests per second over all targets")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight per target at most (default 4)")
    ap.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in seconds (default 5)")
    ap.add_argument("--out", help="write the stats JSON here at the end")
    args = ap.parse_args(argv)
    try:
        gen = LoadGen([t for t in args.targets.split(",") if t.strip()], args.model, args.rate, args.duration,
                      args.concurrency, args.timeout)
    except ValueError as e:
        ap.error(str(e))
    try:
        gen.start()
        while gen._thread.is_alive():
            gen._thread.join(0.2)
    except KeyboardInterrupt:
        gen.stop()
    stats = gen.join()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(stats, f, indent=2, sort_keys=True)
            f.write("\n")
    print(summary(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
