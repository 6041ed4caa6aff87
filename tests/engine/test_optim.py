"""Optimizers and schedulers as the spec names them: every one trains, the reported lr follows
the schedule, and the solo loop's direct fused step is torch's."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from engine_helpers import make_spec

from service.contract.spec import JobSpec
from worker.training.data import Prepared
from worker.training.loop import Callbacks, fit
from worker.training.optim import step_function

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


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=0.01, fused=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.95), fused=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, fused=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, fused=True),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, fused=True),
    ],
    ids=["adam", "adamw", "sgd", "sgd-nesterov", "sgd-dampening"],
)
def test_the_direct_fused_step_is_torchs_step(make: Callable[[Any], torch.optim.Optimizer]) -> None:
    """The solo loop's step straight into torch's fused kernel (optim.step_function) gives
    torch's own optimizer.step bit for bit, two groups with their own weight decay and a
    scheduler changing the lr included, and leaves a state_dict that torch's resumes from."""
    torch.manual_seed(0)
    shapes = [(16, 8), (16,), (3, 16), (3,)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]

    def run(direct: bool) -> tuple[list[torch.Tensor], dict[str, Any]]:
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make([{"params": ps[::2], "weight_decay": 1e-2}, {"params": ps[1::2], "weight_decay": 0.0}])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        step = step_function(opt) if direct else opt.step
        for gs in grads:
            for p, g in zip(ps, gs, strict=True):
                p.grad = g.clone()
            step()
            sched.step()
        return [p.detach() for p in ps], opt.state_dict()

    assert step_function(make([torch.nn.Parameter(torch.zeros(2))])) is not None
    (ours, ours_sd), (theirs, theirs_sd) = run(True), run(False)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    for i, st in theirs_sd["state"].items():
        for k, v in st.items():
            assert (
                torch.equal(ours_sd["state"][i][k], v)
                if isinstance(v, torch.Tensor)
                else ours_sd["state"][i][k] == v
            )


def test_the_direct_step_leaves_other_optimizers_to_torch() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    for opt in (
        torch.optim.RMSprop([p]),
        torch.optim.Adam([p], amsgrad=True, fused=True),
        torch.optim.Adam([p]),
    ):
        assert step_function(opt) == opt.step
