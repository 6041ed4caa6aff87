"""Checkpoints are self-describing data: the weights reproduce the reported metrics, the
sidecar says how they were made, and only the newest epoch checkpoints are kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import make_spec
from safetensors import safe_open

from service.contract.spec import JobSpec
from worker.training import checkpoints as ckpt
from worker.training.data import Prepared
from worker.training.evaluation import evaluate
from worker.training.loop import KEEP_EPOCH_CHECKPOINTS
from worker.training.models import create_model
from worker.training.runner import Callbacks, JobOutcome, run_job

Prepare = Callable[[JobSpec], Prepared]


def evaluate_checkpoint(spec: JobSpec, data: Prepared, path: Path) -> dict[str, float]:
    """Load a checkpoint into a fresh model of the spec and evaluate it on the test split."""
    model = create_model(spec, data.shape)
    model.load_state_dict(ckpt.read_weights(path))
    ev = evaluate(
        model,
        torch.as_tensor(data.X_test),
        torch.as_tensor(data.y_test),
        data.task,
        data.standardization.target_std,
        torch.autocast("cpu", enabled=False),
    )
    return {f"test_{k}": v for k, v in ev.items()}


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[JobSpec, Path, JobOutcome, dict[str, list[Any]]]:
    spec = make_spec(
        dataset={"name": "digits"},
        model={"type": "mlp", "hidden": [32], "dropout": 0.2, "batch_norm": True},
        training={"epochs": 5},
    )
    work = tmp_path_factory.mktemp("trained")
    seen: dict[str, list[Any]] = {"saved": [], "removed": []}
    out = run_job(
        spec,
        work,
        Callbacks(on_checkpoint=seen["saved"].append, on_checkpoint_removed=seen["removed"].append),
    )
    return spec, work, out, seen


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_final_weights_reproduce_the_reported_test_metrics(
    tmp_path: Path, prepared: Prepare, task: str
) -> None:
    dataset = {"name": "digits"} if task == "classification" else {"name": "diabetes"}
    spec = make_spec(
        dataset=dataset,
        model={"type": "mlp", "hidden": [32], "dropout": 0.3, "batch_norm": True},
        training={"epochs": 3},
    )
    out = run_job(spec, tmp_path)
    data = prepared(spec)
    again = evaluate_checkpoint(spec, data, tmp_path / "checkpoints" / "final.safetensors")
    # test_<metric> (the per-class report and macro_f1: tests/engine/test_metrics.py)
    scalars = {k: v for k, v in out.result["metrics"].items() if k.startswith("test_")}
    assert again.keys() == scalars.keys()
    for k, v in scalars.items():
        assert again[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def test_cnn_checkpoint_reproduces_its_metrics(tmp_path: Path, prepared: Prepare) -> None:
    spec = make_spec(
        dataset={"name": "digits"},
        model={"type": "cnn", "channels": [4], "hidden": [16]},
        training={"epochs": 1},
    )
    out = run_job(spec, tmp_path)
    again = evaluate_checkpoint(spec, prepared(spec), tmp_path / "checkpoints" / "final.safetensors")
    assert again["test_accuracy"] == pytest.approx(out.result["metrics"]["test_accuracy"])


def test_sidecar_describes_the_checkpoint(
    trained: tuple[JobSpec, Path, JobOutcome, dict[str, list[Any]]], prepared: Prepare
) -> None:
    spec, work, out, _ = trained
    folder = work / "checkpoints"
    side = ckpt.read_sidecar(folder, "final")
    for key in ("spec", "epoch", "metrics", "versions", "seed", "data_sha256", "standardization"):
        assert key in side, key
    assert JobSpec.model_validate(side["spec"]) == spec
    assert side["epoch"] == 5 and side["seed"] == spec.training.seed
    assert side["versions"]["torch"] == torch.__version__ and side["versions"]["regtrain"]
    data = prepared(spec)
    assert side["data_sha256"] == data.sha256 == out.result["environment"]["data_sha256"]
    assert side["standardization"] == json.loads(json.dumps(data.standardization.to_dict()))
    assert side["metrics"]["test_accuracy"] == out.result["metrics"]["test_accuracy"]
    epoch_side = ckpt.read_sidecar(folder, "epoch-4")
    assert epoch_side["epoch"] == 4 and epoch_side["metrics"]["epoch"] == 4
    with safe_open(str(folder / "final.safetensors"), "pt") as f:
        assert f.metadata()["format"] == ckpt.FORMAT


def test_only_the_last_epoch_checkpoints_are_kept(
    trained: tuple[JobSpec, Path, JobOutcome, dict[str, list[Any]]],
) -> None:
    _, work, _, seen = trained
    folder = work / "checkpoints"
    assert KEEP_EPOCH_CHECKPOINTS == 3
    assert ckpt.epoch_checkpoints(folder) == [3, 4, 5]
    assert seen["removed"] == ["epoch-1", "epoch-2"]
    for name in ("epoch-1", "epoch-2"):
        assert not list(folder.glob(f"{name}.*"))
    names = [rec.name for rec in seen["saved"]]
    assert [n for n in names if n.startswith("epoch-")] == [f"epoch-{i}" for i in range(1, 6)]
    assert names[-1] == "final" and "best" in names
    for rec in seen["saved"]:
        assert rec.size_bytes > 0 and len(rec.sha256) == 64


def test_checkpoint_every_and_zero(tmp_path: Path) -> None:
    every2 = run_job(make_spec(training={"epochs": 4, "checkpoint_every": 2}), tmp_path / "a")
    assert ckpt.epoch_checkpoints(tmp_path / "a" / "checkpoints") == [2, 4]
    assert every2.status == "succeeded"
    run_job(make_spec(training={"epochs": 2, "checkpoint_every": 0}), tmp_path / "b")
    folder = tmp_path / "b" / "checkpoints"
    assert ckpt.epoch_checkpoints(folder) == []
    assert (folder / "best.safetensors").exists() and (folder / "final.safetensors").exists()


def test_resume_state_is_data_not_pickle(
    trained: tuple[JobSpec, Path, JobOutcome, dict[str, list[Any]]],
) -> None:
    _, work, _, _ = trained
    folder = work / "checkpoints"
    assert not [p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
    opt_state, rng, loop = ckpt.read_resume_state(folder, "epoch-5")
    assert set(rng) >= {"torch", "shuffle"}
    assert loop["last_row"]["epoch"] == 5 and "tracker" in loop
    assert opt_state["state"] and opt_state["param_groups"]


def test_restore_best_leaves_the_best_weights_in_final(tmp_path: Path, prepared: Prepare) -> None:
    """Monitoring val_loss in mode max: the first epoch is the best (the loss then falls), so the
    run stops after 1 + patience epochs, and `final` must hold epoch 1's weights."""
    es = {"monitor": "val_loss", "mode": "max", "patience": 2, "restore_best": True}
    spec = make_spec(dataset={"name": "digits"}, training={"epochs": 10, "early_stopping": es})
    out = run_job(spec, tmp_path)
    folder = tmp_path / "checkpoints"
    assert out.result["best_epoch"] == 1 and out.result["stopped_early"]
    assert out.result["epochs_completed"] == 3
    final, best = (
        ckpt.read_weights(folder / "final.safetensors"),
        ckpt.read_weights(folder / "best.safetensors"),
    )
    last = ckpt.read_weights(folder / "epoch-3.safetensors")
    assert all(torch.equal(final[k], best[k]) for k in final)
    assert not all(torch.equal(final[k], last[k]) for k in final)
    assert ckpt.read_sidecar(folder, "best")["epoch"] == 1
    assert ckpt.read_sidecar(folder, "final")["metrics"]["restored_best_epoch"] == 1
    again = evaluate_checkpoint(spec, prepared(spec), folder / "final.safetensors")
    assert again["test_accuracy"] == pytest.approx(out.result["metrics"]["test_accuracy"])

    keep_last = make_spec(
        dataset={"name": "digits"}, training={"epochs": 10, "early_stopping": {**es, "restore_best": False}}
    )
    run_job(keep_last, tmp_path / "b")
    folder_b = tmp_path / "b" / "checkpoints"
    final_b, last_b = (
        ckpt.read_weights(folder_b / "final.safetensors"),
        ckpt.read_weights(folder_b / "epoch-3.safetensors"),
    )
    assert all(torch.equal(final_b[k], last_b[k]) for k in final_b)


def test_epoch_metrics_are_those_of_the_epoch_weights_in_eval_mode(
    trained: tuple[JobSpec, Path, JobOutcome, dict[str, list[Any]]], prepared: Prepare
) -> None:
    """The model has dropout and batch norm: the reported val metrics equal an eval-mode
    evaluation of the epoch's saved weights, and the weight stats are theirs."""
    spec, work, _, _ = trained
    data = prepared(spec)
    folder = work / "checkpoints"
    row = ckpt.read_sidecar(folder, "epoch-5")["metrics"]
    model = create_model(spec, data.shape)
    model.load_state_dict(ckpt.read_weights(folder / "epoch-5.safetensors"))
    model.train()  # evaluate() must switch to eval mode itself
    ev = evaluate(
        model,
        torch.as_tensor(data.X_val),
        torch.as_tensor(data.y_val),
        data.task,
        1.0,
        torch.autocast("cpu", enabled=False),
    )
    assert not model.training
    assert row["val_loss"] == pytest.approx(ev["loss"], rel=1e-6)
    assert row["val_accuracy"] == pytest.approx(ev["accuracy"])
    weights = [p for p in model.parameters() if p.ndim >= 2]
    norm = float(torch.sqrt(sum((w.detach().double() ** 2).sum() for w in weights)))
    assert row["weight_l2_norm"] == pytest.approx(norm, rel=1e-5)
    assert row["weight_sparsity"] == 0.0
    assert row["generalization_gap"] == pytest.approx(row["val_loss"] - row["train_eval_loss"])


@pytest.mark.parametrize("run", [{}, {"spec": {"a": [1.5, None]}, "classes": ["x", "y"], "epoch": 99}])
def test_the_sidecar_encoded_once_reads_as_the_whole_document(run: dict[str, Any]) -> None:
    # the run's part is encoded once and spliced after each checkpoint's own keys: the text
    # must read back as one object, with the checkpoint's epoch (never a run key's) and metrics
    side = ckpt.Sidecar(run)
    for name, epoch, metrics in (("epoch-3", 3, {"val_loss": 0.25, "gap": None}), ("best", 1, {})):
        doc = json.loads(side.document(name, epoch, metrics))
        assert doc == {
            **{k: v for k, v in run.items() if k != "epoch"},
            "format": ckpt.FORMAT,
            "name": name,
            "epoch": epoch,
            "metrics": metrics,
        }
