"""Optimizers and schedulers as the spec names them: every one trains, and the reported lr
follows the schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from engine_helpers import make_spec

from service.contract.spec import JobSpec
from worker.training.data import Prepared
from worker.training.loop import Callbacks, fit

Prepare = Callable[[JobSpec], Prepared]


def rows_of(spec: JobSpec, data: Prepared) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fit(spec, data, None, Callbacks(on_epoch=rows.append))
    return rows


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "lr": 0.05},
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"name": "adam", "lr": 0.01, "weight_decay": 1e-3},
        {"name": "adamw", "lr": 0.01, "weight_decay": 1e-2},
        {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "weight_decay": 1e-3},
    ],
    ids=lambda o: f"{o['name']}{'-nesterov' if o.get('nesterov') else ''}",
)
def test_every_optimizer_learns(prepared: Prepare, optimizer: dict[str, Any]) -> None:
    spec = make_spec(
        optimizer=optimizer, regularization={"l2": 1e-3}, training={"epochs": 8, "checkpoint_every": 0}
    )
    rows = rows_of(spec, prepared(spec))
    assert rows[-1]["data_loss"] < rows[0]["data_loss"]
    assert all(math.isfinite(r["train_loss"]) for r in rows)


def test_step_scheduler_lr_by_epoch(prepared: Prepare) -> None:
    spec = make_spec(
        optimizer={"name": "adam", "lr": 0.01, "scheduler": {"type": "step", "step_size": 2, "gamma": 0.5}},
        training={"epochs": 6, "checkpoint_every": 0},
    )
    lrs = [r["lr"] for r in rows_of(spec, prepared(spec))]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])


def test_cosine_scheduler_anneals_to_eta_min(prepared: Prepare) -> None:
    spec = make_spec(
        optimizer={"name": "sgd", "lr": 0.1, "scheduler": {"type": "cosine", "eta_min": 0.001}},
        training={"epochs": 5, "checkpoint_every": 0},
    )
    lrs = [r["lr"] for r in rows_of(spec, prepared(spec))]
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert lrs == pytest.approx(expected)


def test_plateau_scheduler_lowers_lr_when_val_loss_stalls(prepared: Prepare) -> None:
    spec = make_spec(
        optimizer={"name": "sgd", "lr": 1e-5, "scheduler": {"type": "plateau", "factor": 0.5, "patience": 0}},
        training={"epochs": 4, "checkpoint_every": 0},
    )
    lrs = [r["lr"] for r in rows_of(spec, prepared(spec))]
    # the val_loss moves by ~1e-5 relative, under the 1e-4 that counts as an improvement
    assert lrs == pytest.approx([1e-5, 1e-5, 5e-6, 2.5e-6])
