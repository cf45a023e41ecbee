"""The SDK against a live ``depot serve`` with authentication on."""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

import depot
from conftest import LiveRegistry
from models import base_model, fine_tune, tree_bytes


@pytest.fixture()
def registry(live: LiveRegistry, tmp_path: Path) -> depot.Registry:
    return depot.Registry(live.url, token=live.writer, cache=tmp_path / "cache")


def test_fine_tune_sends_about_its_changed_bytes_and_pulls_back_identical(
    registry: depot.Registry, live: LiveRegistry, tmp_path: Path
) -> None:
    tensors = base_model(tmp_path / "base")
    base = registry.push("sdk/llm:base", tmp_path / "base", run="pretrain-1", dataset="s3://corpus/v3")
    assert base.digest.startswith("sha256:")
    assert base.logical_bytes == sum(len(b) for b in tree_bytes(tmp_path / "base").values())
    assert base.bytes_sent >= base.logical_bytes * 0.9, "the first push of random weights moves them all"

    changed = fine_tune(tmp_path / "ft", tensors, ["layers.3.weight", "layers.7.weight", "layers.11.weight"])
    ft = registry.push(
        "sdk/llm:ft-1",
        tmp_path / "ft",
        parent="sdk/llm:base",
        relation="fine-tuned-from",
        run="ft-run-42",
        metrics={"eval_loss": 0.31},
    )
    assert ft.mode == "chunked"
    assert ft.bytes_sent <= 1.1 * changed, f"sent {ft.bytes_sent} bytes for {changed} changed"
    assert ft.bytes_sent >= changed * 0.9, "random tensors do not compress: the changed bytes must move"
    assert ft.deduplicated_bytes >= ft.logical_bytes - changed - (1 << 20)

    # Pulled back by digest into a fresh directory, with a fresh cache: bit-identical.
    fresh = depot.Registry(live.url, token=live.writer, cache=tmp_path / "other-cache")
    pulled = fresh.pull(f"sdk/llm@{ft.digest}", tmp_path / "out")
    assert pulled.digest == ft.digest
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "ft")
    # Only one file, and it is the same bytes.
    fresh.pull("sdk/llm:ft-1", tmp_path / "one", files=["config.json"])
    assert tree_bytes(tmp_path / "one") == {"config.json": (tmp_path / "ft" / "config.json").read_bytes()}

    # The lineage the push recorded (reading the graph, which spans repositories, takes pull on
    # every repository: an operator's token, not the training job's).
    ops = depot.Registry(live.url, token=live.maintainer)
    up = ops.lineage("sdk/llm:ft-1")
    assert [n.digest for n in up] == [base.digest]
    edge = up[0].edge
    assert (edge.relation, edge.run, dict(edge.metrics)) == ("fine-tuned-from", "ft-run-42", {"eval_loss": "0.31"})
    down = ops.lineage("sdk/llm:base", direction="descendants")
    assert [n.digest for n in down] == [ft.digest]
    assert sorted(registry.files(f"sdk/llm@{ft.digest}")) == ["config.json", "model.safetensors"]


def test_background_push_returns_a_future_and_close_waits(live: LiveRegistry, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"first checkpoint" * 1000)
    (tmp_path / "b").write_bytes(b"second checkpoint" * 1000)
    with depot.Registry(live.url, token=live.writer) as r:
        first = r.push("sdk/bg:1", tmp_path / "a", background=True)
        second = r.push("sdk/bg:2", [tmp_path / "a", tmp_path / "b"], background=True)
        assert isinstance(first, Future)
    # Leaving the block waited for both.
    assert first.done() and second.done()
    assert second.result().files == 2
    assert sorted(depot.Registry(live.url, token=live.writer).tags("sdk/bg")) == ["1", "2"]
    # A failed background push raises from result(), with the registry's code.
    r = depot.Registry(live.url, token=live.writer)
    doomed = r.push("other/team:x", tmp_path / "a", background=True)
    with pytest.raises(depot.PermissionDeniedError) as e:
        doomed.result(timeout=60)
    assert e.value.code == "DENIED"
    r.close()


def test_errors_carry_the_registry_code(
    registry: depot.Registry, live: LiveRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(depot.NotFoundError) as e:
        registry.pull("sdk/nothing:here", tmp_path / "x")
    assert e.value.code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN") and e.value.status == 404
    (tmp_path / "f").write_bytes(b"x")
    # A writer for sdk/** may not push elsewhere; nobody anonymous may push at all.
    with pytest.raises(depot.PermissionDeniedError) as denied:
        registry.push("prod/model:v1", tmp_path / "f")
    assert denied.value.code == "DENIED" and denied.value.status == 403
    with pytest.raises(depot.AuthenticationError) as anonymous:
        depot.Registry(live.url, token="not-a-token").push("sdk/x:v1", tmp_path / "f")
    assert anonymous.value.code == "UNAUTHORIZED" and anonymous.value.status == 401
    # Refused before anything is sent.
    with pytest.raises(depot.UsageError):
        registry.push("sdk/x:v1", tmp_path / "f", relation="guessed-from", parent="sdk/x:v0")
    with pytest.raises(depot.UsageError):
        registry.push("not a reference", tmp_path / "f")
    # A reference or path that looks like an option stays an argument: never `--registry=...`
    # (which would send the token elsewhere), and a file named "-x" is pushed as a file.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        elsewhere = f"--registry=http://127.0.0.1:{trap.getsockname()[1]}"
        with pytest.raises(depot.DepotError) as as_path:
            registry.push("sdk/x:v1", elsewhere)
        assert "no such file" in str(as_path.value)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody connected: the token went nowhere
    (tmp_path / "-x").write_bytes(b"dash")
    monkeypatch.chdir(tmp_path)
    assert registry.push("sdk/x:dash", "-x").files == 1
    registry.pull("sdk/x:dash", tmp_path / "dash")
    assert (tmp_path / "dash" / "-x").read_bytes() == b"dash"
    with pytest.raises(depot.DepotError) as missing:
        registry.push("sdk/x:v1", tmp_path / "no-such-file")
    assert "no-such-file" in str(missing.value)
    # Nothing listening.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(depot.DepotError):
        depot.Registry(f"http://127.0.0.1:{port}", token=live.writer).tags("sdk/x")


def test_aliases_rollback_resolve_in_time_and_pins(live: LiveRegistry, tmp_path: Path) -> None:
    w = depot.Registry(live.url, token=live.writer)
    ops = depot.Registry(live.url, token=live.maintainer)
    (tmp_path / "v1").write_bytes(b"weights v1" * 4096)
    (tmp_path / "v2").write_bytes(b"weights v2" * 4096)
    v1 = w.push("sdk/served:v1", tmp_path / "v1")
    v2 = w.push("sdk/served:v2", tmp_path / "v2", parent="sdk/served:v1")
    assert w.tag("sdk/served:v1", "first") == v1.digest

    moved = ops.set_alias("sdk/served", "production", "v1", reason="first release")
    assert (moved.digest, moved.previous) == (v1.digest, None)
    time.sleep(0.05)
    between = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.05)
    # A compare-and-swap against a stale digest loses.
    with pytest.raises(depot.ConflictError):
        ops.set_alias("sdk/served", "production", "v2", expect=v2.digest)
    ops.set_alias("sdk/served", "production", "v2", expect=v1.digest, reason="canary passed")
    assert ops.resolve("sdk/served", "production").digest == v2.digest
    then = ops.resolve("sdk/served", "production", at=between)
    assert then.digest == v1.digest
    now = ops.resolve("sdk/served", "production", lineage=True)
    assert [n.digest for n in now.ancestors] == [v1.digest]

    back = ops.rollback("sdk/served", "production", reason="latency regression")
    assert (back.from_digest, back.to_digest) == (v2.digest, v1.digest)
    assert ops.resolve("sdk/served", "production").digest == v1.digest

    pin = ops.pin("sdk/served:v2", reason="audit hold")
    assert pin.digest == v2.digest
    assert any(p.digest == v2.digest for p in ops.pins())
    ops.unpin(f"sdk/served@{v2.digest}")
    assert all(p.digest != v2.digest for p in ops.pins())
    assert "sdk/served" in ops.repositories()


def test_a_push_starts_the_pipeline_and_its_job_can_be_watched(live: LiveRegistry, tmp_path: Path) -> None:
    w = depot.Registry(live.url, token=live.writer)
    ops = depot.Registry(live.url, token=live.maintainer)
    (tmp_path / "model.bin").write_bytes(b"a model" * 1000)
    pushed = w.push("sdk/pipe:v1", tmp_path / "model.bin")
    deadline = time.monotonic() + 90
    while True:
        jobs = [j for j in ops.jobs(pipeline="sdk-package") if j.raw.get("input", {}).get("digest") == pushed.digest]
        if jobs and jobs[0].finished:
            break
        assert time.monotonic() < deadline, f"the job did not finish: {jobs}"
        time.sleep(0.3)
    job = ops.job(jobs[0].id)
    assert (job.state, job.stage) == ("succeeded", "package"), job.reason
    assert job.output_digest is not None
    w.pull(f"sdk/pipe@{job.output_digest}", tmp_path / "out")
    assert (tmp_path / "out" / "PACKAGED").read_text() == "packaged\n"
    assert (tmp_path / "out" / "model.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert [n.digest for n in ops.lineage(f"sdk/pipe@{job.output_digest}")] == [pushed.digest]


def test_plain_oci_against_another_registry(tmp_path: Path) -> None:
    """The standard API only (no chunk negotiation), against CNCF distribution."""
    registry_bin = shutil.which("docker-registry") or shutil.which("registry")
    if registry_bin is None:
        pytest.skip("CNCF distribution (Debian docker-registry) is not installed: scripts/install-deps.sh --test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
        "log: {level: error}\n"
    )
    proc = subprocess.Popen([registry_bin, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = depot.Registry(f"http://127.0.0.1:{port}", token="", plain_oci=True, cache=tmp_path / "cache")
        tensors = base_model(tmp_path / "m", layers=2, tensor_bytes=1 << 20)
        assert tensors
        deadline = time.monotonic() + 20
        while True:
            try:
                pushed = r.push("team/model:v1", tmp_path / "m")
                break
            except depot.DepotError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert pushed.mode == "oci"
        pulled = r.pull("team/model:v1", tmp_path / "out")
        assert pulled.digest == pushed.digest
        assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "m")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_token_goes_only_to_the_configured_registry(live: LiveRegistry, tmp_path: Path) -> None:
    """A reference naming another host never takes $DEPOT_TOKEN there (the CLI's rule, which the
    SDK inherits): a listener records the Authorization headers it receives."""
    import http.server
    import threading

    seen: list[str | None] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = do_PUT = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    other = f"127.0.0.1:{server.server_address[1]}"
    try:
        # Control: configured as the registry, the listener gets the token.
        with pytest.raises(depot.NotFoundError):
            depot.Registry(f"http://{other}", token="s3cr3t-token").inspect("sdk/x:v1")
        assert any(h and "s3cr3t-token" in h for h in seen), seen
        seen.clear()
        # Named in a reference while another registry is configured: no token.
        r = depot.Registry(live.url, token="s3cr3t-token")
        for call in (
            lambda: r.inspect(f"{other}/sdk/x:v1"),
            lambda: r.pull(f"localhost:{server.server_address[1]}/sdk/x:v1", tmp_path / "o"),
            lambda: r.lineage(f"{other}/sdk/x:v1"),
        ):
            with pytest.raises(depot.DepotError):
                call()
        assert seen, "the listener was asked"
        assert not any(h and "s3cr3t-token" in h for h in seen), seen
    finally:
        server.shutdown()
