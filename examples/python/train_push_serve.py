#!/usr/bin/env python3
"""A training job pushes its checkpoints, a release is promoted, a serving job pulls it, an
auditor asks what served at a past time, and the pipeline the release started is watched.

    DEPOT_REGISTRY=http://127.0.0.1:5000 DEPOT_TOKEN=... python3 examples/python/train_push_serve.py team/demo

Needs only `pip install ./clients/python`. The "training" writes a safetensors-like file whose
layers change a little each step (a real loop would call torch.save or save_pretrained): the
pushes after the first send about the changed layers, not the whole file. The release tag
`v<n>` starts whatever pipeline the registry has for the repository; without one the example says
so and stops there.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import depot

LAYERS, LAYER_BYTES = 8, 1 << 20


def train(step: int, layers: list[bytes], out: Path) -> None:
    """One 'training step': the last layer changes; the checkpoint is written to ``out``."""
    layers[-1] = os.urandom(LAYER_BYTES)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.bin").write_bytes(b"".join(layers))
    (out / "config.json").write_text(f'{{"step": {step}, "layers": {LAYERS}}}')


def main(repository: str) -> int:
    registry = depot.Registry()
    work = Path(tempfile.mkdtemp(prefix="depot-example-"))
    layers = [os.urandom(LAYER_BYTES) for _ in range(LAYERS)]

    # 1. Training: each checkpoint is pushed in the background while the next step runs, each
    #    with lineage to the one before it.
    futures = []
    parent: str | None = None
    for step in (1, 2, 3):
        train(step, layers, work / f"step-{step}")
        if futures:
            parent = f"{repository}@{futures[-1].result().digest}"
        futures.append(
            registry.push(
                f"{repository}:step-{step}",
                work / f"step-{step}",
                parent=parent,
                relation="trained-from" if parent else None,
                run="example-run",
                metrics={"loss": round(1.0 / step, 3)},
                background=True,
            )
        )
    results = [f.result() for f in futures]
    for r in results:
        print(f"pushed {r.reference} {r.digest[:19]}: {r.logical_bytes} bytes, sent {r.bytes_sent}")

    # 2. Release: tag the last checkpoint v1 and move the `production` alias to it.
    release = results[-1]
    registry.tag(f"{repository}@{release.digest}", "v1")
    before = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.01)
    registry.set_alias(repository, "production", "step-2", reason="first release")
    time.sleep(0.01)
    between = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.01)
    moved = registry.set_alias(repository, "production", "v1", reason="step 3 evaluated better")
    print(f"{repository}:production -> {moved.digest[:19]} (was {str(moved.previous)[:19]})")

    # 3. Serving: pull exactly what production points at, by digest.
    now = registry.resolve(repository, "production")
    pulled = registry.pull(f"{repository}@{now.digest}", work / "serving")
    assert (work / "serving" / "model.bin").read_bytes() == (work / "step-3" / "model.bin").read_bytes()
    print(f"serving {pulled.digest[:19]}: {pulled.files} files")

    # 4. Audit: what served at a past time, and what it was trained from.
    then = registry.resolve(repository, "production", at=between.isoformat().replace("+00:00", "Z"), lineage=True)
    print(f"at {between:%H:%M:%S.%f} production was {then.digest[:19]}, built from {[n.digest[:19] for n in then.ancestors]}")
    assert then.digest == results[1].digest
    try:
        registry.resolve(repository, "production", at=before.isoformat().replace("+00:00", "Z"))
        print("error: production resolved before it existed", file=sys.stderr)
        return 1
    except depot.NotFoundError as e:
        print(f"before the first release: {e.code}")

    # 5. The pipeline the release tag started: watch its jobs until they finish. A registry
    #    without pipelines answers NotFoundError; one whose pipelines do not match this
    #    repository starts no job (none appears within 10 s).
    try:
        start = time.monotonic()
        while True:
            jobs = [j for j in registry.jobs() if j.raw.get("input", {}).get("digest") == release.digest]
            if jobs and all(j.finished for j in jobs):
                break
            if not jobs and time.monotonic() - start > 10:
                print("no pipeline ran for this release")
                return 0
            if time.monotonic() - start > 120:
                print("error: the pipeline did not finish in 120 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except depot.NotFoundError as e:
        print(f"no pipeline on this registry ({e.message})")
        return 0
    for j in jobs:
        print(f"job {j.id} {j.pipeline}/{j.stage}: {j.state} -> {j.output_digest}")
    return 0 if all(j.state == "succeeded" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "team/demo"))
