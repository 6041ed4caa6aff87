"""Continuous batching: a slot of a stacked group freed by a pruned or finished trial takes the
next trial the search gives (SweepCallbacks.refill), which trains exactly as it would alone
(its own initialization, fresh optimizer state and step count, its own schedule position and
shuffles), starts when it starts (on_start) and ends with its own outcome (on_trial)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from engine_helpers import BASE, make_spec, merge

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.spec import JobSpec
from service.contract.stacking import group_key
from service.contract.sweep_spec import SweepSpec, Trial, expand
from worker.training.data import cv_folds, load_dataset, split_and_standardize
from worker.training.loop import Callbacks, fit
from worker.training.stacked import StackedTrainer
from worker.training.sweep import SweepCallbacks, TrialOutcome, run_sweep

TOL = 1e-4
KEYS = ("train_loss", "penalty", "val_loss", "val_accuracy", "lr")


def _solo_rows(spec: JobSpec, data: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fit(spec, data, None, Callbacks(on_epoch=rows.append))
    return rows


def _close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in KEYS:
            assert ra[k] == pytest.approx(rb[k], rel=TOL, abs=TOL), (ra["epoch"], k)


def test_a_refilled_slot_trains_as_its_trial_alone_with_fresh_adam_state() -> None:
    """Trial 0 is pruned after its second epoch; its slot takes a new trial, which then trains
    beside trial 1 (at its epoch 3) from its own epoch 1: Adam's bias correction restarts with
    its own step count, its cosine schedule from the top, its shuffles from its seed's first."""

    def spec(lr: float, l2: float, seed: int = 0, l1: float = 0.0) -> JobSpec:
        return make_spec(
            optimizer={"name": "adam", "lr": lr, "scheduler": {"type": "cosine"}},
            regularization={"l2": l2, "l1": l1},
            training={"epochs": 5, "batch_size": 32, "device": "cpu", "seed": seed},
        )

    # the new trial brings a term no trial of the group had (L1): the step takes it on
    a, b, new = spec(0.01, 0.0), spec(0.003, 1e-3), spec(0.02, 1e-4, seed=7, l1=1e-3)
    data = split_and_standardize(a, load_dataset(a, None))
    rows: dict[int, list[dict[str, Any]]] = {}
    ended: list[int] = []
    given = [new]
    trainer = StackedTrainer([a, b], data, per_slot_batches=True)
    results = trainer.fit(
        on_epoch=lambda g, r: rows.setdefault(g, []).append(r),
        after_epoch=lambda rnd: [0] if rnd == 2 else [],
        refill=lambda: given.pop() if given else None,
        on_result=lambda g, _r: ended.append(g),
    )
    assert trainer.trials[2] is new and trainer.slots[0] == 2  # in trial 0's slot, in place
    assert ended == [0, 1, 2] and [r.pruned for r in results] == [True, False, False]
    assert len(rows[0]) == 2 and len(rows[1]) == 5 and len(rows[2]) == 5
    _close(rows[1], _solo_rows(b, data))
    _close(rows[2], _solo_rows(new, data))  # its first step is a solo first step, and so on


def _search(cv: int) -> tuple[SweepSpec, list[Trial], list[Trial]]:
    s = SweepSpec.model_validate(
        {
            "base": merge(BASE, {"optimizer": {"name": "adam", "lr": 0.01}, "training": {"epochs": 3}}),
            "grid": {"optimizer.lr": [0.01, 0.003, 0.03, 0.001, 0.02, 0.005]},
            **({"cv_folds": cv} if cv else {}),
        }
    )
    trials = expand(s, BUILTIN_SHAPES[s.base.dataset.name], 10_000_000)
    return s, trials[:2], trials[2:]


@pytest.mark.parametrize("cv", [0, 2], ids=["holdout", "2-fold"])
def test_a_pruned_search_keeps_its_group_full_and_each_trial_is_its_solo_run(cv: int) -> None:
    sweep, first, later = _search(cv)
    key = group_key(first[0].spec)
    events: list[tuple[str, int]] = []
    per_round: list[set[int]] = [set()]
    asked: list[str] = []

    def refill(k: str) -> Trial | None:
        asked.append(k)
        return later.pop(0) if later else None

    def on_epoch(i: int, _fold: int, _step: int, _row: dict[str, Any]) -> None:
        per_round[-1].add(i)

    def prune(i: int, _fold: int, step: int, _row: dict[str, Any]) -> str | None:
        return "rule" if i in (0, 3) and step == 1 else None

    outcomes: list[TrialOutcome] = []
    cb = SweepCallbacks(
        refill=refill,
        on_start=lambda i: events.append(("start", i)),
        on_trial=lambda t: (events.append(("end", t.index)), outcomes.append(t)),
        on_epoch=on_epoch,
        prune=prune,
        after_epoch=lambda: per_round.append(set()),
    )
    out = run_sweep(sweep, first, callbacks=cb)
    assert set(asked) == {key}
    assert [t.index for t in out.trials] == [0, 1, 2, 3, 4, 5]
    assert {t.index: t.status for t in out.trials} == {
        0: "pruned",
        1: "succeeded",
        2: "succeeded",
        3: "pruned",
        4: "succeeded",
        5: "succeeded",
    }
    # the refilled trials start after the group began training, as slots free
    assert events[:2] == [("start", 0), ("start", 1)]
    assert events.index(("start", 2)) > events.index(("end", 0))
    assert events.index(("start", 4)) > events.index(("end", 3))
    # two slots busy every round until the search has nothing more to give
    busy = [len(r) for r in per_round if r]
    assert busy[: busy.index(1)] == [2] * busy.index(1) if 1 in busy else all(n == 2 for n in busy)
    assert sorted(o.index for o in outcomes) == list(range(6))

    spec0 = first[0].spec
    folds = (
        cv_folds(spec0, load_dataset(spec0, None), cv)
        if cv
        else [split_and_standardize(spec0, load_dataset(spec0, None))]
    )
    all_trials = {t.index: t for t in [*first, *_search(cv)[2]]}
    for t in out.trials:
        if t.status != "succeeded":
            assert t.epochs_trained == 1 and t.pruned_at_epoch == 1
            continue
        solo = [_solo_rows(all_trials[t.index].spec, f)[-1]["val_loss"] for f in folds]
        assert t.fold_scores == pytest.approx(solo, rel=TOL, abs=TOL), t.index
        assert t.vectorized and t.epochs_trained == 3 * len(folds)


def test_a_refilled_trial_of_another_kind_trains_after_the_group() -> None:
    sweep, first, later = _search(0)
    doc = later[0].spec.model_dump(mode="json")
    doc["model"]["hidden"] = [8]  # another architecture: another group's key
    other = Trial(index=9, params={"model.hidden": [8]}, spec=JobSpec.model_validate(doc))
    given = [other, later[1]]
    starts: list[int] = []
    cb = SweepCallbacks(
        refill=lambda _k: given.pop(0) if given else None,
        on_start=starts.append,
        prune=lambda i, _f, step, _r: "rule" if i == 0 and step == 1 else None,
    )
    out = run_sweep(sweep, first, callbacks=cb)
    assert [t.index for t in out.trials] == [0, 1, 9, 3]
    assert [t.status for t in out.trials] == ["pruned", "succeeded", "succeeded", "succeeded"]
    assert starts == [0, 1, 3, 9]  # trial 3 took the slot; trial 9 trained after the group
    assert [t.vectorized for t in out.trials] == [True, True, False, True]


def test_a_cancel_stops_a_refilling_group_between_its_epochs() -> None:
    """Iris's epochs are shorter than the steps between cancel checks: a group that keeps
    refilling asks after each of its epochs too."""
    sweep, first, later = _search(0)
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    seen: list[TrialOutcome] = []
    out = run_sweep(
        sweep,
        first,
        callbacks=SweepCallbacks(
            refill=lambda _k: later.pop(0) if later else None,
            should_stop=should_stop,
            on_trial=seen.append,
            prune=lambda i, _f, step, _r: "rule" if i == 0 and step == 1 else None,
        ),
    )
    assert out.status == "cancelled"
    # asked at the start and after rounds 1, 2 and 3: trial 1 ended at round 3 (its last
    # epoch), trial 3 had just taken its slot
    statuses = [(t.index, t.status) for t in out.trials]
    assert statuses == [(0, "pruned"), (1, "succeeded"), (2, "cancelled"), (3, "cancelled")]
    assert [t.index for t in seen] == [0, 1] and len(later) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_refilled_group_keeps_its_captured_graph() -> None:
    """On CUDA the refill writes into the captured tensors in place: the same graph replays
    for the new trial, which trains as it would alone."""

    def spec(lr: float, seed: int) -> JobSpec:
        return make_spec(
            dataset={"name": "digits"},
            model={"type": "mlp", "hidden": [32], "dropout": 0.0},
            optimizer={"name": "adam", "lr": lr},
            training={"epochs": 4, "batch_size": 64, "device": "cuda", "seed": seed},
        )

    a, b, new = spec(0.01, 0), spec(0.003, 0), spec(0.02, 5)
    data = split_and_standardize(a, load_dataset(a, None))
    trainer = StackedTrainer([a, b], data, per_slot_batches=True)
    graphs: list[Any] = []
    rows: dict[int, list[dict[str, Any]]] = {}
    given = [new]

    def after_epoch(rnd: int) -> list[int]:
        graphs.append(trainer.graph)
        return [0] if rnd == 2 else []

    trainer.fit(
        on_epoch=lambda g, r: rows.setdefault(g, []).append(r),
        after_epoch=after_epoch,
        refill=lambda: given.pop() if given else None,
    )
    # rounds 2 to 4: before the refill, with it, and after (then trial 1 ends and the stack of
    # one is repacked, which captures anew)
    assert graphs[1] is not None and graphs[2] is graphs[1] and graphs[3] is graphs[1]
    solo = _solo_rows(new, data)
    for ra, rb in zip(rows[2], solo, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-3, abs=1e-4)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-3, abs=1e-4)
