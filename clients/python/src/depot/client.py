"""The registry client: :class:`Registry`."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, overload

from ._engine import Engine, find_executable
from .errors import UsageError
from .types import AliasMove, Job, LineageNode, Pin, PullResult, PushResult, Resolution, Rollback

PathLike = str | os.PathLike[str]

#: How a pushed artifact derives from its ``parent`` (recorded in the lineage graph).
RELATIONS = (
    "trained-from",
    "fine-tuned-from",
    "converted-from",
    "compiled-from",
    "quantized-from",
    "packaged-from",
    "derived-from",
)


class Registry:
    """A Depot registry (or any OCI registry, through the standard API).

    Args:
        url: The registry, e.g. ``"https://models.example.com"`` or ``"127.0.0.1:5000"`` (a bare
            host means https, or http on this machine). Default: ``$DEPOT_REGISTRY``, else
            ``http://127.0.0.1:5000``.
        token: A Depot token. Default: ``$DEPOT_TOKEN``, else what ``depot login`` stored for
            the registry (``~/.docker/config.json`` or its credential helper).
        executable: The ``depot`` binary that moves the bytes (default: see :mod:`depot._engine`).
        cache: The local chunk cache pulls read from and fill (default: ``$DEPOT_CACHE``, else
            ``~/.cache/depot``).
        ca_file: PEM CA certificates to trust for an https registry besides the system's.
        plain_oci: Use only the standard OCI API (whole blobs), e.g. for another registry.
        jobs: Concurrent chunk batches per file.
        file_jobs: Files moved at the same time.
        background_workers: Pushes and pulls with ``background=True`` run on this many threads.

    Every method raises :class:`depot.DepotError` (or a subclass, by the registry's error code)
    when the registry refuses or cannot be reached. A ``Registry`` is safe to share between
    threads; :meth:`close` (or ``with Registry() as r:``) waits for background transfers.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        executable: PathLike | None = None,
        cache: PathLike | None = None,
        ca_file: PathLike | None = None,
        plain_oci: bool = False,
        jobs: int = 4,
        file_jobs: int = 2,
        background_workers: int = 1,
    ) -> None:
        if not 1 <= jobs <= 64:
            raise UsageError("jobs must be 1...64", "USAGE")
        if not 1 <= file_jobs <= 16:
            raise UsageError("file_jobs must be 1...16", "USAGE")
        if background_workers < 1:
            raise UsageError("background_workers must be at least 1", "USAGE")
        self.url = url or os.environ.get("DEPOT_REGISTRY") or "http://127.0.0.1:5000"
        self._engine = Engine(find_executable(executable), self.url, token)
        self._cache = os.fspath(cache) if cache is not None else None
        self._ca = [f"--ca-file={os.fspath(ca_file)}"] if ca_file is not None else []
        self._transfer = [f"--jobs={jobs}", f"--file-jobs={file_jobs}", "--quiet", *self._ca]
        if plain_oci:
            self._transfer.append("--plain-oci")
        self._workers = background_workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- transfers ---------------------------------------------------------------------------

    @overload
    def push(
        self,
        ref: str,
        paths: PathLike | Sequence[PathLike],
        *,
        parent: str | None = ...,
        relation: str | None = ...,
        run: str | None = ...,
        dataset: str | None = ...,
        commit: str | None = ...,
        metrics: Mapping[str, Any] | None = ...,
        annotations: Mapping[str, str] | None = ...,
        platform: str | None = ...,
        background: Literal[False] = ...,
    ) -> PushResult: ...

    @overload
    def push(
        self,
        ref: str,
        paths: PathLike | Sequence[PathLike],
        *,
        parent: str | None = ...,
        relation: str | None = ...,
        run: str | None = ...,
        dataset: str | None = ...,
        commit: str | None = ...,
        metrics: Mapping[str, Any] | None = ...,
        annotations: Mapping[str, str] | None = ...,
        platform: str | None = ...,
        background: Literal[True],
    ) -> "Future[PushResult]": ...

    def push(
        self,
        ref: str,
        paths: PathLike | Sequence[PathLike],
        *,
        parent: str | None = None,
        relation: str | None = None,
        run: str | None = None,
        dataset: str | None = None,
        commit: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        annotations: Mapping[str, str] | None = None,
        platform: str | None = None,
        background: bool = False,
    ) -> "PushResult | Future[PushResult]":
        """Pushes files or directories as one artifact, ``ref`` = ``REPO:TAG``.

        Only the chunks the registry lacks move: a fine-tune of a pushed model sends about its
        changed bytes. A directory keeps its layout (a Hugging Face checkpoint folder, a Triton
        model repository).

        Args:
            ref: ``REPO:TAG`` to push to.
            paths: A file or directory, or several.
            parent: The artifact this one derives from (``REPO:TAG`` or ``REPO@sha256:...``),
                recorded as lineage.
            relation: How it derives from ``parent``: one of :data:`RELATIONS` (default
                ``derived-from``).
            run: Training or pipeline run id (e.g. the MLflow or W&B run), recorded in lineage.
            dataset: Dataset URI, recorded in lineage.
            commit: Source commit, recorded in lineage.
            metrics: Metrics to record with the lineage edge (``{"eval_loss": 0.31}``).
            annotations: Extra manifest annotations.
            platform: Target platform of a TensorRT plan, e.g. ``sm_90,trt10.3``.
            background: Return at once with a :class:`concurrent.futures.Future` (training goes
                on while the push runs; background pushes run in submission order).

        Returns:
            A :class:`PushResult` (``digest``, ``bytes_sent``, ``logical_bytes``, ...), or a
            future of one.
        """
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not items:
            raise UsageError("push needs at least one file or directory", "USAGE")
        if relation is not None and relation not in RELATIONS:
            raise UsageError(f"unknown relation {relation!r}; one of {', '.join(RELATIONS)}", "USAGE")
        if relation is not None and parent is None:
            raise UsageError("relation needs parent", "USAGE")
        options = [*self._transfer]
        for flag, value in (
            ("--from", parent),
            ("--relation", relation),
            ("--run", run),
            ("--dataset", dataset),
            ("--commit", commit),
            ("--platform", platform),
        ):
            if value is not None:
                options.append(f"{flag}={value}")
        for k, v in (metrics or {}).items():
            options.append(f"--metric={_key(k)}={v}")
        for k, v in (annotations or {}).items():
            options.append(f"--annotation={_key(k)}={v}")
        positionals = [ref, *[os.fspath(p) for p in items]]

        def go() -> PushResult:
            return PushResult.from_json(self._engine.call(["push"], positionals, options))

        return self._submit(go) if background else go()

    @overload
    def pull(
        self,
        ref: str,
        dest: PathLike,
        *,
        files: Sequence[str] | None = ...,
        background: Literal[False] = ...,
    ) -> PullResult: ...

    @overload
    def pull(
        self,
        ref: str,
        dest: PathLike,
        *,
        files: Sequence[str] | None = ...,
        background: Literal[True],
    ) -> "Future[PullResult]": ...

    def pull(
        self,
        ref: str,
        dest: PathLike,
        *,
        files: Sequence[str] | None = None,
        background: bool = False,
    ) -> "PullResult | Future[PullResult]":
        """Pulls an artifact's files into directory ``dest`` (``ref`` = ``REPO:TAG`` or ``REPO@sha256:...``).

        Chunks already in the local cache do not move. Every file is verified against its digest
        before it is renamed into place.

        Args:
            ref: What to pull. A digest is exact; a tag is whatever it points at now.
            dest: Output directory (created if missing).
            files: Only these paths of the artifact.
            background: Return at once with a future.
        """
        options = [f"--output={os.fspath(dest)}", *self._transfer, *[f"--file={f}" for f in files or ()]]
        if self._cache is not None:
            options.append(f"--cache={self._cache}")

        def go() -> PullResult:
            return PullResult.from_json(self._engine.call(["pull"], [ref], options))

        return self._submit(go) if background else go()

    # -- tags, aliases, time travel ----------------------------------------------------------

    def tag(self, ref: str, tag: str) -> str:
        """Points tag ``tag`` (in the same repository) at ``ref``; returns the digest."""
        out = self._engine.call(["tag"], [ref, tag], self._ca)
        return str(out["digest"])

    def set_alias(
        self,
        repository: str,
        alias: str,
        reference: str,
        *,
        expect: str | None = None,
        reason: str | None = None,
    ) -> AliasMove:
        """Moves ``repository:alias`` (e.g. ``production``) to ``reference`` (a tag or digest).

        Args:
            expect: Move only if the alias points at this digest now (compare-and-swap); a
                :class:`depot.ConflictError` otherwise.
            reason: Why, recorded in the alias history and the audit journal.
        """
        options = [*self._ca]
        if expect is not None:
            options.append(f"--expect={expect}")
        if reason is not None:
            options.append(f"--reason={reason}")
        d = self._engine.call(["alias", "set"], [repository, alias, reference], options)
        return AliasMove(d["repository"], d["alias"], d["digest"], d.get("previous"))

    def rollback(
        self,
        repository: str,
        alias: str,
        *,
        to: str | None = None,
        steps: int = 1,
        reason: str | None = None,
    ) -> Rollback:
        """Moves ``repository:alias`` back: to digest ``to``, or ``steps`` moves back (default: the previous one)."""
        if steps < 1:
            raise UsageError("steps must be at least 1", "USAGE")
        options = [f"--steps={int(steps)}", *self._ca]
        if to is not None:
            options.append(f"--to={to}")
        if reason is not None:
            options.append(f"--reason={reason}")
        d = self._engine.call(["rollback"], [repository, alias], options)
        return Rollback(d["repository"], d["alias"], d["from"], d["to"])

    def resolve(self, repository: str, alias: str, *, at: str | int | None = None, lineage: bool = False) -> Resolution:
        """What ``repository:alias`` points at now, or at time ``at``.

        Args:
            at: RFC 3339 (``"2026-05-03T14:00:00Z"``) or milliseconds since 1970: answers what
                served then, from the alias history.
            lineage: Also return the artifact's lineage ancestors.
        """
        options = [*self._ca]
        if at is not None:
            options.append(f"--at={at}")
        if lineage:
            options.append("--lineage")
        d = self._engine.call(["resolve"], [repository, alias], options)
        return Resolution(
            repository=d["repository"],
            alias=d["alias"],
            at=d["at"],
            digest=d["digest"],
            ancestors=tuple(LineageNode.from_json(n) for n in d.get("ancestors") or ()),
        )

    # -- lineage, inspection, jobs, pins -----------------------------------------------------

    def lineage(
        self,
        ref: str,
        *,
        direction: Literal["ancestors", "descendants"] = "ancestors",
        depth: int = 64,
        relations: Sequence[str] | None = None,
    ) -> list[LineageNode]:
        """What ``ref`` was built from (``ancestors``) or what was built from it (``descendants``), nearest first."""
        if direction not in ("ancestors", "descendants"):
            raise UsageError("direction must be 'ancestors' or 'descendants'", "USAGE")
        options = [f"--{direction}", f"--depth={int(depth)}", *self._ca, *[f"--relation={r}" for r in relations or ()]]
        d = self._engine.call(["lineage"], [ref], options)
        return [LineageNode.from_json(n) for n in d.get("nodes") or ()]

    def inspect(self, ref: str) -> dict[str, Any]:
        """An artifact's manifest, digest, media type, extracted model metadata and signatures."""
        d = self._engine.call(["inspect"], [ref], self._ca)
        return dict(d)

    def files(self, ref: str) -> list[str]:
        """The file paths of an artifact, in manifest order."""
        layers = self.inspect(ref).get("manifest", {}).get("layers") or []
        out = []
        for layer in layers:
            a = layer.get("annotations") or {}
            path = a.get("org.cncf.model.filepath") or a.get("org.opencontainers.image.title")
            if path:
                out.append(str(path))
        return out

    def tags(self, repository: str) -> list[str]:
        """The tags of a repository."""
        return [str(row["tag"]) for row in self._engine.call(["ls"], [repository], [*self._ca, "--limit=0"]) or ()]

    def repositories(self) -> list[str]:
        """The repositories the credential may list."""
        return [str(row["repository"]) for row in self._engine.call(["ls"], [], self._ca) or ()]

    def jobs(self, *, state: str | None = None, pipeline: str | None = None, limit: int = 100) -> list[Job]:
        """Pipeline jobs, newest first (e.g. the convert/package jobs a push started)."""
        options = [f"--limit={int(limit)}", *self._ca]
        if state is not None:
            options.append(f"--state={state}")
        if pipeline is not None:
            options.append(f"--pipeline={pipeline}")
        return [Job.from_json(j) for j in self._engine.call(["jobs", "list"], [], options).get("jobs") or ()]

    def job(self, job_id: int) -> Job:
        """One pipeline job."""
        d = self._engine.call(["jobs", "show"], [str(int(job_id))], self._ca)
        return Job.from_json(d.get("job") or d)

    def pin(self, ref: str, *, reason: str | None = None) -> Pin:
        """Pins an artifact: it, its blobs and its lineage ancestors are never collected or deleted."""
        options = [*self._ca, *([f"--reason={reason}"] if reason is not None else [])]
        d = self._engine.call(["pin"], [ref], options)
        return Pin(d["repository"], d["digest"])

    def unpin(self, ref: str) -> Pin:
        """Removes a pin."""
        d = self._engine.call(["unpin"], [ref], self._ca)
        return Pin(d["repository"], d["digest"])

    def pins(self) -> list[Pin]:
        """Every pin."""
        d = self._engine.call(["pins"], [], self._ca)
        return [Pin(p["repository"], p["digest"]) for p in d.get("pins") or ()]

    # -- lifecycle ---------------------------------------------------------------------------

    def _submit(self, fn: Any) -> "Future[Any]":
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="depot")
            return self._executor.submit(fn)

    def close(self, wait: bool = True) -> None:
        """Waits for background transfers (unless ``wait=False``) and releases their threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait)

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"


def _key(k: object) -> str:
    text = str(k)
    if not text or "=" in text:
        raise UsageError(f"annotation and metric keys must be non-empty and without '=': {text!r}", "USAGE")
    return text


def artifact_path(path: PathLike) -> Path:
    """``path`` as a :class:`pathlib.Path` (a helper for the integrations)."""
    return Path(os.fspath(path))
