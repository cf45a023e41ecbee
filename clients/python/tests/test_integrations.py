"""The training and tracking integrations, each with the real library, on a tiny model trained for
a few steps on the CPU, against a live ``depot serve`` with authentication on.

They need torch, transformers, pytorch-lightning and mlflow (scripts/test-python-sdk.sh installs
them once into a cached venv); without them these tests are skipped, saying so."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest

import depot
from conftest import LiveRegistry
from models import tree_bytes



def need(module: str) -> Any:
    """The library, or a skip (a failure under DEPOT_SDK_REQUIRE_INTEGRATIONS=1, as in
    scripts/test-python-sdk.sh, where a missing library must not pass silently)."""
    if os.environ.get("DEPOT_SDK_REQUIRE_INTEGRATIONS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs {module} (scripts/test-python-sdk.sh installs it)")


torch = need("torch")


@pytest.fixture()
def env_token(live: LiveRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPOT_REGISTRY", live.url)
    monkeypatch.setenv("DEPOT_TOKEN", live.writer)


def chain(ops: depot.Registry, ref: str) -> list[tuple[str, str]]:
    """(relation, parent digest) of each ancestor of ``ref``, nearest first."""
    return [(n.edge.relation, n.digest) for n in ops.lineage(ref)]


def test_transformers_callback_pushes_each_checkpoint_with_lineage(live: LiveRegistry, tmp_path: Path, env_token: None) -> None:
    transformers = need("transformers")
    from depot.integrations.transformers import DepotCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=4096, bos_token_id=0, eos_token_id=0, n_positions=32, n_embd=128, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "base")
    registry = depot.Registry()
    base = registry.push("sdk/gpt:base", tmp_path / "base")
    # Fine-tune only the last block: the embeddings and the first block do not change, so each
    # checkpoint after the first sends far less than its size.
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("transformer.h.1.")

    class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> dict[str, Any]:
            ids = torch.randint(0, 4096, (16,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": ids}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        save_steps=2,
        save_total_limit=1,  # the Trainer deletes older checkpoints while their pushes may still run
        per_device_train_batch_size=4,
        logging_steps=2,
        report_to=[],
        use_cpu=True,
        run_name="ft-gpt-1",
        disable_tqdm=True,
    )
    callback = DepotCallback("sdk/gpt", base="sdk/gpt:base", registry=registry)
    transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback]).train()

    assert [p.reference for p in callback.pushed] == ["sdk/gpt:step-2", "sdk/gpt:step-4", "sdk/gpt:step-6"]
    later = callback.pushed[-1]
    assert later.bytes_sent < later.logical_bytes / 2, f"sent {later.bytes_sent} of {later.logical_bytes}"
    ops = depot.Registry(live.url, token=live.maintainer)
    digests = [p.digest for p in callback.pushed]
    assert chain(ops, "sdk/gpt:step-6") == [
        ("trained-from", digests[1]),
        ("trained-from", digests[0]),
        ("fine-tuned-from", base.digest),
    ]
    edge = ops.lineage("sdk/gpt:step-6")[0].edge
    assert edge.run == "ft-gpt-1"
    assert "loss" in edge.metrics
    # What was pushed at step 6 is what the Trainer saved at step 6, and it loads.
    registry.pull("sdk/gpt:step-6", tmp_path / "pulled")
    saved = tree_bytes(tmp_path / "out" / "checkpoint-6")
    assert tree_bytes(tmp_path / "pulled") == saved
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "pulled")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_lightning_callback_pushes_each_checkpoint_and_the_final_one(live: LiveRegistry, tmp_path: Path, env_token: None) -> None:
    pl = need("pytorch_lightning")
    from depot.integrations.lightning import DepotCheckpointCallback

    torch.manual_seed(0)

    class Regressor(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x = torch.randn(80, 64)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    module = Regressor()
    (tmp_path / "base").mkdir()
    torch.save({"state_dict": module.state_dict()}, tmp_path / "base" / "model.ckpt")
    registry = depot.Registry()
    base = registry.push("sdk/regressor:base", tmp_path / "base")
    callback = DepotCheckpointCallback("sdk/regressor", base="sdk/regressor:base", registry=registry, run="pl-run-7")
    trainer = pl.Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path / "pl"),
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=2, save_top_k=-1),
            callback,
        ],
    )
    trainer.fit(module, data)

    # Saves at steps 2 and 4 by ModelCheckpoint; step 5, the end, by the callback itself.
    assert [p.reference for p in callback.pushed] == ["sdk/regressor:step-2", "sdk/regressor:step-4", "sdk/regressor:step-5"]
    ops = depot.Registry(live.url, token=live.maintainer)
    digests = [p.digest for p in callback.pushed]
    assert chain(ops, "sdk/regressor:step-5") == [
        ("trained-from", digests[1]),
        ("trained-from", digests[0]),
        ("fine-tuned-from", base.digest),
    ]
    assert ops.lineage("sdk/regressor:step-2")[0].edge.run == "pl-run-7"
    registry.pull("sdk/regressor:step-5", tmp_path / "final")
    state = torch.load(tmp_path / "final" / "model.ckpt", weights_only=False)["state_dict"]
    for name, value in module.state_dict().items():
        assert torch.equal(state[name], value), name
    # The file ModelCheckpoint wrote at step 4 holds the same weights as the push of step 4.
    registry.pull("sdk/regressor:step-4", tmp_path / "four")
    pushed = torch.load(tmp_path / "four" / "model.ckpt", weights_only=False)["state_dict"]
    (written,) = [p for p in (tmp_path / "ckpt").iterdir() if "step=4" in p.name]
    on_disk = torch.load(written, weights_only=False)["state_dict"]
    for name in on_disk:
        assert torch.equal(pushed[name], on_disk[name]), name


def test_mlflow_artifacts_and_models_in_depot(live: LiveRegistry, tmp_path: Path, env_token: None) -> None:
    mlflow = need("mlflow")
    import mlflow.pyfunc

    registry = depot.Registry()
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "weights.bin").write_bytes(os.urandom(1 << 16))
    base = registry.push("sdk/mlflow-base:v1", tmp_path / "base")

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    host = live.url.removeprefix("http://")
    experiment = mlflow.create_experiment("sdk", artifact_location=f"depot://{host}/sdk/mlflow")

    class AddN(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def __init__(self, n: int) -> None:
            self.n = n

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input.apply(lambda column: column + self.n)

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.json").write_text('{"accuracy": 0.93}')
    (tmp_path / "eval" / "plots").mkdir()
    (tmp_path / "eval" / "plots" / "roc.csv").write_text("0,0\n1,1\n")
    (tmp_path / "notes.txt").write_text("first try")
    with mlflow.start_run(experiment_id=experiment, tags={"depot.parent": "sdk/mlflow-base:v1"}) as run:
        run_id = run.info.run_id
        mlflow.log_artifacts(str(tmp_path / "eval"), artifact_path="eval")
        mlflow.log_artifact(str(tmp_path / "notes.txt"))
        (tmp_path / "notes.txt").write_text("second try")
        mlflow.log_artifact(str(tmp_path / "notes.txt"))  # the later one wins, as on a file system
        info = mlflow.pyfunc.log_model(name="model", python_model=AddN(5), pip_requirements=["mlflow"])

    assert run.info.artifact_uri == f"depot://{host}/sdk/mlflow/{run_id}/artifacts"
    client = mlflow.MlflowClient()
    listed = {(f.path, f.is_dir) for f in client.list_artifacts(run_id)}
    assert {("eval", True), ("notes.txt", False)} <= listed
    assert {f.path for f in client.list_artifacts(run_id, "eval")} == {"eval/plots", "eval/report.json"}
    out = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval", dst_path=str(tmp_path / "dl")))
    assert (out / "report.json").read_text() == '{"accuracy": 0.93}'
    assert (out / "plots" / "roc.csv").read_text() == "0,0\n1,1\n"
    notes = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes.txt", dst_path=str(tmp_path / "dl2"))
    assert Path(notes).read_text() == "second try"

    import pandas

    frame = pandas.DataFrame({"x": [1.0, 2.0]})
    for uri in (info.model_uri, f"runs:/{run_id}/model", f"{info.artifact_path}" if str(info.artifact_path).startswith("depot://") else None):
        if uri is None:
            continue
        loaded = mlflow.pyfunc.load_model(uri)
        assert list(loaded.predict(frame)["x"]) == [6.0, 7.0], uri

    # The run id is on every artifact the run logged, and on the lineage edge from its parent.
    ops = depot.Registry(live.url, token=live.maintainer)
    run_repo = f"sdk/mlflow/{run_id}/artifacts"
    tags = ops.tags(run_repo)
    assert len(tags) == 3
    for tag in tags:
        annotations = ops.inspect(f"{run_repo}:{tag}")["manifest"].get("annotations") or {}
        assert annotations.get("dev.depot.lineage.run") == run_id
    edges = [n.edge for n in ops.lineage(f"{run_repo}:{tags[0]}")]
    assert [(e.parent, e.run) for e in edges] == [(base.digest, run_id)]


def test_mlflow_sends_the_token_only_to_the_configured_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An artifact location comes from the tracking server, which other users can write: a
    depot:// URI naming another host must not get $DEPOT_TOKEN."""
    need("mlflow")
    from depot.integrations.mlflow import _token_for

    monkeypatch.setenv("DEPOT_REGISTRY", "http://127.0.0.1:5000")
    monkeypatch.setenv("DEPOT_TOKEN", "secret")
    assert _token_for("127.0.0.1:5000") is None  # the default: $DEPOT_TOKEN
    assert _token_for("evil.example") == ""
    assert _token_for("127.0.0.1:5001") == ""
    monkeypatch.setenv("DEPOT_REGISTRY", "models.example.com")
    assert _token_for("MODELS.example.com") is None
    monkeypatch.delenv("DEPOT_REGISTRY")
    assert _token_for("127.0.0.1:5000") == ""
