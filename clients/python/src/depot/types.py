"""Typed results of registry operations (decoded from the ``depot`` executable's ``--json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

_T = TypeVar("_T", bound="TransferResult")


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key, 0)
    return int(v) if isinstance(v, (int, float)) else 0


@dataclass(frozen=True)
class TransferResult:
    """What a push or a pull did.

    Attributes:
        reference: ``REPO:TAG`` or ``REPO@DIGEST`` as given.
        digest: The artifact's manifest digest (``sha256:...``): pin this to get exactly these bytes back.
        files: Number of files in the artifact.
        logical_bytes: Sum of the artifact's file sizes.
        bytes_sent: Payload bytes sent over the wire (request bodies).
        bytes_received: Payload bytes received (response bodies).
        deduplicated_bytes: Logical bytes that did not move because the other side had them.
        chunks_total: Chunks in the artifact's files.
        chunks_transferred: Chunks that moved.
        mode: ``"chunked"`` (Depot's chunk negotiation) or ``"oci"`` (standard API, whole blobs).
        seconds: Wall time of the transfer.
    """

    reference: str
    digest: str
    files: int
    logical_bytes: int
    bytes_sent: int
    bytes_received: int
    deduplicated_bytes: int
    chunks_total: int
    chunks_transferred: int
    mode: str
    seconds: float

    @classmethod
    def from_json(cls: type[_T], d: Mapping[str, Any]) -> _T:
        return cls(
            reference=str(d.get("reference", "")),
            digest=str(d.get("digest", "")),
            files=_int(d, "files"),
            logical_bytes=_int(d, "logical_bytes"),
            bytes_sent=_int(d, "bytes_sent"),
            bytes_received=_int(d, "bytes_received"),
            deduplicated_bytes=_int(d, "deduplicated_bytes"),
            chunks_total=_int(d, "chunks_total"),
            chunks_transferred=_int(d, "chunks_transferred"),
            mode=str(d.get("mode", "")),
            seconds=float(d.get("seconds", 0.0)),
        )


class PushResult(TransferResult):
    """What a push did: see :class:`TransferResult`."""


class PullResult(TransferResult):
    """What a pull did: see :class:`TransferResult`."""


@dataclass(frozen=True)
class AliasMove:
    """An alias moved: ``repository:alias`` now points at ``digest`` (it pointed at ``previous``)."""

    repository: str
    alias: str
    digest: str
    previous: str | None


@dataclass(frozen=True)
class Rollback:
    """An alias moved back from ``from_digest`` to ``to_digest``."""

    repository: str
    alias: str
    from_digest: str
    to_digest: str


@dataclass(frozen=True)
class LineageEdge:
    """One recorded derivation: ``child`` was made from ``parent`` by ``relation``."""

    child: str
    parent: str
    relation: str
    parent_ref: str
    repository: str
    at: str
    run: str | None = None
    dataset: str | None = None
    commit: str | None = None
    job: str | None = None
    metrics: Mapping[str, str] = field(default_factory=dict)
    #: ``"verified"`` when a pipeline job of this registry produced the child, else ``"declared"``.
    provenance: str = "declared"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LineageEdge":
        def opt(key: str) -> str | None:
            v = d.get(key)
            return str(v) if v is not None else None

        return cls(
            child=str(d.get("child", "")),
            parent=str(d.get("parent", "")),
            relation=str(d.get("relation", "")),
            parent_ref=str(d.get("parent_ref", "")),
            repository=str(d.get("repository", "")),
            at=str(d.get("at", "")),
            run=opt("run"),
            dataset=opt("dataset"),
            commit=opt("commit"),
            job=opt("job"),
            metrics=dict(d.get("metrics") or {}),
            provenance="verified" if d.get("verified_job") is not None else "declared",
        )


@dataclass(frozen=True)
class LineageNode:
    """An artifact reached by a lineage walk, ``depth`` steps away, through ``edge``."""

    digest: str
    depth: int
    edge: LineageEdge
    stored: bool
    artifact_type: str | None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "LineageNode":
        return cls(
            digest=str(d.get("digest", "")),
            depth=_int(d, "depth"),
            edge=LineageEdge.from_json(d.get("edge") or {}),
            stored=bool(d.get("stored", True)),
            artifact_type=d.get("artifact_type"),
        )


@dataclass(frozen=True)
class Resolution:
    """What ``repository:alias`` pointed at, at time ``at`` (and, when asked, its ancestors)."""

    repository: str
    alias: str
    at: str
    digest: str
    ancestors: tuple[LineageNode, ...] = ()


@dataclass(frozen=True)
class Job:
    """A pipeline job. ``raw`` holds every field the registry returned (input, output, spec...)."""

    id: int
    pipeline: str
    stage: str
    state: str
    attempt: int
    reason: str | None
    output_digest: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Job":
        output = d.get("output") or {}
        digest = output.get("digest") if isinstance(output, dict) else None
        return cls(
            id=_int(d, "id"),
            pipeline=str(d.get("pipeline", "")),
            stage=str(d.get("stage", "")),
            state=str(d.get("state", "")),
            attempt=_int(d, "attempt"),
            reason=d.get("reason"),
            output_digest=str(digest) if digest else None,
            raw=d,
        )

    @property
    def finished(self) -> bool:
        """True once the job will not change any more (succeeded, failed or cancelled)."""
        return self.state in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Pin:
    """A pinned artifact: it, its blobs and its lineage ancestors are never collected."""

    repository: str
    digest: str
