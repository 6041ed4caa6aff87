"""Every query regtrain makes, in one place.

State changes that race (claim, cancel, finish, reap) are single conditional UPDATEs: the WHERE
clause states what must still be true, and the rows it returns say who won. Two workers never
train the same job, and a reaper running on every worker is safe.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from service.store import migrate
from service.store.engine import WRITE, make_engine
from service.store.tables import checkpoints, datasets, job_history, job_metrics, jobs

FINISHED = ("succeeded", "failed", "cancelled")
Row = dict[str, Any]
CancelOutcome = Literal["cancelled", "requested", "finished", "missing"]


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "") -> str:
    """Server-made ids: they name files under the data dir, so never take them from a user."""
    return prefix + uuid.uuid4().hex


@dataclass(frozen=True)
class Claim:
    """A job a worker now owns: its spec and this attempt's number."""

    job_id: str
    spec: dict[str, Any]
    attempt: int
    resumed_from_epoch: int | None


class Repository:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

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
    ) -> Row:
        """Insert a queued job; raises sa.exc.IntegrityError if the idempotency key is taken."""
        job_id = new_id()
        at = now()
        with self._write() as conn:
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    tenant=tenant,
                    name=spec.get("name"),
                    spec=spec,
                    queue=queue,
                    status="queued",
                    created_at=at,
                    attempts=0,
                    cancel_requested=False,
                    idempotency_key=idempotency_key,
                    request_sha256=request_sha256,
                    enqueued_at=at,
                )
            )
            conn.execute(job_history.insert().values(job_id=job_id, status="queued", at=at))
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str, tenant: str | None = None) -> Row | None:
        query = jobs.select().where(jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def job_by_idempotency_key(self, tenant: str, key: str) -> Row | None:
        query = jobs.select().where(jobs.c.tenant == tenant, jobs.c.idempotency_key == key)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def list_jobs(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]:
        """Newest first; `before_seq` is the cursor (the seq of the last job of the last page)."""
        query = jobs.select().where(jobs.c.tenant == tenant)
        if status is not None:
            query = query.where(jobs.c.status == status)
        if before_seq is not None:
            query = query.where(jobs.c.seq < before_seq)
        query = query.order_by(jobs.c.seq.desc()).limit(limit)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def histories(self, job_ids: list[str]) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {job_id: [] for job_id in job_ids}
        if not job_ids:
            return out
        query = (
            job_history.select()
            .where(job_history.c.job_id.in_(job_ids))
            .order_by(job_history.c.seq)
        )
        with self._read() as conn:
            for r in conn.execute(query).mappings():
                out[r["job_id"]].append(dict(r))
        return out

    def cancel(self, job_id: str, tenant: str | None = None) -> CancelOutcome:
        """A queued job is cancelled at once (it will never start); a running one is flagged
        and its worker stops it at the next heartbeat."""
        at = now()
        owned = jobs.c.id == job_id
        if tenant is not None:
            owned = owned & (jobs.c.tenant == tenant)
        with self._write() as conn:
            done = conn.execute(
                jobs.update()
                .where(owned, jobs.c.status == "queued")
                .values(status="cancelled", finished_at=at, cancel_requested=True)
                .returning(jobs.c.id)
            ).first()
            if done:
                conn.execute(job_history.insert().values(job_id=job_id, status="cancelled", at=at))
                return "cancelled"
            flagged = conn.execute(
                jobs.update()
                .where(owned, jobs.c.status == "running")
                .values(cancel_requested=True)
                .returning(jobs.c.id)
            ).first()
            if flagged:
                return "requested"
            exists = conn.execute(sa.select(jobs.c.id).where(owned)).first()
            return "finished" if exists else "missing"

    def fail_queued(self, job_id: str, error: dict[str, Any]) -> None:
        """A job that could not be put on the queue (broker down) fails instead of waiting forever."""
        at = now()
        with self._write() as conn:
            done = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "queued")
                .values(status="failed", finished_at=at, error=error)
                .returning(jobs.c.id)
            ).first()
            if done:
                conn.execute(job_history.insert().values(job_id=job_id, status="failed", at=at))

    def metrics(self, job_id: str) -> list[Row]:
        query = (
            sa.select(job_metrics.c.row)
            .where(job_metrics.c.job_id == job_id)
            .order_by(job_metrics.c.epoch)
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
        query = checkpoints.select().where(
            checkpoints.c.job_id == job_id, checkpoints.c.name == name
        )
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    # --- jobs: the worker side -------------------------------------------------------------

    def claim(self, job_id: str, owner: str, lease_seconds: float, max_attempts: int) -> Claim | None:
        """Take a queued job, or a running one whose worker went silent, in one conditional
        UPDATE; None if another worker has it, or it is finished or cancelled."""
        at = now()
        claimable = (jobs.c.status == "queued") | (
            (jobs.c.status == "running")
            & (jobs.c.lease_expires_at < at)
            & (jobs.c.attempts < max_attempts)
            & sa.not_(jobs.c.cancel_requested)
        )
        with self._write() as conn:
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, claimable)
                .values(
                    status="running",
                    attempts=jobs.c.attempts + 1,
                    lease_owner=owner,
                    lease_expires_at=at + timedelta(seconds=lease_seconds),
                    started_at=sa.func.coalesce(jobs.c.started_at, at),
                )
                .returning(jobs.c.spec, jobs.c.attempts)
            ).first()
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
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")
                .values(lease_expires_at=now() + timedelta(seconds=lease_seconds))
                .returning(jobs.c.cancel_requested)
            ).first()
        return None if row is None else bool(row.cancel_requested)

    def _owns(self, conn: sa.Connection, job_id: str, owner: str) -> bool:
        return (
            conn.execute(
                sa.select(jobs.c.id).where(
                    jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running"
                )
            ).first()
            is not None
        )

    def record_epoch(self, job_id: str, owner: str, row: dict[str, Any]) -> bool:
        epoch = int(row["epoch"])
        with self._write() as conn:
            if not self._owns(conn, job_id, owner):
                return False
            conn.execute(
                job_metrics.delete().where(job_metrics.c.job_id == job_id, job_metrics.c.epoch == epoch)
            )
            conn.execute(job_metrics.insert().values(job_id=job_id, epoch=epoch, row=row, at=now()))
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(progress_epoch=epoch, latest_metrics=row)
            )
        return True

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
            if not self._owns(conn, job_id, owner):
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
            if self._owns(conn, job_id, owner):
                conn.execute(
                    checkpoints.delete().where(
                        checkpoints.c.job_id == job_id, checkpoints.c.name == name
                    )
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
            done = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")
                .values(
                    status=status,
                    finished_at=at,
                    result=result,
                    error=error,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(jobs.c.attempts)
            ).first()
            if done is None:
                return False
            conn.execute(
                job_history.insert().values(
                    job_id=job_id, status=status, at=at, attempt=done.attempts, worker=owner
                )
            )
        return True

    def release(self, job_id: str, owner: str) -> str | None:
        """Give a job back to the queue (its worker is shutting down); its queue, or None."""
        at = now()
        with self._write() as conn:
            row = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")
                .values(status="queued", lease_owner=None, lease_expires_at=None, enqueued_at=at)
                .returning(jobs.c.queue)
            ).first()
            if row is None:
                return None
            conn.execute(
                job_history.insert().values(
                    job_id=job_id, status="queued", at=at, worker=owner, message="worker shut down"
                )
            )
        return str(row.queue)

    def reap(self, max_attempts: int, resend_after_s: float) -> list[tuple[str, str]]:
        """Deal with running jobs whose lease expired (their worker died): cancel the ones
        flagged for cancel, fail worker_lost the ones out of attempts, put the rest back on
        the queue. Also pick queued jobs whose message is older than resend_after_s: it may
        have been lost (a broker restart, an API killed between insert and send), and a
        duplicate is harmless. Returns (job id, queue) of every job to send a message for."""
        at = now()
        expired = (jobs.c.status == "running") & (jobs.c.lease_expires_at < at)
        lost = {"type": "worker_lost", "message": f"the worker stopped answering, {max_attempts} times"}
        with self._write() as conn:
            transitions: list[tuple[str, str, str]] = []
            for status, cond, values in (
                ("cancelled", jobs.c.cancel_requested, {"finished_at": at}),
                ("failed", jobs.c.attempts >= max_attempts, {"finished_at": at, "error": lost}),
                ("queued", sa.true(), {"enqueued_at": at}),
            ):
                rows = conn.execute(
                    jobs.update()
                    .where(expired, cond)
                    .values(status=status, lease_owner=None, lease_expires_at=None, **values)
                    .returning(jobs.c.id, jobs.c.queue)
                ).all()
                transitions += [(status, r.id, r.queue) for r in rows]
            for status, job_id, _ in transitions:
                conn.execute(
                    job_history.insert().values(
                        job_id=job_id, status=status, at=at, message="lease expired"
                    )
                )
            stale = conn.execute(
                jobs.update()
                .where(
                    jobs.c.status == "queued",
                    sa.func.coalesce(jobs.c.enqueued_at, jobs.c.created_at)
                    < at - timedelta(seconds=resend_after_s),
                )
                .values(enqueued_at=at)
                .returning(jobs.c.id, jobs.c.queue)
            ).all()
        requeued = [(job_id, queue) for status, job_id, queue in transitions if status == "queued"]
        return requeued + [(r.id, r.queue) for r in stale]

    # --- datasets --------------------------------------------------------------------------

    def create_dataset(self, *, dataset_id: str, tenant: str, **fields: Any) -> Row:
        with self._write() as conn:
            conn.execute(
                datasets.insert().values(id=dataset_id, tenant=tenant, created_at=now(), **fields)
            )
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


def open_store(url: str, *, migrate_schema: bool = True) -> Repository:
    engine = make_engine(url)
    if migrate_schema:
        migrate.upgrade(engine)
    return Repository(engine)
