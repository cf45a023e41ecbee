"""A Hugging Face ``transformers`` callback that pushes each saved checkpoint to Depot.

>>> from depot.integrations.transformers import DepotCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=ds,
...                   callbacks=[DepotCallback("team/llm", base="team/llm:base")])
>>> trainer.train()        # checkpoint-500 -> team/llm:step-500, checkpoint-1000 -> team/llm:step-1000

Each checkpoint folder the Trainer saves (``output_dir/checkpoint-<step>``) becomes
``<repository>:step-<step>`` in the background, while training goes on. Only the chunks the
registry lacks move: consecutive checkpoints share their frozen layers, tokenizer and config. Each
push records lineage: the first ``fine-tuned-from`` the base model, each later one
``trained-from`` the checkpoint before it, so the base is an ancestor of every step. The run name
and the metrics logged at that step go on the lineage edge. At the end of training the callback
waits for the pushes and raises if any failed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..client import Registry
from ..types import PushResult
from ._checkpoints import CheckpointChain, log, numeric_metrics, snapshot


def _barrier() -> None:
    """Waits for every process of a distributed run (nothing to wait for otherwise)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class DepotCallback(TrainerCallback):
    """Pushes every checkpoint the Trainer saves to ``repository`` (tags ``step-<n>``).

    Args:
        repository: Where the checkpoints go, e.g. ``"team/llm-ft"``.
        base: The base model (``REPO:TAG`` or ``REPO@sha256:...``) the first checkpoint is
            ``fine-tuned-from``; ``None`` when training from scratch.
        registry: The registry (default: ``Registry()``, from ``$DEPOT_REGISTRY``/``$DEPOT_TOKEN``).
        tag_format: The tag of a checkpoint, with ``{step}``.
        run: Recorded on each lineage edge (default: ``args.run_name``).
        dataset, commit: Recorded on each lineage edge.
        background: Push while training continues (default); ``False`` blocks each save.
    """

    def __init__(
        self,
        repository: str,
        *,
        base: str | None = None,
        registry: Registry | None = None,
        tag_format: str = "step-{step}",
        run: str | None = None,
        dataset: str | None = None,
        commit: str | None = None,
        background: bool = True,
    ) -> None:
        self.repository = repository
        self.base = base
        self.registry = registry or Registry()
        self.tag_format = tag_format
        self.run = run
        self.dataset = dataset
        self.commit = commit
        self.background = background
        self._chain: CheckpointChain | None = None
        self.pushed: list[PushResult] = []

    def _chain_for(self, args: TrainingArguments) -> CheckpointChain:
        if self._chain is None:
            run = self.run or getattr(args, "run_name", None)
            self._chain = CheckpointChain(
                self.registry,
                self.repository,
                staging_root=Path(args.output_dir or ".") / ".depot-staging",
                base=self.base,
                base_relation="fine-tuned-from",
                run=str(run) if run else None,
                dataset=self.dataset,
                commit=self.commit,
                background=self.background,
            )
        return self._chain

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # Every process has written its part (its RNG state, its shard) before the main one
        # captures the folder: on_save runs on all processes, right after each one's save.
        _barrier()
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            # A hyperparameter search saves under output_dir/run-<trial>/.
            found = sorted(Path(args.output_dir or ".").glob(f"run-*/checkpoint-{state.global_step}"))
            if not found:
                log.warning("depot: no checkpoint folder for step %d under %s: not pushed", state.global_step, args.output_dir)
                return
            folder = max(found, key=lambda p: p.stat().st_mtime)
        metrics: dict[str, float] = {}
        for entry in state.log_history:
            if entry.get("step") == state.global_step:
                metrics.update(numeric_metrics({k: v for k, v in entry.items() if k not in ("step", "epoch")}))
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        tag = self.tag_format.format(step=state.global_step)
        self._chain_for(args).submit(tag, lambda staging: snapshot(folder, staging), metrics)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._chain is None:
            return
        chain, self._chain = self._chain, None
        try:
            self.pushed = chain.wait()
        finally:
            chain.close()
