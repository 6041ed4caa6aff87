"""The sweep's Celery task: claim the sweep (conditional UPDATE + lease) → coordinate its units
of trials, which any worker on the queue trains (worker/coordinator.py, worker/unit_task.py) →
queue the best trial's retrain as an ordinary job (the same path as POST /v1/jobs) → stay
running until that job has finished.

A second attempt (the coordinator died, or shut down) finds the units written and goes on; no
finished trial trains again. A regularization path is one chain (each step starts from the
weights of the one before), trained here and, on a second attempt, again from its first step.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery.exceptions import Reject
from pydantic import ValidationError

from service.contract import selection, sweep_budget
from service.contract.errors import DomainError, ErrorType, SpecError, Unavailable
from service.contract.search_space import trial_spec
from service.contract.selection import leaderboard
from service.contract.sweep_spec import SweepSpec, Trial, best_job_spec, expand
from service.queue.broker import RUN_SWEEP_TASK, RUN_SWEEP_UNIT_TASK, Broker, queue_name
from service.store.repository import SweepClaim
from service.submission import jobs
from worker import leased_task
from worker.artifact_sync import check_sweep_dataset, held_sweep_dataset
from worker.celery_app import app
from worker.lease import Lease, SweepLease
from worker.runtime import Runtime, runtime

log = logging.getLogger("regtrain.worker")


@cache
def _broker(rt: Runtime) -> Broker:
    """Sends the retrain job's message, as the API would."""
    return Broker(rt.settings)


def _send_unit(unit_id: str, queue: str) -> None:
    app.send_task(RUN_SWEEP_UNIT_TASK, args=[unit_id], queue=queue)


@app.task(name=RUN_SWEEP_TASK)
def run_sweep_task(sweep_id: str) -> None:
    execute_sweep(sweep_id, runtime())


def execute_sweep(sweep_id: str, rt: Runtime) -> None:
    # Torch only in a process that trains (see worker.tasks.execute).
    from worker.training.sweep import SweepCallbacks, TrialOutcome, run_sweep

    settings, store, owner = rt.settings, rt.store, rt.name
    # A sweep of a model type this worker lacks waits, unclaimed, for a worker that has it.
    queued = store.get_sweep(sweep_id)
    base = queued["spec"].get("base") if queued else None
    leased_task.refuse_unknown_model_type(rt, "sweep", sweep_id, base, lambda _why: None)
    claim = leased_task.claim(rt, "sweep", sweep_id, store.claim_sweep)
    if claim is None:
        return
    try:
        sweep = SweepSpec.model_validate(claim.spec)
        trials = expand(sweep, None, settings.max_parameters)
    except (ValidationError, SpecError) as e:
        store.finish_sweep(sweep_id, owner, "failed", error=leased_task.bad_spec(e))
        return
    search = sweep.space is not None
    todo = trials  # a path: again from its first step, each step starting from the one before

    def on_trial(t: TrialOutcome) -> None:
        store.record_trial(
            sweep_id,
            owner,
            t.index,
            **leased_task.outcome_fields(t),
            worker=owner,
            unit=0,  # a path runs as one unit on the sweep's worker: its steps are a chain
        )

    lease = leased_task.hold(rt, SweepLease, sweep_id)

    def run() -> str:
        if sweep.path is None:  # grids, random and searches: units that any worker takes
            from worker.coordinator import coordinate

            check_sweep_dataset(rt.artifacts, sweep)
            queue = (store.get_sweep(sweep_id) or {}).get("queue") or queue_name(settings, "cpu")
            return coordinate(rt, sweep, sweep_id, queue, lease.should_stop, _send_unit)
        from worker.unit_task import within_caps

        chain = within_caps(rt, claim, sweep, todo, on_trial)  # a step over the caps drops out
        if not chain:
            return "succeeded"
        callbacks = SweepCallbacks(on_trial=on_trial, should_stop=lease.should_stop)
        with held_sweep_dataset(rt.artifacts, sweep) as dataset_file:
            return run_sweep(
                sweep,
                chain,
                datasets_dir=settings.datasets_dir,
                dataset_file=dataset_file,
                callbacks=callbacks,
            ).status

    def fail(error: dict[str, Any], best_index: int | None = None) -> None:
        if store.finish_sweep(sweep_id, owner, "failed", best_index=best_index, error=error):
            _end_study(rt, sweep, sweep_id, f"failed: the sweep failed ({error['type']}): {error['message']}")

    status = leased_task.run_engine("sweep", sweep_id, lease, run, fail, retry_infrastructure=False)
    if status is None:
        return
    status = settled_status(lease, status)

    rows = store.trials([sweep_id])[sweep_id]
    by_index = {r["trial_index"]: r for r in rows}
    ranked = [by_index[i] for i in leaderboard(claim.spec, rows)]
    best = selection.choose(claim.spec, ranked)
    if status == "succeeded" and best is not None:
        _keep_importances(rt, sweep, sweep_id, owner, rows)

    def cancel() -> None:
        # The study first: whoever reads the sweep as cancelled finds none of its trials still
        # running there. Safe before the sweep's own write: a cancel asked for ends it whoever
        # holds it next.
        _end_study(rt, sweep, sweep_id, "cancelled: the sweep was cancelled before this trial ended")
        store.finish_sweep(sweep_id, owner, "cancelled", best_index=best)

    if status == "cancelled":
        leased_task.stopped(
            rt,
            "sweep",
            sweep_id,
            lease,
            task=RUN_SWEEP_TASK,
            release=store.release_sweep,
            cancel=cancel,
        )
        return
    if best is None:
        stop = (store.get_sweep(sweep_id) or {}).get("stopped_by")
        if stop is not None:  # contract/sweep_budget.py
            fail({"type": ErrorType.BUDGET_EXHAUSTED, "message": sweep_budget.no_trial_finished(stop)})
            return
        fail({"type": ErrorType.NO_TRIAL_SUCCEEDED, "message": "every trial failed; see each trial's error"})
        return
    chosen = by_index[best]
    trial = Trial(best, chosen["params"], trial_spec(sweep, chosen["params"])) if search else trials[best]
    job_id, error = _retrain(claim, sweep, trial, chosen["best_epoch"], rt)
    if job_id is None:
        assert error is not None  # _retrain gives one or the other
        fail(error, best)
        return
    # Running until the retrain job has finished: then `best.test_metrics` holds its test metrics.
    if store.await_retrain(
        sweep_id, owner, best_index=best, best_job_id=job_id, warnings=selection.warnings(claim.spec, chosen)
    ):
        _retrain_here(rt, job_id)


def _retrain_here(rt: Runtime, job_id: str) -> None:
    """Train the retrain job in this process now, the way its message would (worker/tasks.py:
    the job's claim decides, so no two workers run it): this worker is warm, free, and holds
    the data, where the message would wait for a worker to take it. The message went out all
    the same, so a worker lost here loses nothing: the job is queued for the next one, or its
    lease lapses and the reaper hands it on."""
    from worker.tasks import execute

    if rt.shutdown.is_set():
        return  # the message takes it to another worker
    try:
        execute(job_id, rt)
    except Reject:  # shutting down, or the store went away: the job's message is still queued
        log.info("job %s: left to its message", job_id)


def _keep_importances(
    rt: Runtime, sweep: SweepSpec, sweep_id: str, owner: str, rows: list[dict[str, Any]]
) -> None:
    """The search has ended: which swept fields mattered, kept with the sweep for its page
    (worker/importance.py; at most MAX_TRIALS trials weighed, so its cost is bounded)."""
    from worker.importance import param_importances

    found = param_importances(sweep, rows)
    if found is not None:
        rt.store.set_param_importances(sweep_id, owner, found)


def _end_study(rt: Runtime, sweep: SweepSpec, sweep_id: str, why: str) -> None:
    """A search that ended without succeeding tells its study that the trials still running
    there ended (worker/search.py: end_running_trials), `why` in each one's user attrs. The
    sweep's own state is written already: a study that cannot be reached now only leaves
    those trials running in it, so that is logged, not raised."""
    if sweep.space is None:
        return
    from worker.search import end_running_trials

    try:
        ended = end_running_trials(sweep_id, rt.settings.store_url, why)
    except Exception:
        log.exception("sweep %s: could not end its running trials in the study", sweep_id)
        return
    if ended:
        log.info("sweep %s: %d running trials of its study ended (%s)", sweep_id, ended, why)


RETRAIN_SEND_TRIES = 5  # over about 8 s, while the broker comes back


def _retrain(
    claim: SweepClaim, sweep: SweepSpec, trial: Trial, best_epoch: float | None, rt: Runtime
) -> tuple[str | None, dict[str, Any] | None]:
    """Queue the best trial, retrained on train + validation data, as a job of the sweep's
    tenant: (job id, None), or (None, error) when the job could not be created. The
    idempotency key makes a second attempt of this sweep find the job instead of adding one."""
    store, settings = rt.store, rt.settings
    key = f"sweep-{claim.sweep_id}-best"
    broker = _broker(rt)
    try:
        spec = best_job_spec(sweep, trial, best_epoch, claim.notify_secret)
        # the sweep's egress rule, the API's that admitted it, not this worker's settings
        checked = jobs.check_spec(spec, store, claim.tenant, settings, egress_private=claim.egress_private)
        for attempt in range(RETRAIN_SEND_TRIES):
            try:
                job, _ = jobs.submit(checked, store, broker, claim.tenant, key)
                return str(job["id"]), None
            except Unavailable:
                # The broker is down: the job was stored and failed unsent; the same key
                # revives it on the next try (jobs.submit → requeue_unsent).
                if attempt + 1 == RETRAIN_SEND_TRIES or rt.shutdown.wait(2.0):
                    raise
        raise AssertionError("unreachable")
    except (DomainError, ValidationError) as e:
        existing = store.job_by_idempotency_key(claim.tenant, key)
        if existing is not None:  # created, then refused by the broker: the job says why
            return str(existing["id"]), None
        detail = e.detail if isinstance(e, DomainError) else str(e)
        log.warning("sweep %s: the retrain of trial %d was refused: %s", claim.sweep_id, trial.index, detail)
        return None, {"type": ErrorType.RETRAIN_REFUSED, "message": str(detail)[:2000]}


def settled_status(lease: Lease, status: str) -> str:
    """The sweep's status once its units have all ended: a cancel that raced their end is a
    cancel. A unit's lease can see the request a heartbeat before the sweep's own: its unit
    then ends cancelled, and the coordinator, finding every unit ended, says "succeeded"; with
    no trial left to rank, that read as "every trial failed". One last beat settles it."""
    if status == "succeeded":
        lease.beat()
        if lease.reason == "cancel":
            return "cancelled"
    return status
