"""Every query regtrain makes, in one place (with `leased`, the part jobs and sweeps share).

State changes that race (claim, cancel, finish, reap) are single conditional UPDATEs: the WHERE
clause states what must still be true, and the rows it returns say who won. Two workers never
train the same job, and a reaper running on every worker is safe.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.store import job_counts, job_reads, leased, migrate
from service.store.engine import DEFAULT_POOL_SIZE, READ, make_engine, write_transaction
from service.store.leased import FINISHED, CancelOutcome, Row
from service.store.tables import (
    checkpoints,
    datasets,
    job_history,
    job_metrics,
    jobs,
    sweep_trials,
    sweeps,
)

log = logging.getLogger("regtrain.store")

# A trial may also end pruned (stopped early by the sweep's pruner).
TRIAL_FINISHED = (*FINISHED, "pruned")


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "") -> str:
    """Server-made ids: they name files under the data dir, so never take them from a user."""
    return prefix + uuid.uuid4().hex


Listener = Callable[[str, str, Any], None]  # (job id, method name, what the method returned)


def _rings(method: Callable[..., Any]) -> Callable[..., Any]:
    """After the method's transaction has committed, tell the store's listeners (the event
    streams' doorbell, webhooks) that job `job_id` may have changed. A failing listener is
    logged, never raised: the change itself is done."""

    @functools.wraps(method)
    def wrapper(self: Repository, job_id: str, *args: Any, **kwargs: Any) -> Any:
        out = method(self, job_id, *args, **kwargs)
        for listener in self.listeners:
            try:
                listener(job_id, method.__name__, out)
            except Exception:
                log.exception("store listener failed after %s(%s)", method.__name__, job_id)
        return out

    return wrapper


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns: its spec and this attempt's number."""

    job_id: str
    spec: dict[str, Any]
    attempt: int
    resumed_from_epoch: int | None


@dataclass(frozen=True)
class SweepClaim:
    """A sweep a worker now owns; `finished` are the trials an earlier attempt completed."""

    sweep_id: str
    tenant: str
    spec: dict[str, Any]
    attempt: int
    finished: frozenset[int]


class Repository:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.listeners: list[Listener] = []  # called after each change to a job; see _rings
        # PostgreSQL: no BEGIN and COMMIT round trips around a read; SQLite: no BEGIN (see
        # engine.READ). Each statement sees its own snapshot; the reads that need one snapshot
        # are one statement.
        self._read_options: dict[str, Any] = (
            {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" else {READ: True}
        )
        dialect = engine.dialect.name
        # A read of a local SQLite file in WAL mode never waits on a writer and takes tens of
        # microseconds: an async route may run it on the event loop, where handing it to a
        # thread costs more than the read. A network database's reads go to a thread.
        self.reads_inline = dialect == "sqlite"
        self._job_by_id = {t: job_reads.by_id(dialect, tenant=t) for t in (False, True)}

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(**self._read_options)

    def _first(self, query: sa.Select[Any]) -> Row | None:
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def _all(self, query: sa.Select[Any]) -> list[Row]:
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(sa.text("SELECT 1"))

    # --- jobs: the API side ---------------------------------------------------------------

    def create_job(
        self,
        *,
        tenant: str,
        spec: dict[str, Any],
        queue: str,
        idempotency_key: str | None = None,
        request_sha256: str | None = None,
        notify_secret: str | None = None,
    ) -> Row:
        """Insert a queued job; raises sa.exc.IntegrityError if the idempotency key is taken."""
        job_id = new_id()
        at = now()
        values = leased.queued_values(
            row_id=job_id,
            tenant=tenant,
            spec=spec,
            queue=queue,
            at=at,
            idempotency_key=idempotency_key,
            request_sha256=request_sha256,
        )
        with self._write() as conn:
            conn.execute(jobs.insert().values(**values, notify_secret=notify_secret))
            conn.execute(job_history.insert().values(job_id=job_id, status="queued", at=at))
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str, tenant: str | None = None) -> Row | None:
        return self._first(leased.by_id(jobs, job_id, tenant))

    def job_with_history(self, job_id: str, tenant: str | None = None) -> tuple[Row, list[Row]] | None:
        """A job and its transitions in one statement (one round trip, one snapshot, one row):
        GET /v1/jobs/{id}, the API's hottest read (see job_reads)."""
        params = {"job_id": job_id} if tenant is None else {"job_id": job_id, "tenant": tenant}
        with self._read() as conn:
            row = conn.execute(self._job_by_id[tenant is not None], params).mappings().first()
        return job_reads.decode(row) if row is not None else None

    def job_by_idempotency_key(self, tenant: str, key: str) -> Row | None:
        return self._first(leased.by_idempotency_key(jobs, tenant, key))

    def active_jobs(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or running (what its cap counts)."""
        query = sa.select(sa.func.count()).where(
            jobs.c.tenant == tenant, jobs.c.status.in_(("queued", "running"))
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def active_sweeps(self, tenant: str) -> int:
        """How many of the tenant's sweeps are queued or running."""
        query = sa.select(sa.func.count()).where(
            sweeps.c.tenant == tenant, sweeps.c.status.in_(("queued", "running"))
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def list_jobs(self, tenant: str, *, status: str | None, limit: int, before_seq: int | None) -> list[Row]:
        """Newest first; `before_seq` is the cursor (the seq of the last job of the last page).
        Each row holds its transitions under `history`, read in the same statement."""
        query = job_reads.page(
            self.engine.dialect.name, tenant, status=status, limit=limit, before_seq=before_seq
        )
        with self._read() as conn:
            rows = [job_reads.decode(r) for r in conn.execute(query).mappings()]
        return [{**job, "history": history} for job, history in rows]

    def histories(self, job_ids: list[str]) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {job_id: [] for job_id in job_ids}
        if not job_ids:
            return out
        query = job_history.select().where(job_history.c.job_id.in_(job_ids)).order_by(job_history.c.seq)
        with self._read() as conn:
            for r in conn.execute(query).mappings():
                out[r["job_id"]].append(dict(r))
        return out

    @_rings
    def cancel(self, job_id: str, tenant: str | None = None) -> CancelOutcome:
        """A queued job is cancelled at once (it will never start); a running one is flagged
        and its worker stops it at the next heartbeat."""
        at = now()
        with self._write() as conn:
            outcome = leased.cancel(conn, jobs, job_id, tenant, at)
            if outcome == "cancelled":
                conn.execute(job_history.insert().values(job_id=job_id, status="cancelled", at=at))
                job_counts.count_finished(conn, [("cancelled", None, at)])
        return outcome

    @_rings
    def fail_queued(self, job_id: str, error: dict[str, Any]) -> None:
        """A job that could not be put on the queue (broker down) fails instead of waiting forever."""
        at = now()
        with self._write() as conn:
            if leased.fail_queued(conn, jobs, job_id, error, at):
                conn.execute(job_history.insert().values(job_id=job_id, status="failed", at=at))
                job_counts.count_finished(conn, [("failed", None, at)])

    @_rings
    def requeue_unsent(self, job_id: str) -> bool:
        """A job failed broker_unavailable back to queued (see leased.requeue_unsent)."""
        at = now()
        with self._write() as conn:
            done = leased.requeue_unsent(conn, jobs, job_id, at)
            if done:
                conn.execute(
                    job_history.insert().values(job_id=job_id, status="queued", at=at, message="sent again")
                )
                job_counts.uncount_finished(conn, "failed")
        return done

    def metrics(self, job_id: str) -> list[Row]:
        query = (
            sa.select(job_metrics.c.row).where(job_metrics.c.job_id == job_id).order_by(job_metrics.c.epoch)
        )
        with self._read() as conn:
            return [r for (r,) in conn.execute(query)]

    def checkpoints(self, job_id: str) -> list[Row]:
        query = (
            checkpoints.select()
            .where(checkpoints.c.job_id == job_id)
            .order_by(checkpoints.c.epoch, checkpoints.c.name)
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def checkpoint(self, job_id: str, name: str) -> Row | None:
        query = checkpoints.select().where(checkpoints.c.job_id == job_id, checkpoints.c.name == name)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def job_changes(
        self, job_id: str, *, history_after: int, epoch_after: int, checkpoint_after: datetime | None
    ) -> tuple[list[Row], list[Row], list[Row]]:
        """What a job's event stream has not sent yet: history rows past a seq, metrics rows past
        an epoch, checkpoint records written after a time (a re-saved `best` counts again)."""
        hist = (
            job_history.select()
            .where(job_history.c.job_id == job_id, job_history.c.seq > history_after)
            .order_by(job_history.c.seq)
        )
        rows = (
            job_metrics.select()
            .where(job_metrics.c.job_id == job_id, job_metrics.c.epoch > epoch_after)
            .order_by(job_metrics.c.epoch)
        )
        ckpts = checkpoints.select().where(checkpoints.c.job_id == job_id)
        if checkpoint_after is not None:
            ckpts = ckpts.where(checkpoints.c.at > checkpoint_after)
        with self._read() as conn:
            return tuple(  # type: ignore[return-value]
                [dict(r) for r in conn.execute(q).mappings()]
                for q in (hist, rows, ckpts.order_by(checkpoints.c.at))
            )

    def job_status_counts(self) -> dict[tuple[str, str], int]:
        """{(status, queue): number of jobs}, over every tenant (for /metrics)."""
        with self._read() as conn:
            return job_counts.status_counts(conn)

    def job_duration_histogram(self, buckets: Sequence[float]) -> dict[str, tuple[list[int], int, float]]:
        """status → (cumulative count ≤ each bucket, count, sum of seconds) of the jobs that
        finished after they started, kept as they finished (see job_counts)."""
        with self._read() as conn:
            return job_counts.histogram(conn, buckets)

    def epochs_recorded(self, since: datetime | None = None) -> int:
        """Epochs trained (metrics rows written), or the metrics rows written after `since`."""
        with self._read() as conn:
            return job_counts.epochs(conn, since)

    # --- jobs: the worker side -------------------------------------------------------------

    @_rings
    def claim(self, job_id: str, owner: str, lease_seconds: float, max_attempts: int) -> Claim | None:
        """Take a queued job, or a running one whose worker went silent, in one conditional
        UPDATE; None if another worker has it, or it is finished or cancelled."""
        at = now()
        with self._write() as conn:
            row = leased.claim(
                conn,
                jobs,
                job_id,
                owner,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                at=at,
                returning=(jobs.c.spec, jobs.c.attempts),
            )
            if row is None:
                return None
            # The engine resumes from the newest epoch checkpoint; metrics rows past it will be
            # written again, so drop them now rather than show epochs the model no longer has.
            resumed = conn.execute(
                sa.select(sa.func.max(checkpoints.c.epoch)).where(
                    checkpoints.c.job_id == job_id, checkpoints.c.name.like("epoch-%")
                )
            ).scalar()
            conn.execute(
                job_metrics.delete().where(
                    job_metrics.c.job_id == job_id, job_metrics.c.epoch > (resumed or 0)
                )
            )
            # Progress goes back with them: the job document never shows an epoch it lost.
            kept = conn.execute(
                sa.select(job_metrics.c.row).where(
                    job_metrics.c.job_id == job_id, job_metrics.c.epoch == (resumed or 0)
                )
            ).scalar()
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(progress_epoch=resumed or 0, latest_metrics=kept)
            )
            conn.execute(
                job_history.insert().values(
                    job_id=job_id,
                    status="running",
                    at=at,
                    attempt=row.attempts,
                    worker=owner,
                    resumed_from_epoch=resumed,
                )
            )
        return Claim(job_id, row.spec, row.attempts, resumed)

    def heartbeat(self, job_id: str, owner: str, lease_seconds: float) -> bool | None:
        """Renew the lease. True: cancel requested; False: carry on; None: the lease is lost
        (the reaper gave the job to another worker), so stop without writing anything."""
        with self._write() as conn:
            return leased.heartbeat(conn, jobs, job_id, owner, lease_seconds, now())

    @_rings
    def record_epoch(self, job_id: str, owner: str, row: dict[str, Any]) -> bool:
        epoch = int(row["epoch"])
        with self._write() as conn:
            if not leased.owns(conn, jobs, job_id, owner):
                return False
            conn.execute(
                job_metrics.delete().where(job_metrics.c.job_id == job_id, job_metrics.c.epoch == epoch)
            )
            conn.execute(job_metrics.insert().values(job_id=job_id, epoch=epoch, row=row, at=now()))
            job_counts.count_epoch(conn)
            conn.execute(
                jobs.update().where(jobs.c.id == job_id).values(progress_epoch=epoch, latest_metrics=row)
            )
        return True

    @_rings
    def record_checkpoint(
        self,
        job_id: str,
        owner: str,
        *,
        name: str,
        epoch: int,
        path: str,
        size_bytes: int,
        sha256: str,
        metrics: dict[str, Any],
    ) -> bool:
        with self._write() as conn:
            if not leased.owns(conn, jobs, job_id, owner):
                return False
            conn.execute(
                checkpoints.delete().where(checkpoints.c.job_id == job_id, checkpoints.c.name == name)
            )
            conn.execute(
                checkpoints.insert().values(
                    job_id=job_id,
                    name=name,
                    epoch=epoch,
                    path=path,
                    size_bytes=size_bytes,
                    sha256=sha256,
                    metrics=metrics,
                    at=now(),
                )
            )
        return True

    def remove_checkpoint(self, job_id: str, owner: str, name: str) -> None:
        with self._write() as conn:
            if leased.owns(conn, jobs, job_id, owner):
                conn.execute(
                    checkpoints.delete().where(checkpoints.c.job_id == job_id, checkpoints.c.name == name)
                )

    def note_resumed_from(self, job_id: str, attempt: int, epoch: int | None) -> None:
        """The engine says where it actually resumed; correct this attempt's history row."""
        with self._write() as conn:
            conn.execute(
                job_history.update()
                .where(
                    job_history.c.job_id == job_id,
                    job_history.c.status == "running",
                    job_history.c.attempt == attempt,
                )
                .values(resumed_from_epoch=epoch)
            )

    @_rings
    def finish(
        self,
        job_id: str,
        owner: str,
        status: Literal["succeeded", "failed", "cancelled"],
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Write the final state, once: only the lease owner of a running job can."""
        at = now()
        with self._write() as conn:
            attempt = leased.finish(conn, jobs, job_id, owner, status, at, result=result, error=error)
            if attempt is None:
                return False
            started = conn.execute(sa.select(jobs.c.started_at).where(jobs.c.id == job_id)).scalar()
            job_counts.count_finished(conn, [(status, started, at)])
            conn.execute(
                job_history.insert().values(
                    job_id=job_id, status=status, at=at, attempt=attempt, worker=owner
                )
            )
        for sweep_id in self.sweeps_awaiting(job_id):  # a sweep's best trial, retrained
            self.settle_sweep(sweep_id)
        return True

    @_rings
    def release(self, job_id: str, owner: str) -> str | None:
        """Give a job back to the queue (its worker is shutting down); its queue, or None."""
        at = now()
        with self._write() as conn:
            queue = leased.release(conn, jobs, job_id, owner, at)
            if queue is None:
                return None
            conn.execute(
                job_history.insert().values(
                    job_id=job_id, status="queued", at=at, worker=owner, message="worker shut down"
                )
            )
        return queue

    def reap(self, max_attempts: int, resend_after_s: float) -> list[tuple[str, str]]:
        """Deal with running jobs whose lease expired (their worker died): cancel the ones
        flagged for cancel, fail worker_lost the ones out of attempts, put the rest back on
        the queue. Also pick queued jobs whose message is older than resend_after_s: it may
        have been lost (a broker restart, an API killed between insert and send), and a
        duplicate is harmless. Returns (job id, queue) of every job to send a message for."""
        at = now()
        with self._write() as conn:
            transitions = leased.expire(conn, jobs, max_attempts, at)
            for status, job_id, _ in transitions:
                conn.execute(
                    job_history.insert().values(job_id=job_id, status=status, at=at, message="lease expired")
                )
            ended = [job_id for status, job_id, _ in transitions if status != "queued"]
            if ended:
                rows = conn.execute(
                    sa.select(jobs.c.status, jobs.c.started_at).where(jobs.c.id.in_(ended))
                ).all()
                job_counts.count_finished(conn, [(r.status, r.started_at, at) for r in rows])
            stale = leased.resend_stale(conn, jobs, resend_after_s, at)
        return _requeued(transitions) + stale

    def waiting(self, older_than_s: float) -> dict[str, tuple[int, int]]:
        """Queue → (queued jobs and sweeps, those of them whose message went out more than
        older_than_s ago): the reaper compares the first with what the broker holds, to find
        lost messages, and resends among the second."""
        at = now()
        counts: dict[str, tuple[int, int]] = {}
        with self._read() as conn:
            for table in (jobs, sweeps):
                old = leased.waiting_counts(conn, table, older_than_s, at)
                for queue, n in leased.waiting_counts(conn, table, 0.0, at).items():
                    total, stale = counts.get(queue, (0, 0))
                    counts[queue] = (total + n, stale + old.get(queue, 0))
        return counts

    def resend_waiting(self, queue: str, older_than_s: float, limit: int) -> tuple[list[str], list[str]]:
        """The ids of up to `limit` of the longest-waiting jobs and sweeps of `waiting` on
        `queue`, marked as sent now."""
        at = now()
        with self._write() as conn:
            job_ids = [i for i, _ in leased.resend_stale(conn, jobs, older_than_s, at, queue, limit)]
            left = limit - len(job_ids)
            sweep_ids = (
                [i for i, _ in leased.resend_stale(conn, sweeps, older_than_s, at, queue, left)]
                if left
                else []
            )
        return job_ids, sweep_ids

    # --- sweeps: the API side -------------------------------------------------------------

    def create_sweep(
        self,
        *,
        tenant: str,
        spec: dict[str, Any],
        queue: str,
        trials: list[dict[str, Any]],
        idempotency_key: str | None = None,
        request_sha256: str | None = None,
    ) -> Row:
        """Insert a queued sweep and one queued row per trial (`trials[i]` = trial i's params);
        raises sa.exc.IntegrityError if the idempotency key is taken."""
        sweep_id = new_id()
        at = now()
        values = leased.queued_values(
            row_id=sweep_id,
            tenant=tenant,
            spec=spec,
            queue=queue,
            at=at,
            idempotency_key=idempotency_key,
            request_sha256=request_sha256,
        )
        with self._write() as conn:
            conn.execute(sweeps.insert().values(**values))
            if trials:  # a search's trials are added as the sampler proposes them
                conn.execute(
                    sweep_trials.insert(),
                    [
                        {
                            "sweep_id": sweep_id,
                            "trial_index": i,
                            "params": p,
                            "status": "queued",
                            "vectorized": False,
                        }
                        for i, p in enumerate(trials)
                    ],
                )
        sweep = self.get_sweep(sweep_id)
        assert sweep is not None
        return sweep

    def get_sweep(self, sweep_id: str, tenant: str | None = None) -> Row | None:
        return self._first(leased.by_id(sweeps, sweep_id, tenant))

    def sweep_by_idempotency_key(self, tenant: str, key: str) -> Row | None:
        return self._first(leased.by_idempotency_key(sweeps, tenant, key))

    def list_sweeps(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]:
        """Newest first; `before_seq` is the cursor, as for jobs."""
        return self._all(leased.page(sweeps, tenant, status=status, limit=limit, before_seq=before_seq))

    def trials(self, sweep_ids: list[str]) -> dict[str, list[Row]]:
        """Each sweep's trial rows, in index order."""
        out: dict[str, list[Row]] = {sweep_id: [] for sweep_id in sweep_ids}
        if not sweep_ids:
            return out
        query = (
            sweep_trials.select()
            .where(sweep_trials.c.sweep_id.in_(sweep_ids))
            .order_by(sweep_trials.c.sweep_id, sweep_trials.c.trial_index)
        )
        with self._read() as conn:
            for r in conn.execute(query).mappings():
                out[r["sweep_id"]].append(dict(r))
        return out

    def requeue_unsent_sweep(self, sweep_id: str) -> bool:
        """`requeue_unsent` for sweeps (its trials are still queued: they never ran)."""
        with self._write() as conn:
            done = leased.requeue_unsent(conn, sweeps, sweep_id, now())
            if done:  # fail_queued_sweep cancelled every trial; none of them had started
                conn.execute(
                    sweep_trials.update()
                    .where(sweep_trials.c.sweep_id == sweep_id)
                    .values(status="queued", finished_at=None)
                )
        return done

    def cancel_sweep(self, sweep_id: str, tenant: str | None = None) -> CancelOutcome:
        """As `cancel` for jobs: a queued sweep ends at once, a running one is flagged."""
        at = now()
        with self._write() as conn:
            outcome = leased.cancel(conn, sweeps, sweep_id, tenant, at)
            if outcome == "cancelled":
                _settle_trials(conn, [sweep_id], "cancelled", at)
        return outcome

    def fail_queued_sweep(self, sweep_id: str, error: dict[str, Any]) -> None:
        """A sweep that could not be put on the queue (broker down) fails instead of waiting."""
        at = now()
        with self._write() as conn:
            if leased.fail_queued(conn, sweeps, sweep_id, error, at):
                _settle_trials(conn, [sweep_id], "cancelled", at)

    # --- sweeps: the worker side -----------------------------------------------------------

    def claim_sweep(
        self, sweep_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> SweepClaim | None:
        """Take a queued sweep, or a running one whose worker went silent, in one conditional
        UPDATE (as `claim` does for jobs); its unfinished trials are then running."""
        with self._write() as conn:
            row = leased.claim(
                conn,
                sweeps,
                sweep_id,
                owner,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                at=now(),
                returning=(sweeps.c.tenant, sweeps.c.spec, sweeps.c.attempts),
            )
            if row is None:
                return None
            conn.execute(
                sweep_trials.update()
                .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.status.not_in(TRIAL_FINISHED))
                .values(status="running", updated_at=now())
            )
            finished = conn.execute(
                sa.select(sweep_trials.c.trial_index).where(
                    sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.status.in_(TRIAL_FINISHED)
                )
            ).scalars()
            return SweepClaim(sweep_id, row.tenant, row.spec, row.attempts, frozenset(finished))

    def sweep_heartbeat(self, sweep_id: str, owner: str, lease_seconds: float) -> bool | None:
        """As `heartbeat`: True = cancel requested, False = carry on, None = lease lost."""
        with self._write() as conn:
            return leased.heartbeat(conn, sweeps, sweep_id, owner, lease_seconds, now())

    def record_trial(self, sweep_id: str, owner: str, index: int, **fields: Any) -> bool:
        """Write one finished trial (status, metrics, score, fold_scores, best_epoch,
        vectorized, error, epochs_trained, pruned_at_epoch, reason), only while `owner`
        holds the sweep's lease."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return False
            conn.execute(
                sweep_trials.update()
                .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index == index)
                .values(finished_at=at, updated_at=at, **fields)
            )
        return True

    def add_trial(self, sweep_id: str, owner: str, index: int, params: dict[str, Any], *, unit: int) -> bool:
        """A trial the sampler just proposed, running in `unit` on `owner` (a search sweep)."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return False
            conn.execute(
                sweep_trials.insert().values(
                    sweep_id=sweep_id,
                    trial_index=index,
                    params=params,
                    status="running",
                    vectorized=False,
                    worker=owner,
                    unit=unit,
                    started_at=at,
                    updated_at=at,
                )
            )
        return True

    def trial_progress(self, sweep_id: str, owner: str, progress: dict[int, dict[str, Any]]) -> None:
        """Each running trial's latest epoch ({"fold", "epoch", "step", <metric>}), in one write."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return
            for index, p in progress.items():
                conn.execute(
                    sweep_trials.update()
                    .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index == index)
                    .values(progress=p, updated_at=at)
                )

    def trials_ended(self, sweep_id: str) -> int:
        """Trials of a search that count toward its `trials`: succeeded, pruned or failed."""
        query = sa.select(sa.func.count()).where(
            sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.status.in_(("succeeded", "pruned", "failed"))
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def next_unit(self, sweep_id: str) -> int:
        query = sa.select(sa.func.max(sweep_trials.c.unit)).where(sweep_trials.c.sweep_id == sweep_id)
        with self._read() as conn:
            last = conn.execute(query).scalar()
        return 0 if last is None else int(last) + 1

    def trials_changed(self, sweep_id: str, after: datetime | None) -> list[Row]:
        """A sweep's trial rows written after `after` (all with None), oldest change first."""
        query = sweep_trials.select().where(sweep_trials.c.sweep_id == sweep_id)
        if after is not None:
            query = query.where(sweep_trials.c.updated_at > after)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query.order_by(sweep_trials.c.updated_at)).mappings()]

    def await_retrain(
        self,
        sweep_id: str,
        owner: str,
        *,
        best_index: int,
        best_job_id: str,
        warnings: list[str],
    ) -> bool:
        """The search is over and its best trial's retrain job queued: the sweep stays running,
        with no lease (no worker holds it; the reaper leaves it be), until that job finishes
        (see settle_sweep)."""
        with self._write() as conn:
            done = conn.execute(
                sweeps.update()
                .where(leased.held(sweeps, sweep_id, owner))
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    best_index=best_index,
                    best_job_id=best_job_id,
                    warnings=warnings,
                )
                .returning(sweeps.c.id)
            ).first()
            if done is None:
                return False
            _settle_trials(conn, [sweep_id], "cancelled", now())
        self.settle_sweep(sweep_id)
        return True

    def settle_sweep(self, sweep_id: str) -> str | None:
        """A sweep waiting for its retrain job ends with the job: succeeded with it, failed
        when it failed or was cancelled, cancelled when the sweep's cancel was asked for. Its
        new status, or None while it still waits (or was not waiting)."""
        waiting = (
            (sweeps.c.id == sweep_id)
            & (sweeps.c.status == "running")
            & sweeps.c.lease_owner.is_(None)
            & sweeps.c.best_job_id.is_not(None)
        )
        with self._write() as conn:
            row = conn.execute(
                sa.select(sweeps.c.best_job_id, sweeps.c.cancel_requested).where(waiting)
            ).first()
            if row is None:
                return None
            job = conn.execute(
                sa.select(jobs.c.status, jobs.c.error).where(jobs.c.id == row.best_job_id)
            ).first()
            job_status = job.status if job is not None else "failed"
            if row.cancel_requested:
                status, error = "cancelled", None
            elif job_status not in FINISHED:
                return None
            elif job_status == "succeeded":
                status, error = "succeeded", None
            else:
                error = {
                    "type": "retrain_failed",
                    "message": f"the best trial's retrain job {row.best_job_id} ended {job_status}",
                }
                status = "failed"
            done = conn.execute(
                sweeps.update().where(waiting).values(status=status, finished_at=now(), error=error)
            ).rowcount
        return status if done else None

    def sweeps_awaiting(self, job_id: str) -> list[str]:
        query = sa.select(sweeps.c.id).where(
            sweeps.c.best_job_id == job_id, sweeps.c.status == "running", sweeps.c.lease_owner.is_(None)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def finish_sweep(
        self,
        sweep_id: str,
        owner: str,
        status: Literal["succeeded", "failed", "cancelled"],
        *,
        best_index: int | None = None,
        best_job_id: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Write the final state once (lease owner only); unfinished trials end cancelled."""
        at = now()
        with self._write() as conn:
            values = {"best_index": best_index, "best_job_id": best_job_id, "error": error}
            if leased.finish(conn, sweeps, sweep_id, owner, status, at, **values) is None:
                return False
            _settle_trials(conn, [sweep_id], "cancelled", at)
        return True

    def release_sweep(self, sweep_id: str, owner: str) -> str | None:
        """Give a sweep back to the queue (its worker is shutting down); its queue, or None."""
        with self._write() as conn:
            queue = leased.release(conn, sweeps, sweep_id, owner, now())
            if queue is not None:
                _requeue_trials(conn, [sweep_id])
        return queue

    def reap_sweeps(self, max_attempts: int, resend_after_s: float) -> list[tuple[str, str]]:
        """`reap` for sweeps: (sweep id, queue) of every sweep to send a message for."""
        at = now()
        with self._write() as conn:
            transitions = leased.expire(conn, sweeps, max_attempts, at)
            requeued = _requeued(transitions)
            _requeue_trials(conn, [sweep_id for sweep_id, _ in requeued])
            ended = [sweep_id for status, sweep_id, _ in transitions if status != "queued"]
            _settle_trials(conn, ended, "cancelled", at)
            stale = leased.resend_stale(conn, sweeps, resend_after_s, at)
        return requeued + stale

    # --- datasets --------------------------------------------------------------------------

    def create_dataset(self, *, dataset_id: str, tenant: str, **fields: Any) -> Row:
        with self._write() as conn:
            conn.execute(datasets.insert().values(id=dataset_id, tenant=tenant, created_at=now(), **fields))
        row = self.get_dataset(dataset_id)
        assert row is not None
        return row

    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Row | None:
        query = datasets.select().where(datasets.c.id == dataset_id)
        if tenant is not None:
            query = query.where(datasets.c.tenant == tenant)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def list_datasets(self, tenant: str) -> list[Row]:
        query = datasets.select().where(datasets.c.tenant == tenant).order_by(datasets.c.seq.desc())
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # --- deletion and retention ------------------------------------------------------------

    def delete_job(self, job_id: str, tenant: str) -> DeleteOutcome:
        """Delete a finished job with its history, metrics and checkpoint rows ("active": it
        is queued or running, and stays). A finished job never changes again, so the conditional
        DELETE decides alone."""
        owned = (jobs.c.id == job_id) & (jobs.c.tenant == tenant)
        with self._write() as conn:
            status = conn.execute(sa.select(jobs.c.status).where(owned)).scalar()
            if status is None:
                return "missing"
            if status not in FINISHED:
                return "active"
            for child in (job_history, job_metrics, checkpoints):
                conn.execute(child.delete().where(child.c.job_id == job_id))
            if conn.execute(jobs.delete().where(owned, jobs.c.status.in_(FINISHED))).rowcount:
                job_counts.uncount_finished(conn, status)
        return "deleted"

    def delete_dataset(self, dataset_id: str, tenant: str) -> DeleteOutcome:
        """Delete an uploaded dataset's row ("active": a queued or running job or sweep of the
        tenant trains on it)."""
        owned = (datasets.c.id == dataset_id) & (datasets.c.tenant == tenant)
        with self._write() as conn:
            if conn.execute(sa.select(datasets.c.id).where(owned)).first() is None:
                return "missing"
            for table in (jobs, sweeps):
                specs = conn.execute(
                    sa.select(table.c.spec).where(table.c.tenant == tenant, table.c.status.not_in(FINISHED))
                ).scalars()
                if any(_dataset_id(spec) == dataset_id for spec in specs):
                    return "active"
            conn.execute(datasets.delete().where(owned))
        return "deleted"

    def prune_epoch_checkpoints(self, job_id: str, keep: int) -> list[str]:
        """A finished job keeps best, final and its last `keep` epoch checkpoints: the other
        epoch rows are deleted (first, so that no listed checkpoint lacks its file) and their
        names returned for the caller to remove the files."""
        with self._write() as conn:
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            if status not in FINISHED:
                return []
            rows = conn.execute(
                sa.select(checkpoints.c.name, checkpoints.c.epoch).where(checkpoints.c.job_id == job_id)
            ).all()
            epochs = sorted((epoch, name) for name, epoch in rows if _EPOCH_NAME.match(name))
            drop = [name for _, name in (epochs[:-keep] if keep else epochs)]
            if drop:
                conn.execute(
                    checkpoints.delete().where(checkpoints.c.job_id == job_id, checkpoints.c.name.in_(drop))
                )
        return drop


DeleteOutcome = Literal["deleted", "active", "missing"]
_EPOCH_NAME = re.compile(r"^epoch-\d+$")


def _dataset_id(spec: Any) -> str | None:
    """The uploaded dataset a job's spec (or a sweep's base spec) trains on."""
    if not isinstance(spec, dict):
        return None
    dataset = (spec.get("base") or spec).get("dataset")
    return dataset.get("id") if isinstance(dataset, dict) else None


def _requeued(transitions: list[leased.Transition]) -> list[tuple[str, str]]:
    """(id, queue) of the rows the reaper put back on the queue: each needs a message."""
    return [(row_id, queue) for status, row_id, queue in transitions if status == "queued"]


def _requeue_trials(conn: sa.Connection, sweep_ids: list[str]) -> None:
    """A sweep back on the queue: the trials its worker was running wait for the next one."""
    if sweep_ids:
        conn.execute(
            sweep_trials.update()
            .where(sweep_trials.c.sweep_id.in_(sweep_ids), sweep_trials.c.status == "running")
            .values(status="queued")
        )


def _settle_trials(conn: sa.Connection, sweep_ids: list[str], status: str, at: datetime) -> None:
    """A sweep that ended leaves no trial queued or running."""
    if sweep_ids:
        conn.execute(
            sweep_trials.update()
            .where(sweep_trials.c.sweep_id.in_(sweep_ids), sweep_trials.c.status.not_in(TRIAL_FINISHED))
            .values(status=status, finished_at=at)
        )


def open_store(url: str, *, migrate_schema: bool = True, pool_size: int = DEFAULT_POOL_SIZE) -> Repository:
    engine = make_engine(url, pool_size)
    if migrate_schema:
        migrate.upgrade(engine)
    return Repository(engine)
