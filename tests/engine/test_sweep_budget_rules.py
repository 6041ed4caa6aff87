"""The sweep engine under a budget (SweepCallbacks.budget and .halt, which worker/unit_task.py
answers from contract/sweep_budget.py): the groups not started end cancelled with the budget as
their reason; the running trials end pruned at an epoch that leaves more to train, keeping what
they trained; a trial that reached its last epoch ends as it would have."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import BASE, merge

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.sweep_spec import SweepSpec, Trial, expand
from worker.training.sweep import SweepCallbacks, TrialOutcome, run_sweep

REASON = "budget: the sweep's time_s budget was reached"


def sweep_of(base: dict[str, Any] | None = None, **parts: Any) -> tuple[SweepSpec, list[Trial]]:
    s = SweepSpec.model_validate({"base": merge(BASE, base or {}), **parts})
    return s, expand(s, BUILTIN_SHAPES[s.base.dataset.name], 10_000_000)


def test_groups_not_started_end_cancelled_with_the_reason() -> None:
    s, trials = sweep_of(grid={"regularization.l2": [0.0, 1e-3, 1e-2]}, vectorize=False)
    seen: list[TrialOutcome] = []
    out = run_sweep(
        s, trials, callbacks=SweepCallbacks(on_trial=seen.append, budget=lambda: REASON if seen else None)
    )
    assert out.status == "succeeded"
    assert [t.status for t in out.trials] == ["succeeded", "cancelled", "cancelled"]
    assert [t.reason for t in out.trials] == [None, REASON, REASON]
    assert [t.epochs_trained for t in out.trials] == [2, 0, 0]
    assert [t.index for t in seen] == [0, 1, 2]  # each told, so the unit records it
    assert out.best_index == 0


@pytest.mark.parametrize("vectorize", ["auto", False], ids=["stacked", "trial-by-trial"])
def test_running_trials_stop_pruned_at_the_next_epoch_keeping_what_they_trained(vectorize: Any) -> None:
    s, trials = sweep_of(
        base={"training": {"epochs": 5}},
        grid={"regularization.l2": [0.0, 1e-3]},
        cv_folds=2,
        vectorize=vectorize,
    )
    epochs = 0

    def on_epoch(_i: int, _f: int, _s: int, _row: dict[str, Any]) -> None:
        nonlocal epochs
        epochs += 1

    out = run_sweep(
        s, trials, callbacks=SweepCallbacks(on_epoch=on_epoch, halt=lambda: REASON if epochs >= 2 else None)
    )
    assert out.status == "succeeded"
    for t in out.trials:
        assert t.status == "pruned" and t.reason == REASON, t
        assert 1 <= t.epochs_trained < 10 and t.pruned_at_epoch is not None and t.pruned_at_epoch < 10
        assert "val_loss" in t.metrics  # its last epoch's metrics, as a pruned trial keeps
    assert out.best_index is None  # a trial stopped part way is not ranked


def test_a_trial_at_its_last_epoch_is_not_stopped() -> None:
    s, trials = sweep_of(base={"training": {"epochs": 3}}, grid={"regularization.l2": [0.0]}, cv_folds=2)
    out = run_sweep(s, trials, callbacks=SweepCallbacks(halt=lambda: REASON))
    (t,) = out.trials
    assert (t.status, t.pruned_at_epoch) == ("pruned", 1)  # halted after its first epoch
    halted: list[int] = []

    def halt() -> str | None:
        halted.append(1)
        return None

    out = run_sweep(s, trials, callbacks=SweepCallbacks(halt=halt))
    assert out.trials[0].status == "succeeded" and out.trials[0].epochs_trained == 6
    assert len(halted) == 5  # asked after every epoch but the trial's last (fold 2, epoch 3)
