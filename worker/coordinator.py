"""A sweep's coordinator: the worker that holds the sweep's lease splits the sweep's trials into
units (a batch trained together, stacked where it allows), queues each as a leased row with a
message on the sweep's queue, and trains units itself while any are queued, so that one worker
alone still runs the whole sweep and every other worker on the queue takes a share.

A grid's or random sweep's units are all written at once. A search's are asked from the sampler
as the sweep runs, LOOKAHEAD units ahead: one for this worker and one for any other, so the
sampler learns from every trial that has ended before it proposes the next batch. A coordinator
that dies costs nothing: the reaper hands the sweep to another worker, which finds the units
written and goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from service.contract.errors import ErrorType
from service.contract.sweep_outcome import internal_failure
from service.contract.sweep_spec import SweepSpec, trial_count
from service.queue.broker import queue_name
from service.store.sweeps import TRIAL_FINISHED
from worker import unit_task
from worker.runtime import Runtime
from worker.search import DEFAULT_PARALLEL, ask, open_study, storage

LOOKAHEAD = 2  # queued units a search keeps ready
POLL_S = 0.5  # how often a coordinator with nothing to train looks at the units others hold

Send = Callable[[str, str], None]  # (unit id, queue): ring the broker for a unit


def coordinate(
    rt: Runtime, sweep: SweepSpec, sweep_id: str, queue: str, should_stop: Callable[[], bool], send: Send
) -> str:
    """Run the sweep's units to their end: "succeeded" once every unit has ended and a search
    has asked all its trials, or "cancelled" when the sweep's lease says stop. A unit (or a
    trial) that failed `internal` fails the sweep (TrainingError internal, naming it), at once:
    contract/sweep_outcome.py says why."""
    units, store, owner, s = rt.units, rt.store, rt.name, rt.settings
    size = sweep.parallel or DEFAULT_PARALLEL
    top_up: Callable[[], bool]
    if sweep.space is None:
        planned = {i for u in units.of([sweep_id])[sweep_id] for i in u["trials"]}
        left = [
            r["trial_index"]
            for r in store.trials([sweep_id])[sweep_id]
            if r["trial_index"] not in planned and r["status"] not in TRIAL_FINISHED
        ]
        if sweep.parallel is None and queue == queue_name(s, "gpu"):
            # One GPU trains a stacked group of hundreds of trials about as fast as a few: a
            # GPU grid stays one unit (one group as large as the device holds) unless
            # `parallel` asks to spread it.
            size = max(len(left), 1)
        for uid in (
            units.add(sweep_id, owner, queue, [left[i : i + size] for i in range(0, len(left), size)]) or []
        ):
            send(uid, queue)

        def top_up() -> bool:
            return True  # all planned

    else:
        study = open_study(sweep, sweep_id, storage(s.store_url))
        study.set_user_attr("regtrain_sweep", sweep_id)
        known = {r["trial_index"] for r in store.trials([sweep_id])[sweep_id]}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in known:  # asked by a coordinator that died before writing its unit
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)

        def top_up() -> bool:
            """Ask units until LOOKAHEAD are queued; True once every trial has been asked."""
            # at most the grid sampler's combinations, for a sweep stored before they were clamped
            wanted = trial_count(sweep)
            while True:
                asked = len(store.trials([sweep_id])[sweep_id])
                if asked >= wanted:
                    return True
                if units.counts(sweep_id).get("queued", 0) >= LOOKAHEAD:
                    return False
                good, bad = ask(study, sweep, min(size, wanted - asked))
                ids = units.add(sweep_id, owner, queue, [sorted(good)] if good else [], good, bad)
                if ids is None:
                    return False  # the lease is lost: should_stop says so next
                for uid in ids:
                    send(uid, queue)

    while True:
        if should_stop():
            return "cancelled"
        all_asked = top_up()
        claim = units.claim_next(sweep_id, owner, s.lease_seconds, s.max_attempts)
        if claim is not None:
            unit_task.train_claimed(rt, claim)
            continue
        counts = units.counts(sweep_id)
        if counts.get("failed"):
            _fail_on_internal(units.of([sweep_id])[sweep_id], None)
        if all_asked and not counts.get("queued") and not counts.get("running"):
            _fail_on_internal(units.of([sweep_id])[sweep_id], store.trials([sweep_id])[sweep_id])
            return "succeeded"
        rt.shutdown.wait(POLL_S)  # other workers hold the running units


def _fail_on_internal(unit_rows: list[dict[str, Any]], trial_rows: list[dict[str, Any]] | None) -> None:
    # The engine's error (torch-free module): run_engine fails the sweep with it.
    from worker.training.errors import TrainingError

    error = internal_failure(unit_rows, trial_rows)
    if error is not None:
        raise TrainingError(ErrorType.INTERNAL, error["message"])
