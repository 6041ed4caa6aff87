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

from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from service.contract.stacking import group_key, not_stackable
from service.contract.sweep_spec import SweepSpec, Trial
from service.data.datafile import DataError
from worker.training.data import Prepared, cv_folds, load_dataset, split_and_standardize
from worker.training.errors import TrainingError
from worker.training.loop import Callbacks, fit, resolve_device
from worker.training.stacked import StackedTrainer

CPU_MAX_GROUP = 64


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
    # `budget` is asked before each group: the trials of the groups not started then end
    # cancelled, with that reason. `halt` is asked after an epoch that leaves more to train
    # (not after a trial's last): the running trials then end pruned, with that reason.
    budget: Callable[[], str | None] = lambda: None
    halt: Callable[[], str | None] = lambda: None


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
    dataset_file: Path | None = None,
    callbacks: SweepCallbacks | None = None,
    folds_cache: dict[str, list[Prepared]] | None = None,
) -> SweepOutcome:
    """`folds_cache` keeps the folds between calls (a search trains one unit of trials per call);
    `dataset_file` is the upload's file, as for load_dataset."""
    cb = callbacks or SweepCallbacks()
    folds_of: dict[str, list[Prepared]] = {} if folds_cache is None else folds_cache

    def folds(spec: Any) -> list[Prepared]:
        key = json.dumps(
            [spec.dataset.model_dump(mode="json"), spec.split.model_dump(mode="json"), spec.model.type]
        )
        if key not in folds_of:
            raw = load_dataset(spec, datasets_dir, dataset_file)
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
        raise TrainingError(ErrorType.BAD_DATA, str(e)) from None
    for t in trials:
        if t.index not in outcomes:
            outcomes[t.index] = TrialOutcome(t.index, t.params, "cancelled")
    done = [o for o in outcomes.values() if o.status == "succeeded" and o.score is not None]
    best = None
    if done:
        sign = 1 if sweep.primary.mode == "min" else -1
        best = min((sign * o.score, o.index) for o in done if o.score is not None)[1]
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


def _replicas(sweep: SweepSpec, spec: JobSpec) -> list[JobSpec]:
    """The configuration trained under `seeds` seeds: seed, seed + 1, ... (stacked together)."""
    if sweep.seeds == 1:
        return [spec]
    out = []
    for k in range(sweep.seeds):
        doc = spec.model_dump(mode="json")
        doc["training"]["seed"] = spec.training.seed + k
        out.append(JobSpec.model_validate(doc))
    return out


def _mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics rows of one epoch of a configuration's seeds, averaged."""
    if len(rows) == 1:
        return rows[0]
    out: dict[str, Any] = {}
    for k, v in rows[0].items():
        nums = [float(x) for r in rows if isinstance(x := r.get(k), int | float) and not isinstance(x, bool)]
        out[k] = statistics.fmean(nums) if len(nums) == len(rows) else v
    return out


@dataclass
class _Progress:
    """What one trial has trained so far across folds and seeds."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # kept row per (fold, seed)
    best_epochs: list[int | None] = field(default_factory=list)
    epochs: int = 0
    pruned: tuple[int, str] | None = None  # (step, reason)
    last: dict[str, Any] = field(default_factory=dict)


def _run_trials(
    sweep: SweepSpec,
    trials: list[Trial],
    folds: Callable[[Any], list[Prepared]],
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
) -> None:
    """Each group of compatible trials on every fold, all seeds of a trial stacked with it.
    After each epoch the sweep's pruner (cb.on_epoch) may stop a trial: its seeds stop training
    and it skips the remaining folds."""
    groups = _groups(sweep, trials, folds)
    for g, group in enumerate(groups):
        reason = cb.budget()
        if reason is not None:
            for t in (t for rest in groups[g:] for t in rest):
                outcomes[t.index] = TrialOutcome(t.index, t.params, "cancelled", reason=reason)
                cb.on_trial(outcomes[t.index])
            return
        reps = {t.index: _replicas(sweep, t.spec) for t in group}
        prog = {t.index: _Progress() for t in group}
        failed: dict[int, dict[str, Any]] = {}
        stacked = sweep.vectorize is not False and (len(group) > 1 or sweep.seeds > 1)
        epochs = group[0].spec.training.epochs
        n_folds = len(folds(group[0].spec))
        for fold, data in enumerate(folds(group[0].spec)):
            if cb.should_stop():
                raise _Cancelled
            alive = [t for t in group if prog[t.index].pruned is None and t.index not in failed]
            if not alive:
                break
            if stacked and not not_stackable(group[0].spec):
                _fit_stacked(sweep, alive, reps, prog, fold, epochs, data, cb, fold == n_folds - 1)
                continue
            for t in alive:
                for k, spec in enumerate(reps[t.index]):
                    if prog[t.index].pruned is not None:
                        break
                    last = fold == n_folds - 1 and k == len(reps[t.index]) - 1
                    try:
                        _fit_solo(t, spec, prog[t.index], (fold * sweep.seeds + k) * epochs, data, cb, last)
                    except TrainingError as e:
                        failed[t.index] = e.to_dict()
                        break
        for t in group:
            p = prog[t.index]
            if t.index in failed:
                outcome = TrialOutcome(
                    t.index, t.params, "failed", error=failed[t.index], epochs_trained=p.epochs
                )
            elif p.pruned is not None:
                outcome = TrialOutcome(
                    t.index,
                    t.params,
                    "pruned",
                    metrics={k: v for k, v in p.last.items() if isinstance(v, int | float)},
                    vectorized=stacked,
                    epochs_trained=p.epochs,
                    pruned_at_epoch=p.pruned[0],
                    reason=p.pruned[1],
                )
            else:
                outcome = _summarize(sweep, t, p.rows, p.best_epochs, stacked)
                outcome.epochs_trained = p.epochs
            outcomes[t.index] = outcome
            cb.on_trial(outcome)


def _fit_stacked(
    sweep: SweepSpec,
    alive: list[Trial],
    reps: dict[int, list[JobSpec]],
    prog: dict[int, _Progress],
    fold: int,
    epochs: int,
    data: Prepared,
    cb: SweepCallbacks,
    last_fold: bool,
) -> None:
    slots = [(t, spec) for t in alive for spec in reps[t.index]]
    seen: dict[int, list[dict[str, Any]]] = {}

    def on_epoch(g: int, row: dict[str, Any]) -> None:
        t = slots[g][0]
        prog[t.index].epochs += 1
        seen.setdefault(t.index, []).append(row)

    def after_epoch(epoch: int) -> list[int]:
        stop: set[int] = set()
        step = fold * epochs + epoch
        for index, rows in seen.items():
            prog[index].last = _mean_row(rows)
            cb.on_epoch(index, fold, step, prog[index].last)
        halt = cb.halt() if epoch < epochs or not last_fold else None
        for index in seen:
            reason = halt or cb.prune(index, fold, step, prog[index].last)
            if reason is not None:
                prog[index].pruned = (step, reason)
                stop.add(index)
        seen.clear()
        cb.after_epoch()
        return [g for g, (t, _) in enumerate(slots) if t.index in stop]

    results = StackedTrainer([spec for _, spec in slots], data).fit(
        on_epoch=on_epoch, should_stop=cb.should_stop, after_epoch=after_epoch
    )
    if cb.should_stop():
        raise _Cancelled
    for (t, spec), r in zip(slots, results, strict=True):
        if prog[t.index].pruned is None:
            prog[t.index].rows.append(_kept_row(spec, r.best_metrics, r.last_metrics))
            prog[t.index].best_epochs.append(r.best_epoch)


def _fit_solo(
    t: Trial, spec: JobSpec, p: _Progress, offset: int, data: Prepared, cb: SweepCallbacks, last: bool
) -> None:
    """One seed of one trial on one fold (`last`: the trial's last one); TrainingError when it
    fails."""
    seen: list[dict[str, Any]] = []

    def on_epoch(row: dict[str, Any]) -> None:
        seen.append(row)
        p.epochs += 1
        p.last = row
        cb.on_epoch(t.index, 0, offset + row["epoch"], row)
        more = row["epoch"] < spec.training.epochs or not last
        reason = (cb.halt() if more else None) or cb.prune(t.index, 0, offset + row["epoch"], row)
        cb.after_epoch()
        if reason is not None:
            p.pruned = (offset + row["epoch"], reason)

    out = fit(
        spec,
        data,
        None,
        Callbacks(on_epoch=on_epoch, should_stop=lambda: cb.should_stop() or p.pruned is not None),
    )
    if p.pruned is not None:
        return
    if out.status == "cancelled":
        raise _Cancelled
    by_epoch = {r["epoch"]: r for r in seen}
    p.rows.append(_kept_row(spec, by_epoch.get(out.best_epoch or -1, {}), seen[-1] if seen else {}))
    p.best_epochs.append(out.best_epoch)


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
