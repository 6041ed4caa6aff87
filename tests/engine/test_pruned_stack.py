"""Pruning inside a stacked group: a pruned trial leaves the stack (its slice is dropped and the
group repacked), so it stops costing compute, and the trials left train exactly as before."""

from __future__ import annotations

from typing import Any

import pytest
from engine_helpers import BASE, make_spec, merge

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.sweep_spec import SweepSpec, Trial, expand
from worker.training.data import load_dataset, split_and_standardize
from worker.training.stacked import StackedTrainer
from worker.training.sweep import SweepCallbacks, run_sweep

TOL = 1e-4


def _specs() -> list[Any]:
    return [
        make_spec(
            model={"type": "mlp", "hidden": [16], "dropout": 0.0},
            optimizer={"name": "adam", "lr": lr},
            regularization={"l2": l2},
            training={"epochs": 6, "batch_size": 64, "device": "cpu"},
        )
        for lr, l2 in ((0.01, 0.0), (0.003, 1e-4), (0.001, 1e-3), (0.02, 1e-5))
    ]


def test_pruned_slices_leave_the_stack_and_the_rest_train_as_before() -> None:
    specs = _specs()
    data = split_and_standardize(specs[0], load_dataset(specs[0], None))
    full_rows: list[list[dict[str, Any]]] = [[] for _ in specs]
    full = StackedTrainer(specs, data).fit(on_epoch=lambda g, r: full_rows[g].append(r))

    rows: list[list[dict[str, Any]]] = [[] for _ in specs]
    sizes: list[int] = []
    trainer = StackedTrainer(specs, data)

    def after_epoch(epoch: int) -> list[int]:
        sizes.append(trainer.G)
        return [0, 2] if epoch == 2 else []

    pruned = trainer.fit(on_epoch=lambda g, r: rows[g].append(r), after_epoch=after_epoch)
    assert sizes == [4, 4, 2, 2, 2, 2]  # from epoch 3 on, the stack holds the 2 trials left
    assert [r.pruned for r in pruned] == [True, False, True, False]
    assert [len(r) for r in rows] == [2, 6, 2, 6] and pruned[0].epochs_completed == 2
    for g in range(4):
        for a, b in zip(rows[g], full_rows[g][: len(rows[g])], strict=True):
            for k in ("train_loss", "val_loss", "val_accuracy", "weight_l2_norm"):
                assert a[k] == pytest.approx(b[k], rel=TOL, abs=TOL), (g, a["epoch"], k)
    for g in (1, 3):
        for k, v in full[g].test_metrics.items():
            assert pruned[g].test_metrics[k] == pytest.approx(v, rel=TOL, abs=TOL)
    assert pruned[0].test_metrics  # taken before its slice left the stack


def test_a_sweep_prunes_through_its_callbacks_and_skips_the_next_folds() -> None:
    sweep = SweepSpec.model_validate(
        {
            "base": merge(BASE, {"model": {"type": "mlp", "hidden": [8]}, "training": {"epochs": 3}}),
            "grid": {"optimizer.lr": [0.001, 0.01, 0.1]},
            "cv_folds": 2,
            "seeds": 2,
        }
    )
    trials: list[Trial] = expand(sweep, BUILTIN_SHAPES[sweep.base.dataset.name], 10_000_000)
    seen: list[tuple[int, int, int]] = []

    def prune(index: int, fold: int, step: int, row: dict[str, Any]) -> str | None:
        seen.append((index, fold, step))
        return "test rule" if index == 0 and step == 2 else None

    out = run_sweep(sweep, trials, callbacks=SweepCallbacks(prune=prune))
    first, *rest = out.trials
    assert first.status == "pruned" and first.pruned_at_epoch == 2 and first.reason == "test rule"
    assert first.epochs_trained == 2 * 2  # two seeds, two epochs
    assert all(t.status == "succeeded" and t.epochs_trained == 3 * 2 * 2 for t in rest)
    assert all(len(t.fold_scores) == 4 for t in rest)  # folds × seeds
    assert (0, 1, 4) not in seen and (1, 1, 6) in seen  # steps run on across folds
