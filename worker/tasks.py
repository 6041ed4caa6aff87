"""The Celery task: a thin adapter between the store and the engine.

claim (conditional UPDATE) → train with callbacks that write each metrics row and checkpoint
record as they happen → write the final state once. The message is only a doorbell: a job that
is not claimable (another worker has it, it was cancelled, it is finished) is skipped.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
from typing import Any

import sqlalchemy as sa
from celery.exceptions import Reject
from pydantic import ValidationError

from service.broker import RUN_JOB_TASK
from service.spec import JobSpec
from worker.celery_app import app
from worker.lease import Lease
from worker.runtime import Runtime, runtime

log = logging.getLogger("regtrain.worker")

# Failures of what the job runs on rather than of the job: the only ones retried, besides a lost
# worker (a connection refused or dropped, a pool exhausted).
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)


@app.task(name=RUN_JOB_TASK)
def run_job_task(job_id: str) -> None:
    execute(job_id, runtime())


def execute(job_id: str, rt: Runtime) -> None:
    # Imported here, not at module level: the Celery app (and whatever imports it) loads
    # without torch; only a process that trains pays for it.
    from worker.training.errors import TrainingError
    from worker.training.runner import Callbacks as EngineCallbacks
    from worker.training.runner import CheckpointRecord, run_job

    settings, store, owner = rt.settings, rt.store, rt.name
    if rt.shutdown.is_set():
        # A message taken while this worker shuts down goes back to the broker untouched.
        raise Reject("worker shutting down", requeue=True)
    claim = store.claim(job_id, owner, settings.lease_seconds, settings.max_attempts)
    if claim is None:
        log.info("job %s is not claimable (taken, finished or cancelled); message dropped", job_id)
        return
    log.info("job %s: attempt %d on %s", job_id, claim.attempt, owner)
    try:
        spec = JobSpec.model_validate(claim.spec)
    except ValidationError as e:
        store.finish(job_id, owner, "failed", error={"type": "bad_spec", "message": str(e)[:2000]})
        return
    work_dir = settings.jobs_dir / job_id

    def on_checkpoint(rec: CheckpointRecord) -> None:
        store.record_checkpoint(
            job_id,
            owner,
            name=rec.name,
            epoch=rec.epoch,
            path=str(rec.path.resolve().relative_to(work_dir.resolve())),
            size_bytes=rec.size_bytes,
            sha256=rec.sha256,
            metrics=_finite(rec.metrics),
        )

    lease = Lease(
        store,
        job_id,
        owner,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        shutdown=rt.shutdown,
    )
    callbacks = EngineCallbacks(
        on_epoch=lambda row: store.record_epoch(job_id, owner, _finite(row)),
        on_checkpoint=on_checkpoint,
        on_checkpoint_removed=lambda name: store.remove_checkpoint(job_id, owner, name),
        should_stop=lease.should_stop,
    )
    limit = min(spec.training.time_limit_s or math.inf, settings.max_time_limit_s)
    try:
        with lease:
            outcome = run_job(
                spec,
                work_dir,
                callbacks,
                datasets_dir=settings.datasets_dir,
                time_limit_s=limit,
                max_parameters=settings.max_parameters,
            )
    except TrainingError as e:
        # The job's own fault (diverged, out_of_memory, time_limit, bad_data): final, never
        # retried, since another attempt would fail the same way.
        log.warning("job %s failed: %s: %s", job_id, e.type, e.message)
        store.finish(job_id, owner, "failed", error=_finite(e.to_dict()))
        return
    except INFRASTRUCTURE_ERRORS:
        # Not the job's fault (the store went away mid-training): write nothing and stop
        # renewing the lease. The reaper puts the job back on the queue once the lease lapses,
        # and it resumes from its last checkpoint; after max_attempts it fails worker_lost.
        log.exception("job %s: infrastructure error; leaving it to the reaper to retry", job_id)
        return
    except Exception as e:
        # A bug, not a user's error: fail the job `internal` (retrying would only repeat it),
        # and this process lives on to take the next job.
        log.exception("job %s: unexpected error", job_id)
        error = {"type": "internal", "message": f"{type(e).__name__}: {e}"[:2000]}
        store.finish(job_id, owner, "failed", error=error)
        return
    finally:
        _release_accelerator_memory()

    if outcome.resumed_from_epoch != claim.resumed_from_epoch:
        store.note_resumed_from(job_id, claim.attempt, outcome.resumed_from_epoch)
    result = _finite(outcome.result)
    if outcome.status == "succeeded":
        store.finish(job_id, owner, "succeeded", result=result)
        return
    try:
        lease.beat()  # a cancel that arrived during a shutdown still counts as a cancel
    except Exception:
        log.exception("job %s: last heartbeat failed", job_id)
    if lease.reason == "lost":
        log.warning("job %s: stopped after losing its lease; another worker owns it", job_id)
    elif lease.reason == "shutdown":
        queue = store.release(job_id, owner)
        if queue is not None:
            app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
            log.info("job %s: worker shutting down; re-queued on %s", job_id, queue)
    else:
        store.finish(job_id, owner, "cancelled", result=result)


def _finite(value: Any) -> Any:
    """JSON without NaN or infinity (PostgreSQL's jsonb refuses them): such numbers become null."""
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _release_accelerator_memory() -> None:
    """A long-lived GPU worker hands the memory of a finished job back to the device."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
