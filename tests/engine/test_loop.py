"""The loop's contract: resume equals the uninterrupted run; divergence, time limits,
cancellation and a missing device end with typed outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import make_spec, without_timing

from service.contract.spec import JobSpec
from worker.training import checkpoints as ckpt
from worker.training.errors import TrainingError
from worker.training.runner import Callbacks, JobOutcome, run_job


class Recorder:
    """Callbacks that record what the engine reports, and can cancel after a given checkpoint."""

    def __init__(
        self, stop_after_checkpoint: str | None = None, stop_after_epochs: int | None = None
    ) -> None:
        self.rows: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []
        self.removed: list[str] = []
        self.stop_after_checkpoint = stop_after_checkpoint
        self.stop_after_epochs = stop_after_epochs
        self.stop = False

    def on_epoch(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.stop_after_epochs is not None and len(self.rows) >= self.stop_after_epochs:
            self.stop = True

    def on_checkpoint(self, rec: ckpt.CheckpointRecord) -> None:
        self.checkpoints.append(rec.name)
        if rec.name == self.stop_after_checkpoint:
            self.stop = True

    def callbacks(self) -> Callbacks:
        return Callbacks(
            on_epoch=self.on_epoch,
            on_checkpoint=self.on_checkpoint,
            on_checkpoint_removed=self.removed.append,
            should_stop=lambda: self.stop,
        )

    @property
    def epochs(self) -> list[int]:
        return [r["epoch"] for r in self.rows]


def run(spec: JobSpec, work: Path, rec: Recorder | None = None, **kw: Any) -> JobOutcome:
    return run_job(spec, work, (rec or Recorder()).callbacks(), **kw)


def final_weights(work: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_weights(work / "checkpoints" / "final.safetensors")


RESUMABLE = [
    pytest.param(
        {
            "dataset": {"name": "wine"},
            "model": {"type": "mlp", "hidden": [32, 16], "dropout": 0.3},
            "regularization": {"l1": 1e-3, "l2": 1e-3},
            "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
            "training": {"epochs": 6, "batch_size": 16},
        },
        id="sgd-momentum-dropout",
    ),
    pytest.param(
        {
            "dataset": {"name": "wine"},
            "model": {"type": "mlp", "hidden": [32], "batch_norm": True},
            "optimizer": {
                "name": "adam",
                "lr": 0.01,
                "scheduler": {"type": "step", "step_size": 2, "gamma": 0.5},
            },
            "training": {"epochs": 6, "batch_size": 16, "early_stopping": {"patience": 50}},
        },
        id="adam-step-scheduler",
    ),
]


@pytest.mark.parametrize("parts", RESUMABLE)
def test_resume_equals_the_uninterrupted_run(tmp_path: Path, parts: dict[str, Any]) -> None:
    spec = make_spec(**parts)
    n, k = spec.training.epochs, 3
    whole = Recorder()
    out_a = run(spec, tmp_path / "a", whole)
    assert out_a.status == "succeeded" and out_a.resumed_from_epoch is None
    assert whole.epochs == list(range(1, n + 1))

    first = Recorder(stop_after_checkpoint=f"epoch-{k}")
    out_b1 = run(spec, tmp_path / "b", first)
    assert out_b1.status == "cancelled"
    assert first.epochs == list(range(1, k + 1))
    second = Recorder()
    out_b2 = run(spec, tmp_path / "b", second)
    assert out_b2.status == "succeeded"
    assert out_b2.resumed_from_epoch == k
    assert second.epochs == list(range(k + 1, n + 1))

    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the resumed epochs report what the uninterrupted ones did, lr schedule included
    assert without_timing(second.rows) == without_timing(whole.rows[k:])
    assert out_b2.result["metrics"] == out_a.result["metrics"]
    assert out_b2.result["epochs_completed"] == n


def test_resume_after_removing_later_checkpoints(tmp_path: Path) -> None:
    spec = make_spec(
        dataset={"name": "wine"},
        model={"type": "mlp", "hidden": [16], "dropout": 0.2},
        training={"epochs": 4, "batch_size": 16},
    )
    run(spec, tmp_path / "a")
    run(spec, tmp_path / "b")
    folder = tmp_path / "b" / "checkpoints"
    for name in ("epoch-3", "epoch-4", "final"):
        ckpt.remove_checkpoint(folder, name)
    assert ckpt.epoch_checkpoints(folder) == [2]
    rec = Recorder()
    out = run(spec, tmp_path / "b", rec)
    assert out.resumed_from_epoch == 2 and rec.epochs == [3, 4]
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_finished_job_run_again_trains_nothing(tmp_path: Path) -> None:
    spec = make_spec(training={"epochs": 2})
    first = run(spec, tmp_path)
    rec = Recorder()
    again = run(spec, tmp_path, rec)
    assert rec.epochs == [] and again.resumed_from_epoch == 2
    assert again.result["metrics"] == first.result["metrics"]


# --- failures -----------------------------------------------------------------------------------


def test_divergence_names_epoch_and_step(tmp_path: Path) -> None:
    spec = make_spec(
        dataset={"name": "diabetes"},
        model={"type": "mlp", "hidden": [64, 64]},
        optimizer={"name": "sgd", "lr": 10.0, "momentum": 0.9},
        training={"epochs": 5, "batch_size": 16},
    )
    with pytest.raises(TrainingError) as info:
        run(spec, tmp_path)
    err = info.value
    assert err.type == "diverged"
    epoch, step = err.details["epoch"], err.details["step"]
    assert isinstance(epoch, int) and isinstance(step, int) and epoch >= 1 and step >= 1
    assert f"epoch {epoch}" in err.message and f"step {step}" in err.message
    assert err.to_dict()["type"] == "diverged"


def test_divergence_on_huge_scale_synthetic(tmp_path: Path) -> None:
    spec = make_spec(
        dataset={"name": "synthetic", "task": "regression", "n_samples": 200, "n_features": 5},
        model={"type": "mlp", "hidden": [256, 256]},
        optimizer={"name": "sgd", "lr": 10.0, "momentum": 0.9},
        training={"epochs": 3, "batch_size": 8},
    )
    with pytest.raises(TrainingError) as info:
        run(spec, tmp_path)
    assert info.value.type == "diverged"
    assert info.value.details["epoch"] == 1  # it blows up at once


def test_time_limit_keeps_a_final_checkpoint(tmp_path: Path) -> None:
    spec = make_spec(training={"epochs": 10_000, "time_limit_s": 0.001})
    with pytest.raises(TrainingError) as info:
        run(spec, tmp_path)
    assert info.value.type == "time_limit"
    assert "time limit" in info.value.message and "epoch" in info.value.details
    assert (tmp_path / "checkpoints" / "final.safetensors").exists()


def test_time_limit_of_the_caller_applies(tmp_path: Path) -> None:
    spec = make_spec(training={"epochs": 10_000})
    with pytest.raises(TrainingError) as info:
        run(spec, tmp_path, time_limit_s=0.001)
    assert info.value.type == "time_limit"


def test_cancel_during_the_first_epoch(tmp_path: Path) -> None:
    rec = Recorder()
    rec.stop = True
    out = run(make_spec(training={"epochs": 5}), tmp_path, rec)
    assert out.status == "cancelled"
    assert rec.epochs == []
    assert (tmp_path / "checkpoints" / "final.safetensors").exists()
    assert out.result["epochs_completed"] == 0


def test_cancel_after_an_epoch_keeps_that_epoch(tmp_path: Path) -> None:
    """A cancel read after epoch 2's checkpoint: two epochs are done, and `final` holds them."""
    rec = Recorder(stop_after_checkpoint="epoch-2")
    out = run(make_spec(training={"epochs": 5}), tmp_path, rec)
    assert out.status == "cancelled" and rec.epochs == [1, 2]
    folder = tmp_path / "checkpoints"
    assert "final" in rec.checkpoints
    final, epoch2 = final_weights(tmp_path), ckpt.read_weights(folder / "epoch-2.safetensors")
    assert all(torch.equal(final[k], epoch2[k]) for k in final)
    assert out.result["epochs_completed"] == 2
    assert ckpt.read_sidecar(folder, "final")["epoch"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_device_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as info:
        run(make_spec(training={"device": "cuda"}), tmp_path)
    assert info.value.type == "device_unavailable"
    assert "cuda" in info.value.message.lower()


def test_missing_upload_is_bad_data(tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as info:
        run(make_spec(dataset={"id": "nope"}), tmp_path, datasets_dir=tmp_path / "datasets")
    assert info.value.type == "bad_data" and "nope" in info.value.message


def test_infeasible_spec_is_bad_data(tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as info:
        run(make_spec(model={"type": "mlp", "hidden": [512]}), tmp_path, max_parameters=100)
    assert info.value.type == "bad_data" and "model" in info.value.message


def test_an_early_stopped_job_run_again_trains_nothing(tmp_path: Path) -> None:
    """Running a finished job again (a worker lost after its last checkpoint) must not train on:
    the early-stopping state in the epoch checkpoint already says stop."""
    es = {"monitor": "val_loss", "mode": "max", "patience": 2}
    spec = make_spec(training={"epochs": 10, "early_stopping": es})
    first = run(spec, tmp_path)
    assert first.result["stopped_early"] and first.result["epochs_completed"] == 3
    rec = Recorder()
    again = run(spec, tmp_path, rec)
    assert rec.epochs == []
    assert again.result["epochs_completed"] == 3
    assert again.result["metrics"] == first.result["metrics"]


def test_the_gap_is_estimated_on_as_many_train_samples_as_the_validation_split_holds() -> None:
    """The train side of the generalization gap: as many rows as the val side (1024-4096), and
    4096 without a validation split, where early stopping watches it."""
    from worker.training.loop import GAP_SAMPLES, MIN_GAP_SAMPLES, gap_samples

    assert gap_samples(0) == GAP_SAMPLES == 4096
    assert gap_samples(10) == MIN_GAP_SAMPLES == 1024
    assert gap_samples(2500) == 2500
    assert gap_samples(60_000) == GAP_SAMPLES
