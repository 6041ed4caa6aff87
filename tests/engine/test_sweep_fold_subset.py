"""A unit of a CV sweep may train some of its folds (run_sweep's `folds`, for the fleet to split
a grid over trials × folds): the outcomes summarize those folds, equal to the same folds of a
whole run, and the pruner sees their cv indices and steps."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import BASE, merge

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.sweep_spec import SweepSpec, expand
from worker.training.sweep import SweepCallbacks, run_sweep


@pytest.mark.parametrize("vectorize", ["auto", False], ids=["stacked", "trial-by-trial"])
def test_a_unit_trains_only_its_folds(vectorize: Any) -> None:
    s = SweepSpec.model_validate(
        {
            "base": merge(BASE, {"training": {"epochs": 2}}),
            "grid": {"optimizer.lr": [0.01, 0.05]},
            "cv_folds": 3,
            "vectorize": vectorize,
        }
    )
    trials = expand(s, BUILTIN_SHAPES[s.base.dataset.name], 10_000_000)
    whole = run_sweep(s, trials)
    seen: list[tuple[int, int, int]] = []

    def prune(i: int, fold: int, step: int, _row: dict[str, Any]) -> None:
        seen.append((i, fold, step))

    part = run_sweep(s, trials, folds=[2, 1], callbacks=SweepCallbacks(prune=prune))
    for w, p in zip(whole.trials, part.trials, strict=True):
        assert p.status == "succeeded" and len(p.fold_scores) == 2
        assert p.fold_scores == pytest.approx(w.fold_scores[1:], abs=1e-4)
        assert p.epochs_trained == 2 * 2
    if vectorize == "auto":
        assert {(i, f, st) for i, f, st in seen if i == 0} == {(0, 1, 3), (0, 1, 4), (0, 2, 5), (0, 2, 6)}
    else:  # trial by trial, each fold's steps follow its cv index (fold × seeds × epochs)
        assert [st for i, _, st in seen if i == 0] == [3, 4, 5, 6]
