"""Integrations with training and tracking libraries.

- :mod:`depot.integrations.transformers`: :class:`~depot.integrations.transformers.DepotCallback`,
  a ``TrainerCallback`` that pushes each saved checkpoint.
- :mod:`depot.integrations.lightning`: :class:`~depot.integrations.lightning.DepotCheckpointCallback`,
  the same for PyTorch Lightning.
- :mod:`depot.integrations.mlflow`: an MLflow artifact repository for ``depot://`` URIs (registered
  through the ``mlflow.artifact_repository`` entry point: nothing to import).

Each module imports its library only when used: ``import depot`` needs none of them.
"""
