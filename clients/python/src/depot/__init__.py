"""Depot: a content-addressed, deduplicating model registry, from Python.

>>> import depot
>>> r = depot.Registry()                                    # $DEPOT_REGISTRY, $DEPOT_TOKEN
>>> base = r.push("team/llm:base", "checkpoints/base")       # a folder or files
>>> ft = r.push("team/llm:ft-1", "checkpoints/ft-1", parent="team/llm:base", relation="fine-tuned-from")
>>> ft.bytes_sent < ft.logical_bytes                         # only changed chunks moved
True
>>> r.pull(f"team/llm@{ft.digest}", "/srv/model")

Transfers run the ``depot`` executable (the same engine as the command line); see
:mod:`depot._engine`. Integrations: :mod:`depot.integrations.transformers`,
:mod:`depot.integrations.lightning`, :mod:`depot.integrations.mlflow`.
"""

from .client import RELATIONS, Registry
from .errors import (
    AuthenticationError,
    ConflictError,
    DepotError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
)
from .types import (
    AliasMove,
    Job,
    LineageEdge,
    LineageNode,
    Pin,
    PullResult,
    PushResult,
    Resolution,
    Rollback,
    TransferResult,
)

__version__ = "0.1.0"

__all__ = [
    "RELATIONS",
    "Registry",
    "DepotError",
    "NotFoundError",
    "AuthenticationError",
    "PermissionDeniedError",
    "ConflictError",
    "UsageError",
    "AliasMove",
    "Job",
    "LineageEdge",
    "LineageNode",
    "Pin",
    "PullResult",
    "PushResult",
    "Resolution",
    "Rollback",
    "TransferResult",
]
