"""A live ``depot serve`` with authentication on, for the SDK tests.

The server is the executable the package bundled (or ``$DEPOT_CLI``): the same binary the SDK
drives. It runs on a loopback port with a fresh storage root; an admin token bootstraps it and
the tests use a writer token scoped to the repositories they push (least privilege, as a
training job would have), plus a maintainer token where a test moves protected aliases.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from depot._engine import find_executable


class LiveRegistry:
    def __init__(self, url: str, executable: str, admin: str, writer: str, maintainer: str, root: Path) -> None:
        self.url = url
        self.executable = executable
        self.admin = admin
        self.writer = writer
        self.maintainer = maintainer
        self.root = root

    def token(self, name: str, role: str, repositories: str | None = None) -> str:
        args = [self.executable, "admin", "token", "create", "--name", name, "--role", role, "--json"]
        if repositories is not None:
            args += ["--repositories", repositories]
        env = dict(os.environ, DEPOT_REGISTRY=self.url, DEPOT_TOKEN=self.admin)
        out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
        return str(json.loads(out)["secret"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    executable = find_executable()
    root = tmp_path_factory.mktemp("depot-serve")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = root / "depot.yaml"
    pipelines = root / "pipelines"
    pipelines.mkdir()
    # A one-stage pipeline for the job tests: a push to sdk/pipe:v* is "packaged" (copied, with
    # a marker file) by an exec stage, in the runner's sandbox like any stage.
    (pipelines / "package.yaml").write_text(
        "name: sdk-package\n"
        "trigger: {repositories: [sdk/pipe], tags: ['v*']}\n"
        "stages:\n"
        "  package:\n"
        "    exec: [sh, -c, 'cp -R \"$DEPOT_INPUT_DIR\"/. \"$DEPOT_OUTPUT_DIR\"/ && echo packaged > \"$DEPOT_OUTPUT_DIR/PACKAGED\"']\n"
        "    tag: '{{tag}}-packaged'\n"
        "    timeout: 2m\n"
    )
    config.write_text(
        f"server: {{listen: 127.0.0.1:{port}, log_level: info}}\n"
        f"storage: {{root: {root}/storage}}\n"
        "auth: {enabled: true}\n"
        f"pipelines: {{directory: {pipelines}, runner: {{work_dir: {root}/runner}}}}\n"
    )
    admin = secrets.token_hex(32)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [executable, "serve", "--config", str(config)],
        env=dict(os.environ, DEPOT_ADMIN_TOKEN=admin),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"depot serve did not start: see {root / 'server.log'}")
            time.sleep(0.1)
        registry = LiveRegistry(url, executable, admin, "", "", root)
        registry.writer = registry.token("sdk-tests", "writer", "sdk/**")
        registry.maintainer = registry.token("sdk-ops", "maintainer")
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
