"""Sweeps as the API sees them: check a SweepSpec against its data, submit it, render the
document. The worker (worker/sweep_task.py) runs it and retrains the best trial as a job."""

from __future__ import annotations

import functools

from service.contract.errors import SpecError
from service.contract.stacking import vectorize_refusal
from service.contract.sweep_spec import SweepSpec, Trial, expand, trainings, trial_count
from service.queue.broker import Broker, queue_for_device
from service.settings import Settings
from service.store import Repository
from service.store.repository import Row
from service.submission import idempotency, jobs


def check_sweep(sweep: SweepSpec, store: Repository, tenant: str, settings: Settings) -> list[Trial]:
    """Every trial's validated JobSpec; 422 naming the field of a sweep that cannot run."""
    n = trainings(sweep)
    if n > settings.max_sweep_trainings:
        search = next(k for k in ("space", "grid", "random", "path") if getattr(sweep, k) is not None)
        raise SpecError(
            ("body", search),
            f"{trial_count(sweep):,} trials × {max(sweep.cv_folds, 1)} folds × {sweep.seeds} seeds = "
            f"{n:,} trainings exceed "
            f"the limit of {settings.max_sweep_trainings:,} (REGTRAIN_MAX_SWEEP_TRAININGS)",
        )
    jobs.check_notify(sweep.base, settings.admits_private_targets, ("body", "base"))
    shape = jobs.data_shape(sweep.base, store, tenant, ("body", "base"))
    try:
        trials = expand(
            sweep, shape, settings.max_parameters, max_memory_bytes=settings.max_worker_memory_bytes
        )
    except SpecError as e:
        raise SpecError(("body", *e.loc), e.message) from None
    if sweep.vectorize is True:
        reason = vectorize_refusal([t.spec for t in trials])
        if reason is not None:
            raise SpecError(("body", "vectorize"), f"vectorize is true but {reason}")
    return trials


def submit(
    sweep: SweepSpec,
    trials: list[Trial],
    store: Repository,
    broker: Broker,
    tenant: str,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Row:
    """Store the sweep and its trials, then ring the broker (on the base spec's device queue).
    A retried POST with the same Idempotency-Key and the same sweep returns the first sweep,
    with another sweep a 409 (as jobs.submit)."""
    spec = sweep.model_dump(mode="json")
    find = functools.partial(store.sweep_by_idempotency_key, tenant)
    once = idempotency.Once(find, idempotency_key, spec, "sweep")
    queue = queue_for_device(settings, sweep.base.training.device)
    existing = once.previous()
    if existing is not None:
        if store.requeue_unsent_sweep(existing["id"]):  # a retry after a 503
            jobs.send(broker.enqueue_sweep, store.fail_queued_sweep, existing["id"], queue)
            return store.get_sweep(existing["id"]) or existing
        return existing
    jobs.check_capacity(store, tenant, settings.max_active_jobs)
    row, created = once.create(
        lambda: store.create_sweep(
            tenant=tenant,
            spec=spec,
            queue=queue,
            # a search's trials are asked as it runs; `trials` here only checked its corners
            trials=[] if sweep.space is not None else [t.params for t in trials],
            idempotency_key=idempotency_key,
            request_sha256=once.request_sha256,
            notify_secret=sweep.base.notify.secret if sweep.base.notify else None,
            # the rule its retrain job is admitted under (the API's, as a job's)
            egress_private=settings.admits_private_targets,
        )
    )
    if not created:
        return row
    jobs.send(broker.enqueue_sweep, store.fail_queued_sweep, row["id"], queue)
    return row
