"""What a sweep knows of each trial: its callbacks, its progress across folds and seeds, and its
outcome (worker.training.sweep re-exports the public names)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from service.contract.sweep_spec import SweepSpec, Trial


@dataclass
class TrialOutcome:
    index: int
    params: dict[str, Any]
    status: Literal["succeeded", "failed", "cancelled", "pruned"]
    metrics: dict[str, float] = field(default_factory=dict)  # fold means of the kept row, + score_std
    score: float | None = None
    fold_scores: list[float] = field(default_factory=list)
    best_epoch: float | None = None  # mean over folds
    vectorized: bool = False
    error: dict[str, Any] | None = None
    epochs_trained: int = 0  # summed over folds and seeds
    pruned_at_epoch: int | None = None
    reason: str | None = None


def _no_report(_index: int, _fold: int, _step: int, _row: dict[str, Any]) -> None:
    return None


def _no_prune(_index: int, _fold: int, _step: int, _row: dict[str, Any]) -> str | None:
    return None


@dataclass
class SweepCallbacks:
    on_trial: Callable[[TrialOutcome], None] = lambda _t: None
    should_stop: Callable[[], bool] = lambda: False
    # After each epoch of a trial (its seeds' rows averaged): (trial index, fold, step = epochs
    # of this configuration so far across folds, row). on_epoch is told of every trial of the
    # epoch first; then prune answers for each a reason to stop it, or None.
    on_epoch: Callable[[int, int, int, dict[str, Any]], None] = _no_report
    prune: Callable[[int, int, int, dict[str, Any]], str | None] = _no_prune
    after_epoch: Callable[[], None] = lambda: None  # once per epoch of a group (flush progress)
    # The sweep's budget (contract/sweep_budget.py): a reason once it is reached, else None.
    # `budget` is asked before each group and before each refill: the trials of the groups not
    # started then end cancelled, with that reason. `halt` is asked after an epoch that leaves
    # more to train (not after a trial's last): the running trials then end pruned, with it.
    budget: Callable[[], str | None] = lambda: None
    halt: Callable[[], str | None] = lambda: None
    # Continuous batching: the next trial to train in a freed slot of a stacked group, or None
    # (nothing more to ask now). Called with the group's key (service.contract.stacking.
    # group_key of its trials' specs) only when a slot frees in a stacked (vectorized) group;
    # the trial should have that key (one with another key trains after the group, in a group
    # of its own kind). Trial indices must be unique within the run_sweep call.
    refill: Callable[[str], Trial | None] = lambda _key: None
    # A trial (by index) starts training now: its own started_at.
    on_start: Callable[[int], None] = lambda _i: None


@dataclass
class SweepOutcome:
    status: Literal["succeeded", "cancelled"]
    trials: list[TrialOutcome]  # the trials passed, then those refill gave, in the order they started
    best_index: int | None


class Cancelled(Exception):
    pass


@dataclass
class Progress:
    """What one trial has trained so far across folds and seeds."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # kept row per (fold, seed)
    best_epochs: list[int | None] = field(default_factory=list)
    epochs: int = 0
    pruned: tuple[int, str] | None = None  # (step, reason)
    last: dict[str, Any] = field(default_factory=dict)


def kept_row(spec: Any, best: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    es = spec.training.early_stopping
    return best if (es and es.restore_best and best) else last


def summarize(
    sweep: SweepSpec,
    trial: Trial,
    rows: list[dict[str, Any]],
    best_epochs: list[int | None],
    vectorized: bool,
) -> TrialOutcome:
    metric = sweep.primary.metric
    scores = [float(s) for r in rows if (s := r.get(metric)) is not None and math.isfinite(s)]
    if not rows or len(scores) < len(rows):
        return TrialOutcome(
            trial.index,
            trial.params,
            "failed",
            vectorized=vectorized,
            error={"type": ErrorType.DIVERGED, "message": f"{metric} was not finite on every fold"},
        )
    keys = [
        k
        for k, v in rows[0].items()
        if isinstance(v, int | float) and k not in ("epoch", "seconds", "samples_per_second")
    ]
    metrics = {k: statistics.fmean(float(r[k]) for r in rows if r.get(k) is not None) for k in keys}
    metrics[f"{metric}_std"] = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    epochs = [e for e in best_epochs if e is not None]
    return TrialOutcome(
        trial.index,
        trial.params,
        "succeeded",
        metrics=metrics,
        score=statistics.fmean(scores),
        fold_scores=[float(s) for s in scores],
        best_epoch=statistics.fmean(epochs) if epochs else None,
        vectorized=vectorized,
    )


def outcome_of(
    sweep: SweepSpec, t: Trial, p: Progress, failed: dict[str, Any] | None, vectorized: bool
) -> TrialOutcome:
    """A trial's outcome from what it trained: failed, pruned (its last row's metrics), or
    scored over its folds."""
    if failed is not None:
        return TrialOutcome(t.index, t.params, "failed", error=failed, epochs_trained=p.epochs)
    if p.pruned is not None:
        return TrialOutcome(
            t.index,
            t.params,
            "pruned",
            metrics={k: v for k, v in p.last.items() if isinstance(v, int | float)},
            vectorized=vectorized,
            epochs_trained=p.epochs,
            pruned_at_epoch=p.pruned[0],
            reason=p.pruned[1],
        )
    outcome = summarize(sweep, t, p.rows, p.best_epochs, vectorized)
    outcome.epochs_trained = p.epochs
    return outcome


def replicas(sweep: SweepSpec, spec: JobSpec) -> list[JobSpec]:
    """The configuration trained under `seeds` seeds: seed, seed + 1, ... (stacked together)."""
    if sweep.seeds == 1:
        return [spec]
    out = []
    for k in range(sweep.seeds):
        doc = spec.model_dump(mode="json")
        doc["training"]["seed"] = spec.training.seed + k
        out.append(JobSpec.model_validate(doc))
    return out


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics rows of one epoch of a configuration's seeds, averaged."""
    if len(rows) == 1:
        return rows[0]
    out: dict[str, Any] = {}
    for k, v in rows[0].items():
        nums = [float(x) for r in rows if isinstance(x := r.get(k), int | float) and not isinstance(x, bool)]
        out[k] = statistics.fmean(nums) if len(nums) == len(rows) else v
    return out
