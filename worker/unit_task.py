"""The Celery task of a sweep's unit of work: claim the unit (conditional UPDATE + lease) → train
its unfinished trials with the engine, writing each trial's row and curve as it goes → finish
the unit; then take the sweep's next queued unit, while there is one.

A unit is a batch of trials trained together (stacked where they allow) on one worker; any
worker on the sweep's queue trains one, the sweep's coordinator too (worker/coordinator.py). A
unit whose worker died goes back on the queue when its lease lapses and the next worker trains
the trials it had not finished; the ones it had are never trained again, and every write of a
worker that lost the unit is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service.contract import sweep_budget
from service.contract.search_space import trial_spec
from service.contract.sweep_spec import SweepSpec, Trial, planned_trials
from service.queue.broker import RUN_SWEEP_UNIT_TASK
from service.store.sweep_units import UnitClaim
from service.store.sweeps import SweepClaim
from service.submission.sweeps import sweep_shape, trials_over_caps
from worker import leased_task
from worker.artifact_sync import held_sweep_dataset
from worker.celery_app import app
from worker.lease import UnitLease
from worker.leased_task import finite, outcome_fields
from worker.runtime import Runtime, runtime

if TYPE_CHECKING:  # Optuna: imported where a search's unit trains
    from worker.search import UnitSearch

log = logging.getLogger("regtrain.worker")


@app.task(name=RUN_SWEEP_UNIT_TASK)
def run_sweep_unit_task(unit_id: str) -> None:
    execute_unit(unit_id, runtime())


def execute_unit(unit_id: str, rt: Runtime) -> None:
    # Torch is loaded before the claim (seconds, the first time): the unit's lease is renewed
    # only once training starts, and a slow import must not let it lapse.
    import worker.training.sweep  # noqa: F401

    s = rt.settings
    # A unit of a model type this worker lacks (a plugin not installed here) goes back to the
    # queue unclaimed, for a worker that has it, as a job's or a sweep's does.
    leased_task.refuse_unknown_model_type(rt, "unit", unit_id, rt.units.base_spec(unit_id), lambda _why: None)
    claim = leased_task.claim(rt, "unit", unit_id, rt.units.claim)
    # The sweep's other queued units are this worker's to take too: their messages, behind
    # this one, would only find them taken.
    while claim is not None and train_claimed(rt, claim) == "succeeded" and not rt.shutdown.is_set():
        claim = rt.units.claim_next(claim.sweep_id, rt.name, s.lease_seconds, s.max_attempts)


def train_claimed(rt: Runtime, claim: UnitClaim) -> str | None:
    """Train a unit this worker holds: "succeeded", "cancelled" (stopped: a cancel, a lost
    lease, a shutdown, each dealt with here), or None when it failed."""
    # Torch only in a process that trains (see worker.tasks.execute).
    from worker.training.sweep import SweepCallbacks, TrialOutcome, run_sweep

    engine_calls = {f.name for f in dataclasses.fields(SweepCallbacks)}
    units, owner, settings = rt.units, rt.name, rt.settings
    uid, sweep_id = claim.unit_id, claim.sweep_id
    try:
        sweep = SweepSpec.model_validate(claim.spec)
        todo = [Trial(i, claim.params[i], trial_spec(sweep, claim.params[i])) for i in claim.todo]
    except (ValidationError, KeyError) as e:
        units.finish(uid, owner, "failed", error=leased_task.bad_spec(e))
        return None
    metric = sweep.primary.metric
    progress: dict[int, dict[str, Any]] = {}
    search = None
    epochs = 0  # trained by this unit, over its trials, folds and seeds

    def on_epoch(index: int, fold: int, step: int, row: dict[str, Any]) -> None:
        nonlocal epochs
        epochs += sweep.seeds  # the row is the mean of the configuration's seeds
        rt.presence.epoch()
        if search is not None:
            search.on_epoch(index, fold, step, row)
        value = row.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            progress[index] = {
                "fold": fold,
                "epoch": row.get("epoch"),
                "step": step,
                metric: value,
                "value": value,
            }

    def after_epoch() -> None:
        if search is not None:
            search.flush()  # the round's reports to the study, together
        if progress:
            units.progress(uid, owner, sweep_id, {i: finite(p) for i, p in progress.items()})
            progress.clear()

    def on_trial(t: TrialOutcome) -> None:
        if t.status == "cancelled" and t.reason is None:
            return  # stopped with its unit: the unit's next holder trains it
        if claim.folds is not None:  # some of the trial's folds: its other fold-units end it
            units.record_part(uid, owner, sweep_id, t.index, sweep.cv_folds, metric, **outcome_fields(t))
        elif units.record_trial(uid, owner, sweep_id, t.index, **outcome_fields(t)) and search is not None:
            search.tell(t)

    lease = UnitLease(
        units,
        uid,
        owner,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        shutdown=rt.shutdown,
        presence=rt.presence,
        budget=sweep.budget is not None,
    )

    def budget() -> str | None:
        """The reason no trial of this unit starts now: a budget reached (SweepCallbacks)."""
        if lease.stopped_by is not None:
            return sweep_budget.trial_reason(lease.stopped_by["budget"])
        if sweep.budget is None:
            return None
        seconds = 0.0
        if claim.sweep_started_at is not None:
            seconds = (datetime.now(UTC) - claim.sweep_started_at).total_seconds()
        # failed trials are the coordinator's to count: a unit finishes the trials it started
        hit = sweep_budget.reached(
            sweep.budget.model_copy(update={"max_failed_trials": None}),
            sweep_budget.Spent(seconds, claim.epochs_before + epochs, 0),
        )
        return sweep_budget.trial_reason(hit[0]) if hit is not None else None

    def stop_running() -> str | None:
        """The reason a running trial stops at this epoch: time_s or trial_epochs reached."""
        if lease.stopped_by is not None and lease.stopped_by["budget"] not in sweep_budget.STOPS_RUNNING:
            return None
        return budget()

    def on_start(index: int) -> None:
        units.trial_started(uid, owner, sweep_id, index)

    def run() -> str:
        with held_sweep_dataset(rt.artifacts, sweep) as dataset_file:
            return train(dataset_file)

    def ask(n: int) -> list[Trial]:
        """Up to `n` trials of the search, asked now for this unit (see SearchAsker)."""
        assert search is not None
        return SearchAsker(rt, claim, sweep, search, budget, on_trial).ask(n)

    def train(dataset_file: Path | None) -> str:
        nonlocal search
        trials = within_caps(rt, claim, sweep, todo, on_trial)
        callbacks = SweepCallbacks(
            on_trial=on_trial,
            should_stop=lease.should_stop,
            on_epoch=on_epoch,
            after_epoch=after_epoch,
            budget=budget,
            halt=stop_running,
        )
        if "on_start" in engine_calls:  # the engine says when each trial starts (worker/training)
            callbacks.on_start = on_start
        if sweep.space is not None:
            from worker.search import UnitSearch

            search = UnitSearch.load(sweep, sweep_id, settings.store_url, list(claim.todo), claim.index + 1)
            callbacks.prune = search.prune
            # A search's unit asks its own trials: its first ones now (a retried unit keeps
            # those it holds), then one for each slot of a stacked group that frees, so a group
            # stays full until the search has asked all its trials (continuous batching).
            trials += ask(max(first_ask(rt, claim, sweep) - len(todo), 0))
            if "refill" in engine_calls:
                callbacks.refill = lambda _key: next(iter(ask(1)), None)
        log.info("sweep %s unit %d: trials %s on %s", sweep_id, claim.index, [t.index for t in trials], owner)
        if not trials:
            return "succeeded"
        return run_sweep(
            sweep,
            trials,
            datasets_dir=settings.datasets_dir,
            dataset_file=dataset_file,
            callbacks=callbacks,
            folds=claim.folds,
        ).status

    status = leased_task.run_engine(
        "unit",
        uid,
        lease,
        run,
        lambda error: units.finish(uid, owner, "failed", error=error),
        retry_infrastructure=True,
    )
    if status == "succeeded":
        units.finish(uid, owner, "succeeded")
    elif status == "cancelled":
        leased_task.stopped(
            rt,
            "unit",
            uid,
            lease,
            task=RUN_SWEEP_UNIT_TASK,
            release=units.release,
            cancel=lambda: units.finish(uid, owner, "cancelled"),
        )
    return status


def engine_refills() -> bool:
    """Whether the engine asks for a trial as a stacked group's slot frees (continuous
    batching: SweepCallbacks.refill)."""
    from worker.training.sweep import SweepCallbacks

    return "refill" in {f.name for f in dataclasses.fields(SweepCallbacks)}


def first_ask(rt: Runtime, claim: UnitClaim, sweep: SweepSpec) -> int:
    """How many trials a search's unit asks as it starts: as the coordinator sizes units
    (worker/coordinator.py unit_size), a share of the sweep's trials among the live workers, so
    that every unit's stacked group is as wide; fewer when fewer are left to ask (SearchAsker)."""
    from worker.coordinator import fleet_size, unit_size

    return unit_size(sweep, planned_trials(sweep), fleet_size(rt, claim.queue))


@dataclass
class SearchAsker:
    """Asks a search's trials for a running unit: from the study (worker/search.py), written
    in the store as the unit's (SweepUnits.add_trials: under the unit's lease, never past the
    sweep's planned trials), registered with the unit's UnitSearch. Nothing is asked once the
    sweep's budget says stop or every trial has been asked; a trial the store refuses (another
    unit asked the last one meanwhile) is ended in the study; one over this worker's caps ends
    failed, untrained, and another is asked in its place."""

    rt: Runtime
    claim: UnitClaim
    sweep: SweepSpec
    search: UnitSearch
    budget: Callable[[], str | None]
    on_trial: Callable[[Any], None]

    def ask(self, n: int) -> list[Trial]:
        units, c = self.rt.units, self.claim
        cap = planned_trials(self.sweep)
        out: list[Trial] = []
        while len(out) < n and not self._stopped():
            room = min(n - len(out), cap - units.asked(c.sweep_id))
            if room <= 0:
                break
            good, bad = self.search.ask(room)
            taken = units.add_trials(c.unit_id, self.rt.name, c.sweep_id, good, bad, cap)
            for number in set(good) - set(taken or []):
                self.search.drop(number, "cancelled: the sweep had asked all its trials")
            if not taken:
                break  # the lease is lost, or another unit asked the last ones
            asked = [Trial(i, good[i], trial_spec(self.sweep, good[i])) for i in taken]
            out += within_caps(self.rt, c, self.sweep, asked, self.on_trial)
        return out

    def _stopped(self) -> bool:
        """A budget says no trial starts: the unit's own (time_s, trial_epochs, a stop its
        heartbeat read), or max_failed_trials, which the coordinator names once it looks (it may
        be training a unit itself: this unit must not refill past it meanwhile)."""
        if self.budget() is not None:
            return True
        budget = self.sweep.budget
        if budget is None or budget.max_failed_trials is None:
            return False
        return self.rt.units.spent(self.claim.sweep_id)[2] >= budget.max_failed_trials


def within_caps(
    rt: Runtime,
    claim: UnitClaim | SweepClaim,
    sweep: SweepSpec,
    todo: list[Trial],
    on_trial: Callable[[Any], None],
) -> list[Trial]:
    """The trials within this worker's caps, checked on the data the sweep was admitted on
    before any trains; each other one ends failed (over_limit) untrained, through `on_trial`
    as a trained one's outcome would. The API admitted the sweep under its own caps, which may
    be looser than this worker's or may have been lowered since."""
    from worker.training.sweep import TrialOutcome

    shape = sweep_shape(sweep, rt.store, claim.tenant)
    over = trials_over_caps(todo, shape, rt.settings) if shape is not None else {}
    for t in todo:
        if t.index in over:
            log.warning(
                "sweep %s trial %d not trained: %s", claim.sweep_id, t.index, over[t.index]["message"]
            )
            on_trial(TrialOutcome(t.index, t.params, "failed", error=over[t.index]))
    return [t for t in todo if t.index not in over]
