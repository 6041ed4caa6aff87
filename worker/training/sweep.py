"""Sweeps: train every trial of a SweepSpec on every fold, stacked where trials allow, and
score each trial by its objective metric's mean over the folds.

A trial's score on a fold is its objective in the metrics row of the weights it would keep:
the best epoch's row when early stopping restores the best weights, else the last epoch's.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from service.datafile import DataError
from service.stacking import group_key, not_stackable
from service.sweep_spec import SweepSpec, Trial
from worker.training.data import Prepared, cv_folds, load_dataset, split_and_standardize
from worker.training.errors import TrainingError
from worker.training.loop import Callbacks, fit, resolve_device
from worker.training.stacked import StackedTrainer

CPU_MAX_GROUP = 64


@dataclass
class TrialOutcome:
    index: int
    params: dict[str, Any]
    status: Literal["succeeded", "failed", "cancelled"]
    metrics: dict[str, float] = field(default_factory=dict)  # fold means of the kept row, + score_std
    score: float | None = None
    fold_scores: list[float] = field(default_factory=list)
    best_epoch: float | None = None  # mean over folds
    vectorized: bool = False
    error: dict[str, Any] | None = None


@dataclass
class SweepCallbacks:
    on_trial: Callable[[TrialOutcome], None] = lambda _t: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class SweepOutcome:
    status: Literal["succeeded", "cancelled"]
    trials: list[TrialOutcome]
    best_index: int | None


class _Cancelled(Exception):
    pass


def _kept_row(spec: Any, best: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    es = spec.training.early_stopping
    return best if (es and es.restore_best and best) else last


def _summarize(
    sweep: SweepSpec,
    trial: Trial,
    rows: list[dict[str, Any]],
    best_epochs: list[int | None],
    vectorized: bool,
) -> TrialOutcome:
    metric = sweep.objective.metric
    scores = [r.get(metric) for r in rows]
    if not rows or any(s is None or not math.isfinite(s) for s in scores):
        return TrialOutcome(
            trial.index,
            trial.params,
            "failed",
            vectorized=vectorized,
            error={"type": "diverged", "message": f"{metric} was not finite on every fold"},
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


def _max_group(specs: list[Any], data: Prepared) -> int:
    device = resolve_device(specs[0].training.device)
    if device.type != "cuda":
        return CPU_MAX_GROUP
    # weights, gradients and two optimizer slots per trial, plus the activations of a batch
    hidden = getattr(specs[0].model, "hidden", [])
    widths = [data.shape.n_features, *hidden, data.shape.n_outputs]
    params = sum(a * b + b for a, b in itertools.pairwise(widths))
    per_trial = 4 * (4 * params + 4 * specs[0].training.batch_size * sum(widths))
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(1024, int(0.5 * free // max(per_trial, 1))))


def run_sweep(
    sweep: SweepSpec,
    trials: list[Trial],
    *,
    datasets_dir: Path | None = None,
    callbacks: SweepCallbacks | None = None,
) -> SweepOutcome:
    cb = callbacks or SweepCallbacks()
    folds_of: dict[str, list[Prepared]] = {}

    def folds(spec: Any) -> list[Prepared]:
        key = json.dumps(
            [spec.dataset.model_dump(mode="json"), spec.split.model_dump(mode="json"), spec.model.type]
        )
        if key not in folds_of:
            raw = load_dataset(spec, datasets_dir)
            folds_of[key] = (
                cv_folds(spec, raw, sweep.cv_folds) if sweep.cv_folds else [split_and_standardize(spec, raw)]
            )
        return folds_of[key]

    outcomes: dict[int, TrialOutcome] = {}
    status: Literal["succeeded", "cancelled"] = "succeeded"
    try:
        if sweep.path is not None:
            _run_path(sweep, trials, folds, cb, outcomes)
        else:
            _run_trials(sweep, trials, folds, cb, outcomes)
    except _Cancelled:
        status = "cancelled"
    except DataError as e:
        raise TrainingError("bad_data", str(e)) from None
    for t in trials:
        if t.index not in outcomes:
            outcomes[t.index] = TrialOutcome(t.index, t.params, "cancelled")
    done = [o for o in outcomes.values() if o.status == "succeeded" and o.score is not None]
    best = None
    if done:
        sign = 1 if sweep.objective.mode == "min" else -1
        best = min(done, key=lambda o: (sign * o.score, o.index)).index  # type: ignore[operator]
    return SweepOutcome(status, [outcomes[t.index] for t in trials], best)


def _groups(
    sweep: SweepSpec, trials: list[Trial], folds: Callable[[Any], list[Prepared]]
) -> list[list[Trial]]:
    if sweep.vectorize is False:
        return [[t] for t in trials]
    by_key: dict[str, list[Trial]] = {}
    solo: list[list[Trial]] = []
    for t in trials:
        if not_stackable(t.spec):
            solo.append([t])
        else:
            by_key.setdefault(group_key(t.spec), []).append(t)
    groups: list[list[Trial]] = []
    for members in by_key.values():
        size = _max_group([m.spec for m in members], folds(members[0].spec)[0])
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return groups + solo


def _run_trials(
    sweep: SweepSpec,
    trials: list[Trial],
    folds: Callable[[Any], list[Prepared]],
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
) -> None:
    for group in _groups(sweep, trials, folds):
        rows: dict[int, list[dict[str, Any]]] = {t.index: [] for t in group}
        best_epochs: dict[int, list[int | None]] = {t.index: [] for t in group}
        failed: dict[int, dict[str, Any]] = {}
        stacked = len(group) > 1
        for data in folds(group[0].spec):
            if cb.should_stop():
                raise _Cancelled
            if stacked:
                results = StackedTrainer([t.spec for t in group], data).fit(should_stop=cb.should_stop)
                if cb.should_stop():
                    raise _Cancelled
                for t, r in zip(group, results, strict=True):
                    rows[t.index].append(_kept_row(t.spec, r.best_metrics, r.last_metrics))
                    best_epochs[t.index].append(r.best_epoch)
                continue
            t = group[0]
            seen: list[dict[str, Any]] = []
            try:
                out = fit(t.spec, data, None, Callbacks(on_epoch=seen.append, should_stop=cb.should_stop))
            except TrainingError as e:
                failed[t.index] = e.to_dict()
                break
            if out.status == "cancelled":
                raise _Cancelled
            by_epoch = {r["epoch"]: r for r in seen}
            rows[t.index].append(
                _kept_row(t.spec, by_epoch.get(out.best_epoch or -1, {}), seen[-1] if seen else {})
            )
            best_epochs[t.index].append(out.best_epoch)
        for t in group:
            if t.index in failed:
                outcome = TrialOutcome(t.index, t.params, "failed", error=failed[t.index])
            else:
                outcome = _summarize(sweep, t, rows[t.index], best_epochs[t.index], stacked)
            outcomes[t.index] = outcome
            cb.on_trial(outcome)


def _run_path(
    sweep: SweepSpec,
    trials: list[Trial],
    folds: Callable[[Any], list[Prepared]],
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
) -> None:
    """Walk λ from the first value to the last, each step starting from the previous weights.
    A step that fails (diverges) fails alone; the walk goes on from the last good weights."""
    rows: dict[int, list[dict[str, Any]]] = {t.index: [] for t in trials}
    best_epochs: dict[int, list[int | None]] = {t.index: [] for t in trials}
    failed: dict[int, dict[str, Any]] = {}
    for data in folds(trials[0].spec):
        weights: dict[str, torch.Tensor] | None = None
        for t in trials:
            if cb.should_stop():
                raise _Cancelled
            if t.index in failed:
                continue
            seen: list[dict[str, Any]] = []
            try:
                out = fit(
                    t.spec,
                    data,
                    None,
                    Callbacks(on_epoch=seen.append, should_stop=cb.should_stop),
                    init_weights=weights,
                )
            except TrainingError as e:
                failed[t.index] = e.to_dict()
                continue
            if out.status == "cancelled":
                raise _Cancelled
            weights = {k: v.detach().clone() for k, v in out.model.state_dict().items()}
            by_epoch = {r["epoch"]: r for r in seen}
            rows[t.index].append(_kept_row(t.spec, by_epoch.get(out.best_epoch or -1, {}), seen[-1]))
            best_epochs[t.index].append(out.best_epoch)
    for t in trials:
        if t.index in failed:
            outcomes[t.index] = TrialOutcome(t.index, t.params, "failed", error=failed[t.index])
        else:
            outcomes[t.index] = _summarize(sweep, t, rows[t.index], best_epochs[t.index], False)
        cb.on_trial(outcomes[t.index])
