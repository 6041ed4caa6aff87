"""What the job task and the sweep task share: the skeleton of running a leased row.

The message is only a doorbell: claim the row (or drop the message), hold its lease while the
engine runs, turn the engine's failures into a final state, and when the engine stopped early,
tell a cancel from a lost lease and from this worker shutting down.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
from celery.exceptions import Reject

from service.contract.errors import ErrorType
from service.data.buckets import BucketUnreachable
from worker.celery_app import app
from worker.lease import Lease
from worker.runtime import Runtime

if TYPE_CHECKING:  # torch: imported only where a process trains
    from worker.training.sweep import TrialOutcome

log = logging.getLogger("regtrain.worker")

# Failures of what the job runs on rather than of the job: the only ones retried, besides a lost
# worker (a connection refused or dropped, a pool exhausted).
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    # a bucket unreachable (after obstore's own retries): the artifacts' or a dataset's; the
    # job resumes later from what the artifact bucket holds
    BucketUnreachable,
)


# How long a worker waits before returning a message it could not claim (the store was down).
STORE_RETRY_S = 5.0


class Claimed(Protocol):
    @property
    def attempt(self) -> int: ...


C = TypeVar("C", bound=Claimed)
T = TypeVar("T")


def claim(rt: Runtime, kind: str, row_id: str, take: Callable[[str, str, float, int], C | None]) -> C | None:
    """Take the row with `take` (the store's claim for its kind); None: drop the message."""
    if rt.shutdown.is_set():
        # A message taken while this worker shuts down goes back to the broker untouched.
        raise Reject("worker shutting down", requeue=True)
    try:
        claimed = take(row_id, rt.name, rt.settings.lease_seconds, rt.settings.max_attempts)
    except INFRASTRUCTURE_ERRORS:
        # The store is unreachable: the message goes back to the broker for a worker (this one,
        # once the store answers) instead of being acked for a job nobody ran. The pause keeps
        # a worker whose store is down from spinning on the same message.
        log.warning("%s %s: the store is unreachable; message returned to the queue", kind, row_id)
        rt.shutdown.wait(STORE_RETRY_S)
        raise Reject("store unreachable", requeue=True) from None
    if claimed is None:
        log.info("%s %s is not claimable (taken, finished or cancelled); message dropped", kind, row_id)
        return None
    log.info("%s %s: attempt %d on %s", kind, row_id, claimed.attempt, rt.name)
    return claimed


# How long a worker that lacks a job's model type holds the message before returning it: the job
# waits for a worker that has the type without this one spinning on it.
MODEL_TYPE_RETRY_S = 5.0


def refuse_unknown_model_type(
    rt: Runtime, kind: str, row_id: str, spec: dict[str, Any] | None, note: Callable[[str], object]
) -> None:
    """Return the message to the queue, unclaimed, when `spec` names a model type this worker
    does not have (a plugin not installed here, or hidden by REGTRAIN_DISABLED_MODEL_PLUGINS):
    the job stays queued for a worker that has it, never failed, and says why it waits
    (`note`, once). Checked before the claim, so no attempt is spent."""
    from service.contract.model_plugins import known_model_types

    model = (spec or {}).get("model")
    name = model.get("type") if isinstance(model, dict) else None
    if not isinstance(name, str) or name in known_model_types():
        return
    note(f"waiting for a worker with model type {name!r} ({rt.name} does not have it)")
    log.warning("%s %s: model type %r is not installed on this worker; message returned", kind, row_id, name)
    rt.shutdown.wait(MODEL_TYPE_RETRY_S)
    raise Reject(f"model type {name!r} not on this worker", requeue=True)


def hold(rt: Runtime, lease_class: type[Lease], row_id: str) -> Lease:
    """The lease this worker renews while the engine runs (start it with `with`)."""
    return lease_class(
        rt.store,
        row_id,
        rt.name,
        lease_seconds=rt.settings.lease_seconds,
        heartbeat_seconds=rt.settings.heartbeat_seconds,
        shutdown=rt.shutdown,
        presence=rt.presence,
    )


def bad_spec(e: Exception) -> dict[str, Any]:
    """The error of a stored spec that no longer validates (final: another attempt fails alike)."""
    return {"type": ErrorType.BAD_SPEC, "message": str(e)[:2000]}


def run_engine(
    kind: str,
    row_id: str,
    lease: Lease,
    engine: Callable[[], T],
    fail: Callable[[dict[str, Any]], object],
    *,
    retry_infrastructure: bool,
) -> T | None:
    """What `engine` returns, run under the lease; None when it raised, after `fail` has
    written the error. With `retry_infrastructure`, an infrastructure error writes nothing
    and is left to the reaper instead of failing the row `internal`."""
    # Torch only in a process that trains: the Celery app (and whatever imports it) loads
    # without it.
    from worker.training.errors import TrainingError

    retried = INFRASTRUCTURE_ERRORS if retry_infrastructure else ()
    try:
        with lease:
            return engine()
    except TrainingError as e:
        # The row's own fault (diverged, out_of_memory, time_limit, bad_data): final, never
        # retried, since another attempt would fail the same way.
        log.warning("%s %s failed: %s: %s", kind, row_id, e.type, e.message)
        fail(finite(e.to_dict()))
    except retried:
        # Not the row's fault (the store went away mid-training): write nothing and stop
        # renewing the lease. The reaper puts the row back on the queue once the lease lapses,
        # and it resumes from its last checkpoint; after max_attempts it fails worker_lost.
        log.exception("%s %s: infrastructure error; leaving it to the reaper to retry", kind, row_id)
    except Exception as e:
        # A bug, not a user's error: fail `internal` (retrying would only repeat it), and this
        # process lives on to take the next message.
        log.exception("%s %s: unexpected error", kind, row_id)
        fail({"type": ErrorType.INTERNAL, "message": f"{type(e).__name__}: {e}"[:2000]})
    finally:
        _release_accelerator_memory()
    return None


def stopped(
    rt: Runtime,
    kind: str,
    row_id: str,
    lease: Lease,
    *,
    task: str,
    release: Callable[[str, str], str | None],
    cancel: Callable[[], object],
) -> None:
    """The engine stopped early: a cancel (`cancel` writes it), a lost lease (write nothing),
    or this worker shutting down (`release` the row and send its message `task` again)."""
    try:
        lease.beat()  # a cancel that arrived during a shutdown still counts as a cancel
    except Exception:
        log.exception("%s %s: last heartbeat failed", kind, row_id)
    if lease.reason == "lost":
        log.warning("%s %s: stopped after losing its lease; another worker owns it", kind, row_id)
    elif lease.reason == "shutdown":
        queue = release(row_id, rt.name)
        if queue is not None:
            app.send_task(task, args=[row_id], queue=queue)
            log.info("%s %s: worker shutting down; re-queued on %s", kind, row_id, queue)
    else:
        cancel()


def outcome_fields(t: TrialOutcome) -> dict[str, Any]:
    """What the store records of a trial's outcome (Repository.record_trial), JSON-safe; grid,
    random, path and search sweeps alike."""
    return {
        "status": t.status,
        "metrics": finite(t.metrics),
        "score": finite(t.score),
        "fold_scores": finite(t.fold_scores),
        "best_epoch": finite(t.best_epoch),
        "vectorized": t.vectorized,
        "error": finite(t.error),
        "epochs_trained": t.epochs_trained,
        "pruned_at_epoch": t.pruned_at_epoch,
        "reason": t.reason,
    }


def finite(value: Any) -> Any:
    """JSON without NaN or infinity (PostgreSQL's jsonb refuses them): such numbers become null."""
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _release_accelerator_memory() -> None:
    """A long-lived GPU worker hands the memory of a finished run back to the device. Only
    where CUDA was used: a full gc.collect in a process holding torch and Optuna takes a
    second and more on a busy CPU, between one unit of a sweep and the next, and a CPU
    worker's tensors go with their last reference."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    gc.collect()
    torch.cuda.empty_cache()
