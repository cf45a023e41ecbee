"""Pushing a training run's checkpoints in the background, in order, each with lineage to the one
before it (the first to the base model): the machinery the training callbacks share."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from ..client import Registry
from ..errors import DepotError
from ..types import PushResult

log = logging.getLogger("depot")


def snapshot(source: Path, staging: Path) -> Path:
    """A copy of ``source`` (a file or a folder) under ``staging`` that a later push can read even
    after the trainer rotates its checkpoints (``save_total_limit`` deletes old ones): hard links
    where the file system allows (no bytes copied: the staging folder sits beside the
    checkpoints for that; trainers write each checkpoint into a new folder), a copy otherwise. A
    file rewritten in place while its push runs changes under the push, which then fails its
    digest check rather than storing a mix."""
    target = staging / source.name
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_or_copy)
    else:
        staging.mkdir(parents=True, exist_ok=True)
        _link_or_copy(str(source), str(target))
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class CheckpointChain:
    """Pushes checkpoints one after another on a background thread.

    Each push names the previous checkpoint's digest as its parent (relation ``trained-from``);
    the first names ``base`` (relation ``base_relation``, default ``fine-tuned-from``), so every
    checkpoint's lineage walks back through the run to the base model. Training is not blocked:
    :meth:`submit` returns a future. A failed push is logged; :meth:`wait` raises the first
    failure so a run does not end believing its checkpoints are in the registry when they are not.
    """

    def __init__(
        self,
        registry: Registry,
        repository: str,
        *,
        base: str | None,
        base_relation: str,
        run: str | None,
        dataset: str | None,
        commit: str | None,
        background: bool,
        staging_root: Path | None = None,
        max_pending: int = 2,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.base_relation = base_relation
        self.run = run
        self.dataset = dataset
        self.commit = commit
        self.background = background
        self._parent: str | None = base
        self._first = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depot-checkpoints")
        if staging_root is not None:
            staging_root.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix="depot-checkpoints-", dir=staging_root))
        # Removed at interpreter exit too, when training died before on_train_end.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._staging), True)
        # At most this many checkpoints wait for their push: beyond, a save waits (training
        # slows down) rather than staging copies filling the disk.
        self._slots = threading.BoundedSemaphore(max(1, max_pending))
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._pending: list[Future[PushResult]] = []
        self.pushed: list[PushResult] = []

    def submit(
        self,
        tag: str,
        prepare: Callable[[Path], Path],
        metrics: Mapping[str, Any] | None = None,
    ) -> "Future[PushResult]":
        """Queues a push of what ``prepare(staging_dir)`` returns (called now, on the training
        thread, so it captures the checkpoint as it is at this step) to ``repository:tag``."""
        self._slots.acquire()
        try:
            with self._lock:
                staging = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=self._staging))
            path = prepare(staging)
            future = self._executor.submit(self._push, tag, path, staging, dict(metrics or {}))
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._pending.append(future)
        if not self.background:
            future.result()
        return future

    def _push(self, tag: str, path: Path, staging: Path, metrics: Mapping[str, Any]) -> PushResult:
        try:
            relation = self.base_relation if self._first else "trained-from"
            result = self.registry.push(
                f"{self.repository}:{tag}",
                path,
                parent=self._parent,
                relation=relation if self._parent is not None else None,
                run=self.run,
                dataset=self.dataset,
                commit=self.commit,
                metrics=metrics,
            )
            self._parent = f"{self.repository}@{result.digest}"
            self._first = False
            self.pushed.append(result)
            log.info("depot: pushed %s:%s %s (%d bytes sent)", self.repository, tag, result.digest, result.bytes_sent)
            return result
        except BaseException as e:
            log.warning("depot: push of %s:%s failed: %s", self.repository, tag, e)
            with self._lock:
                self._errors.append(e)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._slots.release()

    def wait(self) -> list[PushResult]:
        """Waits for every queued push; raises the first failure (as a :class:`DepotError`)."""
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            try:
                f.result()
            except BaseException:
                pass
        with self._lock:
            errors = list(self._errors)
        if errors:
            first = errors[0]
            if isinstance(first, DepotError):
                raise DepotError(
                    f"{len(errors)} checkpoint push(es) to {self.repository} failed; the first: {first.message}",
                    first.code,
                    first.status,
                ) from first
            raise DepotError(f"{len(errors)} checkpoint push(es) to {self.repository} failed: {first}") from first
        return list(self.pushed)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._cleanup()


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics mapping (tensors of one element included), for lineage."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if hasattr(v, "item"):
            try:
                v = v.item()
            except (TypeError, ValueError, RuntimeError):
                continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[str(k)] = float(v)
    return out
