"""A PyTorch Lightning callback that pushes each checkpoint to Depot.

>>> from depot.integrations.lightning import DepotCheckpointCallback
>>> trainer = pl.Trainer(callbacks=[ModelCheckpoint(every_n_train_steps=100),
...                                 DepotCheckpointCallback("team/vision", base="team/vision:base")])

``on_save_checkpoint`` writes the checkpoint Lightning is saving (the dictionary its checkpoint
IO writes: weights, optimizer and scheduler states, loops, callbacks' states) to a staging file
beside ``default_root_dir`` and pushes it as ``<repository>:step-<global step>`` in the
background; ``on_train_end`` pushes the final weights when the last save was at an earlier step,
then waits for every push and raises if one failed.

Limits, from where Lightning calls the hook: keys the LightningModule's own
``on_save_checkpoint`` adds come after it and are not in the pushed file; a
``ModelCheckpoint(save_weights_only=True)`` does not call callbacks' hooks, so only the final
weights are pushed; sharded strategies (FSDP, DeepSpeed) give rank 0 only its shard: push their
consolidated checkpoint with :meth:`depot.Registry.push` instead. Lineage as in
:mod:`depot.integrations.transformers`: the first checkpoint ``fine-tuned-from`` the base, each
later one ``trained-from`` the one before; the logged metrics go on the edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # the standalone `pytorch_lightning` package
    from pytorch_lightning import Callback, LightningModule, Trainer

from ..client import Registry
from ..types import PushResult
from ._checkpoints import CheckpointChain, log, numeric_metrics


class DepotCheckpointCallback(Callback):  # type: ignore[misc]
    """Pushes every checkpoint Lightning saves to ``repository`` (tags ``step-<n>``).

    Args:
        repository: Where the checkpoints go.
        base: The base model the first checkpoint is ``fine-tuned-from`` (``None``: from scratch).
        registry: The registry (default: ``Registry()``).
        tag_format: The tag of a checkpoint, with ``{step}``.
        filename: The file name of the checkpoint in the artifact.
        run: Recorded on each lineage edge (default: the logger's run id or version, if any).
        dataset, commit: Recorded on each lineage edge.
        background: Push while training continues (default).
        push_final: On ``on_train_end``, save and push the final weights if the last checkpoint
            is older than the last step.
    """

    def __init__(
        self,
        repository: str,
        *,
        base: str | None = None,
        registry: Registry | None = None,
        tag_format: str = "step-{step}",
        filename: str = "model.ckpt",
        run: str | None = None,
        dataset: str | None = None,
        commit: str | None = None,
        background: bool = True,
        push_final: bool = True,
    ) -> None:
        super().__init__()
        self.repository = repository
        self.base = base
        self.registry = registry or Registry()
        self.tag_format = tag_format
        self.filename = filename
        self.run = run
        self.dataset = dataset
        self.commit = commit
        self.background = background
        self.push_final = push_final
        self._chain: CheckpointChain | None = None
        self._last_step: int | None = None
        self.pushed: list[PushResult] = []

    def _chain_for(self, trainer: Trainer) -> CheckpointChain:
        if self._chain is None:
            run = self.run
            if run is None and trainer.logger is not None:
                run = getattr(trainer.logger, "run_id", None) or str(trainer.logger.version)
            self._chain = CheckpointChain(
                self.registry,
                self.repository,
                staging_root=Path(trainer.default_root_dir) / ".depot-staging",
                base=self.base,
                base_relation="fine-tuned-from",
                run=str(run) if run else None,
                dataset=self.dataset,
                commit=self.commit,
                background=self.background,
            )
        return self._chain

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Training failed: finish the pushes already queued (they are good checkpoints), then clean up."""
        if self._chain is not None:
            chain, self._chain = self._chain, None
            try:
                self.pushed = chain.wait()
            except Exception as e:
                log.warning("depot: %s", e)
            finally:
                chain.close()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if not trainer.is_global_zero:
            return
        step = int(trainer.global_step)
        if step == self._last_step:
            return
        self._last_step = step

        def prepare(staging: Path) -> Path:
            # Written now, on the training thread: the dictionary is this step's state.
            path = staging / self.filename
            torch.save(checkpoint, path)
            return path

        metrics = numeric_metrics(trainer.callback_metrics)
        self._chain_for(trainer).submit(self.tag_format.format(step=step), prepare, metrics)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.push_final and self._last_step != int(trainer.global_step):
            # A collective call (it ends in a barrier): every rank makes it; it calls
            # on_save_checkpoint, which pushes from rank 0. The file it writes is not needed.
            final = Path(trainer.default_root_dir) / ".depot-staging" / "final.ckpt"
            trainer.save_checkpoint(final)
            if trainer.is_global_zero:
                final.unlink(missing_ok=True)
        if not trainer.is_global_zero or self._chain is None:
            return
        chain, self._chain = self._chain, None
        try:
            self.pushed = chain.wait()
        finally:
            chain.close()
