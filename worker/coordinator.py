"""A sweep's coordinator: the worker that holds the sweep's lease splits the sweep's trials into
units (a batch trained together, stacked where it allows), queues each as a leased row with a
message on the sweep's queue, and trains units itself while any are queued, so that one worker
alone still runs the whole sweep and every other worker on the queue takes a share.

A grid's or random sweep's units are all written at once, as many as the live workers on the
sweep's queue can take. A search's are queued as the sweep runs, one for each live worker, and
each asks its own trials from the sampler as it starts and as its stacked groups' slots free
(worker/unit_task.py), so the sampler learns from every trial that has ended before it proposes
the next. A coordinator
that dies costs nothing: the reaper hands the sweep to another worker, which finds the units
written and goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from optuna.trial import TrialState

from service.contract import sweep_budget
from service.contract.errors import ErrorType
from service.contract.sweep_outcome import internal_failure
from service.contract.sweep_spec import SweepSpec, planned_trials, trial_count
from service.queue.broker import queue_name
from service.store.sweeps import TRIAL_FINISHED
from worker import unit_task
from worker.runtime import Runtime
from worker.search import DEFAULT_PARALLEL, end_running_trials, open_study, storage

log = logging.getLogger("regtrain.worker")

LOOKAHEAD = 2  # a search's units queued or running ahead of its workers, where units do not refill
LIVE_BEATS = 3  # a worker silent for this many heartbeats is not counted on (fleet_size)
POLL_S = 0.1  # how often a coordinator with nothing to train looks at the units others hold

Send = Callable[[str, str], None]  # (unit id, queue): ring the broker for a unit


def coordinate(
    rt: Runtime, sweep: SweepSpec, sweep_id: str, queue: str, should_stop: Callable[[], bool], send: Send
) -> str:
    """Run the sweep's units to their end: "succeeded" once every unit has ended and a search
    has asked all its trials (or its budget stopped it: `stopped_by` is written), or
    "cancelled" when the sweep's lease says stop. A unit (or a trial) that failed `internal`
    fails the sweep (TrainingError internal, naming it), at once: contract/sweep_outcome.py
    says why."""
    units, store, owner, s = rt.units, rt.store, rt.name, rt.settings
    workers = fleet_size(rt, queue)
    top_up: Callable[[], bool]
    if sweep.space is None:
        planned = {i for u in units.of([sweep_id])[sweep_id] for i in u["trials"]}
        left = [
            r["trial_index"]
            for r in store.trials([sweep_id])[sweep_id]
            if r["trial_index"] not in planned and r["status"] not in TRIAL_FINISHED
        ]
        # budget.max_trials: the first trials start, the others end cancelled, untrained
        left = left[: max(planned_trials(sweep) - len(planned), 0)]
        size = grid_unit_size(sweep, len(left), workers)
        one_gpu_group = sweep.parallel is None and queue == queue_name(s, "gpu")
        if one_gpu_group:
            # One GPU trains a stacked group of hundreds of trials about as fast as a few: a
            # GPU grid stays one unit (one group as large as the device holds) unless
            # `parallel` asks to spread it.
            size = max(len(left), 1)
        chunks = [left[i : i + size] for i in range(0, len(left), size)]
        parts: list[list[int] | None] = [None] if one_gpu_group else fold_parts(sweep, len(chunks), workers)
        log.info("sweep %s: %d trials in units of %d × %d fold sets", sweep_id, len(left), size, len(parts))
        for uid in (
            units.add(sweep_id, owner, queue, [c for c in chunks for _ in parts], folds=parts * len(chunks))
            or []
        ):
            send(uid, queue)
        if planned_trials(sweep) < trial_count(sweep):
            units.stop(sweep_id, owner, None, sweep_budget.trial_reason("max_trials"), queued_units=False)

        def top_up() -> bool:
            return True  # all planned

    else:
        # The study is made by the first unit that opens it (worker/search.py open_study):
        # nothing here stands between the sweep's message and its first unit.
        size = unit_size(sweep, planned_trials(sweep), workers)

        refills = unit_task.engine_refills() and sweep.vectorize is not False  # groups to refill

        def top_up() -> bool:
            """Queue units for the workers to take while the search has trials to ask; True
            once every trial has been asked. A unit asks its own trials as it starts, and a
            stacked group's freed slots as they free (worker/unit_task.py: the sampler then
            learns from every trial ended before it proposes the next), so a unit is queued
            for each live worker that holds none of this sweep's, plus one ready for the next
            worker to free up where the engine does not refill (LOOKAHEAD): never more than
            the trials left to ask would fill."""
            # at most the grid sampler's combinations, for a sweep stored before they were
            # clamped, and at most the budget's max_trials
            left = planned_trials(sweep) - units.asked(sweep_id)
            if left <= 0:
                return True
            counts = units.counts(sweep_id)
            queued, running = counts.get("queued", 0), counts.get("running", 0)
            ahead = max(workers - running, 0 if refills else LOOKAHEAD - 1)
            more = min(ahead, math.ceil(left / size)) - queued
            for uid in (
                (units.add(sweep_id, owner, queue, [[] for _ in range(more)]) or []) if more > 0 else []
            ):
                send(uid, queue)
            return False

    stopped = False
    while True:
        if should_stop():
            return "cancelled"
        stopped = stopped or _budget_reached(rt, sweep, sweep_id)
        all_asked = stopped or top_up()
        claim = units.claim_next(sweep_id, owner, s.lease_seconds, s.max_attempts)
        if claim is not None:
            unit_task.train_claimed(rt, claim)
            continue
        counts = units.counts(sweep_id)
        if counts.get("failed"):
            _fail_on_internal(units.of([sweep_id])[sweep_id], None)
        if all_asked and not counts.get("queued") and not counts.get("running"):
            _fail_on_internal(units.of([sweep_id])[sweep_id], store.trials([sweep_id])[sweep_id])
            if not stopped and planned_trials(sweep) < trial_count(sweep):
                assert sweep.budget is not None  # planned_trials is lower only with max_trials
                detail = sweep_budget.max_trials_detail(sweep.budget, trial_count(sweep))
                stop = sweep_budget.stopped_by("max_trials", datetime.now(UTC), detail)
                units.stop(sweep_id, owner, stop, sweep_budget.trial_reason("max_trials"))
            if stopped and sweep.space is not None:
                # the trials it asked and never started: no unit will tell the study they ended
                end_running_trials(sweep_id, s.store_url, "cancelled: the sweep's budget was reached")
            elif sweep.space is not None:
                _end_orphans(sweep, sweep_id, s.store_url, store.trials([sweep_id])[sweep_id])
            return "succeeded"
        rt.shutdown.wait(POLL_S)  # other workers hold the running units


def _end_orphans(sweep: SweepSpec, sweep_id: str, url: str, rows: list[dict[str, Any]]) -> None:
    """Every unit has ended: a trial still running in the study that the store never recorded
    was asked by a unit whose worker died before writing it, and no one will tell the study it
    ended. The study is labelled with its sweep for whoever opens it (optuna-dashboard)."""
    study = open_study(sweep, sweep_id, storage(url))
    study.set_user_attr("regtrain_sweep", sweep_id)
    known = {r["trial_index"] for r in rows}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in known:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def fleet_size(rt: Runtime, queue: str) -> int:
    """The workers on the sweep's queue that are alive now (a heartbeat within LIVE_BEATS
    intervals, never beyond the lease), this one included: what the sweep's work is split
    for."""
    s = rt.settings
    within = min(LIVE_BEATS * s.heartbeat_seconds, s.lease_seconds)
    return max(rt.workers.live_on(queue, within), 1)


def unit_size(sweep: SweepSpec, trials: int, workers: int) -> int:
    """Trials per unit: `parallel` when the sweep sets it; else as many units as there are
    workers to take them, each at most DEFAULT_PARALLEL trials (a stacked group that size
    already trains at the machine's rate: wider ones gain little, and a second worker gains
    the whole of its cores). An 8-trial grid on two workers is two units of 4."""
    if sweep.parallel is not None:
        return sweep.parallel
    return max(1, min(DEFAULT_PARALLEL, math.ceil(trials / max(workers, 1))))


def grid_unit_size(sweep: SweepSpec, trials: int, workers: int) -> int:
    """Trials per unit of a grid or random sweep: unit_size, unless a CV sweep that names no
    `parallel` has fewer full units (DEFAULT_PARALLEL trials) than live workers; then its folds
    are dealt over the workers first (fold_parts) and its trials only over the workers that
    leaves, so a unit keeps its stacked group wide. On a CPU a stacked step's cost is mostly
    per step, not per trial (8 trials stacked took 1.4× the time of 4 on one thread): an
    8-trial, 4-fold grid on two workers trains faster as two units of 8 trials × 2 folds than
    as two of 4 trials × 4 folds (half the steps per worker)."""
    full = math.ceil(trials / DEFAULT_PARALLEL)
    if sweep.parallel is not None or sweep.cv_folds < 2 or full == 0 or full >= workers:
        return unit_size(sweep, trials, workers)
    sets = min(sweep.cv_folds, workers // full)
    return math.ceil(trials / max(full, workers // sets))


def fold_parts(sweep: SweepSpec, units: int, workers: int) -> list[list[int] | None]:
    """The fold sets each unit of trials is split into: [None] (every fold, one unit) unless a
    CV sweep that names no `parallel` has fewer units of trials than live workers; then its
    folds are dealt out so that units × fold sets fill the workers (a 2-trial, 4-fold grid on
    four workers: each trial's folds in two halves). A trial split so ends once its last
    fold-unit has recorded its part (store/sweep_units.py record_part)."""
    if sweep.parallel is not None or sweep.cv_folds < 2 or units == 0 or units >= workers:
        return [None]
    sets = min(sweep.cv_folds, workers // units)
    if sets < 2:
        return [None]
    return [list(range(sweep.cv_folds))[k::sets] for k in range(sets)]


def _budget_reached(rt: Runtime, sweep: SweepSpec, sweep_id: str) -> bool:
    """Whether a budget of the sweep (other than max_trials, which caps what is planned) is
    reached: then it is written as the sweep's stopped_by (the first reached wins) and the
    units no worker took end cancelled, their trials with them (store: SweepUnits.stop). The
    units running on other workers learn it at their next heartbeat (worker/unit_task.py)."""
    if sweep.budget is None:
        return False
    started, epochs, failed = rt.units.spent(sweep_id)
    at = datetime.now(UTC)
    seconds = (at - started).total_seconds() if started is not None else 0.0
    hit = sweep_budget.reached(sweep.budget, sweep_budget.Spent(seconds, epochs, failed))
    if hit is None:
        return False
    budget, detail = hit
    stop = sweep_budget.stopped_by(budget, at, detail)
    written = rt.units.stop(sweep_id, rt.name, stop, sweep_budget.trial_reason(budget))
    log.info("sweep %s: stopped by its budget: %s", sweep_id, (written or stop)["detail"])
    return True


def _fail_on_internal(unit_rows: list[dict[str, Any]], trial_rows: list[dict[str, Any]] | None) -> None:
    # The engine's error (torch-free module): run_engine fails the sweep with it.
    from worker.training.errors import TrainingError

    error = internal_failure(unit_rows, trial_rows)
    if error is not None:
        raise TrainingError(ErrorType.INTERNAL, error["message"])
