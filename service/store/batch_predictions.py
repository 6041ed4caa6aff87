"""A job's batch predictions as leased rows (POST /v1/jobs/{id}/predictions): the API inserts one
queued, any worker on the job's queue claims it with a conditional UPDATE, scores the dataset
under a lease and writes the final state once; the reaper hands one whose worker went silent to
another. The lifecycle is store/leased.py's, the same as jobs', sweeps' and sweep units'.

A row belongs to its job (deleted with it, by the foreign key's cascade) and to the job's
tenant: every API read names both, so another tenant's id reads as missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from service.store import leased
from service.store.base import new_id, now
from service.store.datasets import hold_dataset
from service.store.engine import write_transaction
from service.store.leased import Row
from service.store.tables import batch_predictions as table

Outcome = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class PredictionClaim:
    """A batch prediction a worker now holds."""

    prediction_id: str
    job_id: str
    tenant: str
    spec: dict[str, Any]
    attempt: int
    egress_private: bool


class BatchPredictions:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    # --- the API side ------------------------------------------------------------------------

    def create(
        self,
        *,
        job_id: str,
        tenant: str,
        spec: dict[str, Any],
        queue: str,
        egress_private: bool,
        dataset_id: str | None = None,
    ) -> Row:
        """Insert a queued batch prediction of the tenant's job. `dataset_id`: the tenant's
        upload it scores, held while it is inserted (DatasetGone if it was deleted meanwhile)."""
        at = now()
        values = {
            "id": new_id(),
            "job_id": job_id,
            "tenant": tenant,
            "spec": spec,
            "queue": queue,
            "status": "queued",
            "created_at": at,
            "enqueued_at": at,
            "attempts": 0,
            "cancel_requested": False,
            "egress_private": egress_private,
        }
        with self._write() as conn:
            if dataset_id is not None:
                hold_dataset(conn, dataset_id, tenant)
            return dict(conn.execute(table.insert().values(**values).returning(*table.c)).mappings().one())

    def active(self, tenant: str) -> int:
        """How many of the tenant's batch predictions are queued or running."""
        query = sa.select(sa.func.count()).where(
            table.c.tenant == tenant, table.c.status.in_(("queued", "running"))
        )
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def get(self, job_id: str, prediction_id: str, tenant: str) -> Row | None:
        """The tenant's batch prediction of its job; None for another tenant's, or another job's."""
        query = table.select().where(
            table.c.id == prediction_id, table.c.job_id == job_id, table.c.tenant == tenant
        )
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def fail_queued(self, prediction_id: str, error: dict[str, Any]) -> None:
        """One whose message could not be sent (the broker is down) fails instead of waiting."""
        with self._write() as conn:
            leased.fail_queued(conn, table, prediction_id, error, now())

    # --- the worker side ---------------------------------------------------------------------

    def claim(
        self, prediction_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> PredictionClaim | None:
        with self._write() as conn:
            row = leased.claim(
                conn,
                table,
                prediction_id,
                owner,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                at=now(),
                returning=(
                    table.c.job_id,
                    table.c.tenant,
                    table.c.spec,
                    table.c.attempts,
                    table.c.egress_private,
                ),
            )
        if row is None:
            return None
        return PredictionClaim(
            prediction_id, row.job_id, row.tenant, row.spec, int(row.attempts), bool(row.egress_private)
        )

    def heartbeat(self, prediction_id: str, owner: str, lease_seconds: float) -> bool | None:
        with self._write() as conn:
            return leased.heartbeat(conn, table, prediction_id, owner, lease_seconds, now())

    def finish(self, prediction_id: str, owner: str, status: Outcome, **values: Any) -> bool:
        """The final state (`rows`, `size_bytes` or `error`), once, by the lease owner only:
        False when this worker no longer holds it (the reaper gave it on, or its job was
        deleted meanwhile)."""
        with self._write() as conn:
            return leased.finish(conn, table, prediction_id, owner, status, now(), **values) is not None

    def release(self, prediction_id: str, owner: str) -> str | None:
        with self._write() as conn:
            return leased.release(conn, table, prediction_id, owner, now())

    # --- the reaper --------------------------------------------------------------------------

    def reap(self, max_attempts: int, resend_after_s: float) -> list[tuple[str, str]]:
        """Batch predictions whose worker went silent: back on the queue, or failed worker_lost
        after max_attempts; (id, queue) of each to send a message for, with the queued ones
        whose message may have been lost."""
        at = now()
        with self._write() as conn:
            transitions = leased.expire(conn, table, max_attempts, at)
            stale = leased.resend_stale(conn, table, resend_after_s, at)
        return [(i, q) for status, i, q in transitions if status == "queued"] + stale
