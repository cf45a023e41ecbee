"""An MLflow artifact repository for ``depot://`` URIs.

Point an experiment's artifact location at Depot and MLflow stores run artifacts and logged models
there, through the same engine as ``depot push`` (only changed chunks move):

>>> mlflow.create_experiment("classifier", artifact_location="depot://models.example.com/team/classifier")
>>> with mlflow.start_run():
...     mlflow.log_artifacts("outputs", artifact_path="eval")
...     mlflow.pyfunc.log_model(name="model", python_model=Model())
>>> mlflow.pyfunc.load_model("runs:/<run id>/model")           # or the depot:// URI itself

The plugin is registered through the ``mlflow.artifact_repository`` entry point: installing
``depot-registry`` is enough. Credentials: ``$DEPOT_TOKEN`` when the URI's host is the one
``$DEPOT_REGISTRY`` names (an artifact location comes from the tracking server, which other users
can write: a token is never sent to a host it was not configured for), else what ``depot login``
stored for that host.

Layout: ``depot://HOST[:PORT]/PATH`` is the Depot repository ``PATH`` on registry ``HOST:PORT``
(http on this machine, https elsewhere, as for the CLI). MLflow derives a run's URI from the
experiment's (``<artifact location>/<run id>/artifacts``) and a logged model's
(``<artifact location>/models/<model id>/artifacts``): each is a repository of its own. Each
``log_artifact``/``log_artifacts`` call pushes one artifact, tagged ``a<ms since 1970><n>`` so tags
sort in logging order, with its files at their paths in the run (``eval/report.json``); a later
call that logs the same path wins, as on a file system. The MLflow run id is recorded on each
artifact (``dev.depot.lineage.run``) and, when the run has the tag ``depot.parent`` (a Depot
reference: the model the run fine-tuned, say), on the lineage edge from that parent.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from ..client import Registry
from ..errors import DepotError, NotFoundError

# An OCI repository name component: only these can name a repository this plugin logged to.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# Tags this plugin writes: 'a', 13 digits of milliseconds, 4 digits of a per-process counter.
_TAG = re.compile(r"^a[0-9]{17}$")


def parse_uri(uri: str) -> tuple[str, str]:
    """``depot://host:port/team/model`` -> (``host:port``, ``team/model``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "depot" or not parsed.netloc:
        raise DepotError(f"not a depot:// URI with a registry host: {uri!r} (depot://HOST[:PORT]/REPOSITORY)")
    repository = parsed.path.strip("/")
    if not repository:
        raise DepotError(f"{uri!r} names no repository (depot://HOST[:PORT]/REPOSITORY)")
    return parsed.netloc, repository


class DepotArtifactRepository(ArtifactRepository):
    """MLflow artifacts in a Depot repository (see the module documentation)."""

    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        host, self.repository = parse_uri(artifact_uri)
        self.registry = Registry(host, token=_token_for(host))
        parts = self.repository.split("/")
        self.run_id = parts[-2] if len(parts) >= 2 and parts[-1] == "artifacts" and _RUN_ID.match(parts[-2]) else None

    # -- logging -------------------------------------------------------------------------------

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="depot-mlflow-") as tmp:
            target = Path(tmp) / _relative(artifact_path) / os.path.basename(local_file)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(local_file, target)
            self._push(Path(tmp))

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="depot-mlflow-") as tmp:
            target = Path(tmp) / _relative(artifact_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target == Path(tmp):
                shutil.copytree(local_dir, target, copy_function=_link_or_copy, dirs_exist_ok=True)
            else:
                shutil.copytree(local_dir, target, copy_function=_link_or_copy)
            if not any(p.is_file() for p in Path(tmp).rglob("*")):
                return  # MLflow logs empty directories as nothing, like its other stores
            self._push(Path(tmp))

    def _push(self, root: Path) -> None:
        with self._counter_lock:
            DepotArtifactRepository._counter = (DepotArtifactRepository._counter + 1) % 10_000
            n = DepotArtifactRepository._counter
        tag = f"a{int(time.time() * 1000):013d}{n:04d}"
        annotations = {"dev.depot.mlflow.artifact-uri": self.artifact_uri}
        parent = self._parent()
        self.registry.push(
            f"{self.repository}:{tag}",
            root,
            run=self._run(),
            parent=parent,
            relation="derived-from" if parent else None,
            annotations=annotations,
        )
        self.__dict__.pop("_indexes", None)

    def _run(self) -> str | None:
        """The MLflow run: from the URI (a run's artifacts), else the active run (a logged
        model's artifacts live under the experiment's ``models/<model id>``, not the run's)."""
        if self.run_id is not None:
            return self.run_id
        import mlflow

        active = mlflow.active_run()
        return str(active.info.run_id) if active is not None else None

    def _parent(self) -> str | None:
        """The run's ``depot.parent`` tag, when the run has one."""
        run_id = self._run()
        if run_id is None:
            return None
        try:
            from mlflow.tracking import MlflowClient

            value = MlflowClient(tracking_uri=self.tracking_uri).get_run(run_id).data.tags.get("depot.parent")
        except Exception:  # a run this tracking server does not know: no parent to record
            return None
        return str(value) if value else None

    # -- reading -------------------------------------------------------------------------------
    #
    # MLflow treats URIs as a hierarchy: it may open the repository of a parent URI and ask for
    # a child path (``runs:/<id>/model`` becomes ``.../models/<model id>`` with the path
    # ``artifacts``). So a read looks at the full path (this URI's path, then the artifact path)
    # and finds the longest prefix that is a repository this plugin logged to; the rest is a
    # file path inside it.

    def _locate(self, path: str | None) -> tuple[str, str] | None:
        """(repository, path inside it) for ``path`` under this URI, or None."""
        inner = _relative(path)
        own = self.repository.split("/")
        parts = [*own, *([] if str(inner) == "." else inner.parts)]
        # Never above this URI's own repository: what it holds is below it.
        for i in range(len(parts), len(own) - 1, -1):
            if not all(_COMPONENT.match(p) for p in parts[:i]):
                continue
            candidate = "/".join(parts[:i])
            if self._index(candidate) is not None:
                return candidate, "/".join(parts[i:])
        return None

    def _index(self, repository: str) -> dict[str, tuple[str, int]] | None:
        """Every file path logged to ``repository`` -> (the reference holding its latest version,
        its size); None when the repository holds nothing this plugin logged."""
        cache: dict[str, dict[str, tuple[str, int]] | None] = self.__dict__.setdefault("_indexes", {})
        if repository in cache:
            return cache[repository]
        try:
            tags = sorted(t for t in self.registry.tags(repository) if _TAG.match(t))
        except NotFoundError:
            tags = []
        except DepotError as e:
            # Not a valid repository name, or one this credential may not read (a token scoped
            # to the experiment's repositories): nothing this plugin logged is there.
            if e.code not in ("NAME_INVALID", "USAGE", "DENIED", "UNAUTHORIZED"):
                raise
            tags = []
        index: dict[str, tuple[str, int]] | None = None
        for tag in tags:
            manifest = self.registry.inspect(f"{repository}:{tag}")
            digest = manifest["digest"]
            for layer in manifest.get("manifest", {}).get("layers") or []:
                a = layer.get("annotations") or {}
                file_path = a.get("org.cncf.model.filepath") or a.get("org.opencontainers.image.title")
                if file_path:
                    index = index or {}
                    index[str(file_path)] = (f"{repository}@{digest}", int(layer.get("size", 0)))
        cache[repository] = index
        return index

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        located = self._locate(path)
        if located is None:
            return []
        repository, inner = located
        index = self._index(repository) or {}
        inner_prefix = inner.rstrip("/") + "/" if inner else ""
        base = str(_relative(path))
        base_prefix = "" if base == "." else base + "/"
        entries: dict[str, FileInfo] = {}
        for file_path, (_, size) in index.items():
            if not file_path.startswith(inner_prefix):
                continue
            head, sep, _ = file_path[len(inner_prefix) :].partition("/")
            child = base_prefix + head
            if sep:
                entries.setdefault(child, FileInfo(child, True, None))
            else:
                entries[child] = FileInfo(child, False, size)
        return [entries[k] for k in sorted(entries)]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        located = self._locate(remote_file_path)
        found = (self._index(located[0]) or {}).get(located[1]) if located else None
        if located is None or found is None:
            raise NotFoundError(f"{self.artifact_uri}: no artifact {remote_file_path!r}", "BLOB_UNKNOWN", 404)
        reference, _ = found
        with tempfile.TemporaryDirectory(prefix="depot-mlflow-") as tmp:
            self.registry.pull(reference, tmp, files=[located[1]])
            os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
            shutil.move(os.path.join(tmp, located[1]), local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        raise DepotError(
            "Depot keeps what was logged (artifacts are immutable and audited); "
            "delete the run's tags with the registry API if you must"
        )


def _token_for(host: str) -> str | None:
    """``$DEPOT_TOKEN`` only for the registry ``$DEPOT_REGISTRY`` names. An artifact location
    comes from the tracking server, which other users can write: a URI naming another host must
    not receive the token (it gets what ``depot login`` stored for that host, if anything)."""
    configured = os.environ.get("DEPOT_REGISTRY", "")
    configured_host = urlparse(configured).netloc if "://" in configured else configured.strip("/")
    if configured_host and configured_host.lower() == host.lower():
        return None  # the default: $DEPOT_TOKEN
    return ""


def _relative(path: str | None) -> PurePosixPath:
    """An artifact path inside the run, refusing ones that climb out of it."""
    if not path:
        return PurePosixPath(".")
    p = PurePosixPath(path.replace(os.sep, "/").strip("/"))
    if p.is_absolute() or ".." in p.parts:
        raise DepotError(f"artifact path {path!r} leaves the run's artifacts")
    return p


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
