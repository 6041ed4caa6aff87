"""Jobs in the store: submit, read, list, cancel and delete them (the API side); claim,
heartbeat, record epochs and checkpoints, finish, release and reap them (the worker side).

About 450 lines in one module on purpose: each conditional UPDATE of the lease lifecycle sits
beside the reads and writes it races with, and one class keeps a job's whole life in view."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.store import job_counts, job_reads, leased, mlflow_runs
from service.store.base import DeleteOutcome, StoreBase, grouped, new_id, now, requeued, rings
from service.store.datasets import hold_dataset
from service.store.leased import FINISHED, CancelOutcome, Row
from service.store.tables import (
    checkpoints,
    job_history,
    job_metrics,
    jobs,
)

log = logging.getLogger("regtrain.store")

_EPOCH_NAME = re.compile(r"^epoch-\d+$")


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns: its spec, this attempt's number, and what the API admitted it
    under (its tenant, and its egress rule: may it reach private addresses?), which the worker
    obeys whatever its own settings say."""

    job_id: str
    spec: dict[str, Any]
    attempt: int
    resumed_from_epoch: int | None
    tenant: str
    egress_private: bool


# The submit's inserts, built once and run with each row's values (a statement built per call
# with .values() was most of a submit's CPU).
_INSERT_JOB = jobs.insert().returning(*jobs.c)
_INSERT_HISTORY = job_history.insert().returning(*job_history.c)


class JobStore(StoreBase):
    def create_job(
        self,
        *,
        tenant: str,
        spec: dict[str, Any],
        queue: str,
        idempotency_key: str | None = None,
        request_sha256: str | None = None,
        notify_secret: str | None = None,
        dataset_id: str | None = None,
        egress_private: bool = False,
    ) -> Row:
        """Insert a queued job, with the egress rule that admitted it; raises sa.exc.IntegrityError if the idempotency key is taken.
        The row comes back with its one transition under `history` (as list_jobs' rows), so the
        submit renders its 202 without reading either back. `dataset_id`: the tenant's upload
        it trains on, held while the job is inserted (datasets.hold_dataset: DatasetGone if it
        was deleted meanwhile), so a racing DELETE of it either comes first or finds the job."""
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
        # RETURNING: the row as stored (defaults filled) without a read after the commit, one
        # round trip fewer on every submit.
        with self._write() as conn:
            if dataset_id is not None:
                hold_dataset(conn, dataset_id, tenant)
            job = (
                conn.execute(
                    _INSERT_JOB, {**values, "notify_secret": notify_secret, "egress_private": egress_private}
                )
                .mappings()
                .one()
            )
            queued = conn.execute(_INSERT_HISTORY, {"job_id": job_id, "status": "queued", "at": at})
            history = [dict(queued.mappings().one())]
        return {**job, "history": history}

    def get_job(self, job_id: str, tenant: str | None = None) -> Row | None:
        return self._first(leased.by_id(jobs, job_id, tenant))

    def job_with_history(self, job_id: str, tenant: str | None = None) -> tuple[Row, list[Row]] | None:
        """A job and its transitions in one statement (one round trip, one snapshot, one row):
        GET /v1/jobs/{id}, the API's hottest read (see job_reads)."""
        query = job_reads.by_id(self.engine.dialect.name, tenant=tenant is not None)
        params = {"job_id": job_id} if tenant is None else {"job_id": job_id, "tenant": tenant}
        with self._read() as conn:
            row = conn.execute(query, params).mappings().first()
        return job_reads.decode(row) if row is not None else None

    def job_by_idempotency_key(self, tenant: str, key: str) -> Row | None:
        return self._first(leased.by_idempotency_key(jobs, tenant, key))

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
        if not job_ids:
            return {}
        query = job_history.select().where(job_history.c.job_id.in_(job_ids)).order_by(job_history.c.seq)
        with self._read() as conn:
            return grouped(conn.execute(query).mappings(), "job_id", job_ids)

    @rings
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

    @rings
    def fail_queued(self, job_id: str, error: dict[str, Any]) -> None:
        """A job that could not be put on the queue (broker down) fails instead of waiting forever."""
        at = now()
        with self._write() as conn:
            if leased.fail_queued(conn, jobs, job_id, error, at):
                conn.execute(job_history.insert().values(job_id=job_id, status="failed", at=at))
                job_counts.count_finished(conn, [("failed", None, at)])

    @rings
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

    def note_waiting(self, job_id: str, message: str) -> bool:
        """A queued job a worker could not take (it lacks the job's model type) says why it
        waits, as a `queued` history row: once per distinct reason, so that redeliveries do not
        grow the history. False when the job is not queued (or already says so)."""
        with self._write() as conn:
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            last = conn.execute(
                sa.select(job_history.c.message)
                .where(job_history.c.job_id == job_id)
                .order_by(job_history.c.seq.desc())
                .limit(1)
            ).scalar()
            if status != "queued" or last == message:
                return False
            conn.execute(
                job_history.insert().values(job_id=job_id, status="queued", at=now(), message=message)
            )
        return True

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
            history, metrics, records = (
                [dict(r) for r in conn.execute(q).mappings()]
                for q in (hist, rows, ckpts.order_by(checkpoints.c.at))
            )
        return history, metrics, records

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

    @rings
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
                returning=(jobs.c.spec, jobs.c.attempts, jobs.c.tenant, jobs.c.egress_private),
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
            if self.mlflow_tracking:
                mlflow_runs.track(conn, job_id, "job", at, resumed_from=resumed or 0)
        return Claim(job_id, row.spec, row.attempts, resumed, row.tenant, bool(row.egress_private))

    def heartbeat(self, job_id: str, owner: str, lease_seconds: float) -> bool | None:
        """Renew the lease. True: cancel requested; False: carry on; None: the lease is lost
        (the reaper gave the job to another worker), so stop without writing anything."""
        with self._write() as conn:
            return leased.heartbeat(conn, jobs, job_id, owner, lease_seconds, now())

    @rings
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
            if self.mlflow_tracking:
                mlflow_runs.touch(conn, job_id, now())
        return True

    @rings
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

    @rings
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
            if self.mlflow_tracking:
                mlflow_runs.touch(conn, job_id, at)
        self.job_finished(job_id)
        return True

    @rings
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
                for ended_id in ended if self.mlflow_tracking else []:
                    mlflow_runs.touch(conn, ended_id, at)  # its run ends failed or killed
            stale = leased.resend_stale(conn, jobs, resend_after_s, at)
        return requeued(transitions) + stale

    def delete_job(self, job_id: str, tenant: str) -> DeleteOutcome:
        """Delete a finished job with its history, metrics and checkpoint rows ("active": it
        is queued or running, and stays). The row is locked first (FOR UPDATE on PostgreSQL;
        SQLite's write lock), so of two racing deletes the second waits, then finds it "missing"."""
        owned = (jobs.c.id == job_id) & (jobs.c.tenant == tenant)
        with self._write() as conn:
            status = conn.execute(sa.select(jobs.c.status).where(owned).with_for_update()).scalar()
            if status is None:
                return "missing"
            if status not in FINISHED:
                return "active"
            for child in (job_history, job_metrics, checkpoints):
                conn.execute(child.delete().where(child.c.job_id == job_id))
            if conn.execute(jobs.delete().where(owned, jobs.c.status.in_(FINISHED))).rowcount:
                job_counts.uncount_finished(conn, status)
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
