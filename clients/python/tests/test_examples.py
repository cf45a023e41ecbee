"""The examples under examples/python run against a live registry and do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import LiveRegistry

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "python"


def test_train_push_serve(live: LiveRegistry) -> None:
    # sdk/pipe has a pipeline in the test registry: the release tag v1 starts a job.
    env = dict(os.environ, DEPOT_REGISTRY=live.url, DEPOT_TOKEN=live.maintainer)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_push_serve.py"), "sdk/pipe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "pushed sdk/pipe:step-3" in out
    assert "before the first release: MANIFEST_UNKNOWN" in out
    assert "sdk-package/package: succeeded" in out
    # The second and third checkpoints sent about one changed layer each, not the whole file.
    sent = [int(line.rsplit("sent ", 1)[1]) for line in out.splitlines() if line.startswith("pushed ")]
    assert sent[0] > 8 << 20 and all(s < 2 << 20 for s in sent[1:]), out
