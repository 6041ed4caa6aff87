"""Sweeps: train every trial of a SweepSpec on every fold, stacked where trials allow, and
score each trial by its objective metric's mean over the folds.

A trial's score on a fold is its objective in the metrics row of the weights it would keep:
the best epoch's row when early stopping restores the best weights, else the last epoch's.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
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
from worker.training.sweep_group import StackedGroup
from worker.training.sweep_trials import (
    Cancelled,
    Progress,
    SweepCallbacks,
    SweepOutcome,
    TrialOutcome,
    kept_row,
    outcome_of,
    replicas,
    summarize,
)

__all__ = ["SweepCallbacks", "SweepOutcome", "TrialOutcome", "run_sweep"]

CPU_MAX_GROUP = 64


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
    folds: Sequence[int] | None = None,
) -> SweepOutcome:
    """`folds_cache` keeps the folds between calls (a search trains one unit of trials per call);
    `dataset_file` is the upload's file, as for load_dataset. `folds`: train only these cv folds
    (indices into cv_folds; None: all), each trial's outcome summarizing over them, its steps
    and reported folds those of the whole (step = fold × epochs + epoch). The outcome lists
    `trials`, then the trials callbacks.refill gave (continuous batching), in the order they
    started."""
    cb = callbacks or SweepCallbacks()
    folds_of: dict[str, list[Prepared]] = {} if folds_cache is None else folds_cache

    def all_folds(spec: Any) -> list[Prepared]:
        key = json.dumps(
            [spec.dataset.model_dump(mode="json"), spec.split.model_dump(mode="json"), spec.model.type]
        )
        if key not in folds_of:
            raw = load_dataset(spec, datasets_dir, dataset_file)
            folds_of[key] = (
                cv_folds(spec, raw, sweep.cv_folds) if sweep.cv_folds else [split_and_standardize(spec, raw)]
            )
        return folds_of[key]

    subset = sorted(set(folds)) if folds is not None else None

    def chosen(spec: Any) -> list[tuple[int, Prepared]]:
        every = all_folds(spec)
        return [(i, every[i]) for i in (subset if subset is not None else range(len(every)))]

    outcomes: dict[int, TrialOutcome] = {}
    started: list[Trial] = []  # those refill gave
    status: Literal["succeeded", "cancelled"] = "succeeded"
    try:
        if sweep.path is not None:
            _run_path(sweep, trials, chosen, cb, outcomes)
        else:
            _run_trials(sweep, trials, chosen, cb, outcomes, started)
    except Cancelled:
        status = "cancelled"
    except DataError as e:
        raise TrainingError(ErrorType.BAD_DATA, str(e)) from None
    every = [*trials, *started]
    for t in every:
        if t.index not in outcomes:
            outcomes[t.index] = TrialOutcome(t.index, t.params, "cancelled")
    done = [o for o in outcomes.values() if o.status == "succeeded" and o.score is not None]
    best = None
    if done:
        sign = 1 if sweep.primary.mode == "min" else -1
        best = min((sign * o.score, o.index) for o in done if o.score is not None)[1]
    return SweepOutcome(status, [outcomes[t.index] for t in every], best)


Folds = Callable[[Any], list[tuple[int, Prepared]]]  # a spec's folds to train: (cv index, data)


def _groups(sweep: SweepSpec, trials: list[Trial], folds: Folds) -> list[list[Trial]]:
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
        size = _max_group([m.spec for m in members], folds(members[0].spec)[0][1])
        groups += [members[i : i + size] for i in range(0, len(members), size)]
    return groups + solo


def _run_trials(
    sweep: SweepSpec,
    trials: list[Trial],
    folds: Folds,
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
    started: list[Trial],
) -> None:
    """Each group of compatible trials on every fold, all seeds of a trial stacked with it; a
    stacked group is kept full with the trials cb.refill gives (sweep_group.StackedGroup).
    After each epoch the sweep's pruner (cb.prune) may stop a trial: its seeds stop training
    and it skips the remaining folds. Each trial's outcome goes to cb.on_trial as it ends."""
    groups = _groups(sweep, trials, folds)
    other_kind: list[Trial] = []  # refilled trials of another group's kind: after the groups
    g = 0
    while g < len(groups) or other_kind:
        if g == len(groups):
            groups += _groups(sweep, other_kind, folds)
            other_kind = []
        group = groups[g]
        reason = cb.budget()
        if reason is not None:
            for t in [*(t for rest in groups[g:] for t in rest), *other_kind]:
                outcomes[t.index] = TrialOutcome(t.index, t.params, "cancelled", reason=reason)
                cb.on_trial(outcomes[t.index])
            return
        g += 1
        stacked = sweep.vectorize is not False and (len(group) > 1 or sweep.seeds > 1)
        if stacked and not not_stackable(group[0].spec):
            StackedGroup(sweep, group, folds(group[0].spec), cb, outcomes, started, other_kind).run()
        else:
            for t in group:
                _run_alone(sweep, t, folds(t.spec), cb, outcomes)


def _run_alone(
    sweep: SweepSpec,
    t: Trial,
    folds: list[tuple[int, Prepared]],
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
) -> None:
    """One trial with the loop, fold by fold, seed by seed."""
    p = Progress()
    failed: dict[str, Any] | None = None
    epochs = t.spec.training.epochs
    started = False
    for n, (fold, data) in enumerate(folds):
        if cb.should_stop():
            raise Cancelled
        if p.pruned is not None or failed is not None:
            break
        if not started:
            cb.on_start(t.index)
            started = True
        for k, spec in enumerate(replicas(sweep, t.spec)):
            if p.pruned is not None:
                break
            last = n == len(folds) - 1 and k == sweep.seeds - 1
            try:
                _fit_solo(t, spec, p, (fold * sweep.seeds + k) * epochs, data, cb, last)
            except TrainingError as e:
                failed = e.to_dict()
                break
    outcomes[t.index] = outcome_of(sweep, t, p, failed, vectorized=False)
    cb.on_trial(outcomes[t.index])


def _fit_solo(
    t: Trial, spec: JobSpec, p: Progress, offset: int, data: Prepared, cb: SweepCallbacks, last: bool
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
        raise Cancelled
    by_epoch = {r["epoch"]: r for r in seen}
    p.rows.append(kept_row(spec, by_epoch.get(out.best_epoch or -1, {}), seen[-1] if seen else {}))
    p.best_epochs.append(out.best_epoch)


def _run_path(
    sweep: SweepSpec,
    trials: list[Trial],
    folds: Folds,
    cb: SweepCallbacks,
    outcomes: dict[int, TrialOutcome],
) -> None:
    """Walk λ from the first value to the last, each step starting from the previous weights.
    A step that fails (diverges) fails alone; the walk goes on from the last good weights."""
    rows: dict[int, list[dict[str, Any]]] = {t.index: [] for t in trials}
    best_epochs: dict[int, list[int | None]] = {t.index: [] for t in trials}
    failed: dict[int, dict[str, Any]] = {}
    for _, data in folds(trials[0].spec):
        weights: dict[str, torch.Tensor] | None = None
        for t in trials:
            if cb.should_stop():
                raise Cancelled
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
                raise Cancelled
            weights = {k: v.detach().clone() for k, v in out.model.state_dict().items()}
            by_epoch = {r["epoch"]: r for r in seen}
            rows[t.index].append(kept_row(t.spec, by_epoch.get(out.best_epoch or -1, {}), seen[-1]))
            best_epochs[t.index].append(out.best_epoch)
    for t in trials:
        if t.index in failed:
            outcomes[t.index] = TrialOutcome(t.index, t.params, "failed", error=failed[t.index])
        else:
            outcomes[t.index] = summarize(sweep, t, rows[t.index], best_epochs[t.index], False)
        cb.on_trial(outcomes[t.index])
