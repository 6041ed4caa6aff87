"""Webhook deliveries as rows: written with the change they announce, sent by whichever process
claims them (service/notify/webhooks.py), so a delivery outlives the process that scheduled it.

A delivery is leased like a job: a sender claims due rows with a conditional UPDATE (so two
processes never send one at once) and holds them for the delivery's deadline; a sender that dies
leaves rows whose lease lapses and which another process sends. A job's deliveries leave in the
order of its changes: a row is due only once every earlier row of its job has ended.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from service.store.engine import write_transaction
from service.store.repository import new_id, now
from service.store.tables import webhook_deliveries as deliveries


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    tenant: str
    url: str
    event: str
    body: str
    secret: str | None
    attempts: int  # including the one just claimed
    # the egress rule recorded with the job: may the receiver be a private address?
    allow_private: bool


# Delivery's fields in order, as the outbox's columns
_COLUMNS = [*(f for f in Delivery.__dataclass_fields__ if f != "allow_private"), "egress_private"]


class WebhookOutbox:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _write(self) -> AbstractContextManager[sa.Connection]:
        # claim_due reads, then updates: it needs BEGIN IMMEDIATE on SQLite.
        return write_transaction(self.engine)

    def add(
        self,
        *,
        job_id: str,
        tenant: str,
        url: str,
        event: str,
        body: str,
        secret: str | None,
        allow_private: bool,
    ) -> str:
        at = now()
        delivery_id = f"msg_{new_id()}"
        with self._write() as conn:
            conn.execute(
                deliveries.insert().values(
                    id=delivery_id,
                    job_id=job_id,
                    tenant=tenant,
                    url=url,
                    event=event,
                    body=body,
                    secret=secret,
                    egress_private=allow_private,
                    status="pending",
                    attempts=0,
                    next_at=at,
                    created_at=at,
                )
            )
        return delivery_id

    def claim_due(self, limit: int, lease_s: float) -> list[Delivery]:
        """Up to `limit` due deliveries, each now held for lease_s (and its attempt counted)."""
        at = now()
        earlier = deliveries.alias("earlier")
        free = (deliveries.c.lease_until.is_(None)) | (deliveries.c.lease_until < at)
        due = (deliveries.c.status == "pending") & (deliveries.c.next_at <= at) & free
        first_of_its_job = ~sa.exists().where(
            earlier.c.job_id == deliveries.c.job_id,
            earlier.c.status == "pending",
            earlier.c.seq < deliveries.c.seq,
        )
        pick = (
            sa.select(deliveries.c.seq).where(due, first_of_its_job).order_by(deliveries.c.seq).limit(limit)
        )
        with self._write() as conn:
            seqs = [r[0] for r in conn.execute(pick)]
            if not seqs:
                return []
            # `due` again in the UPDATE: of two senders that picked the same row, the second
            # finds it leased (PostgreSQL re-checks the condition on the locked row).
            rows = conn.execute(
                deliveries.update()
                .where(deliveries.c.seq.in_(seqs), due)
                .values(lease_until=at + timedelta(seconds=lease_s), attempts=deliveries.c.attempts + 1)
                .returning(*(deliveries.c[name] for name in _COLUMNS))
            ).all()
        return [Delivery(*r) for r in rows]

    # Each outcome is written only by the try that holds the delivery (its claim's attempt
    # number): a sender whose lease lapsed mid-request cannot undo a later sender's claim.

    def purge(self, older_than_s: float, limit: int = 1000) -> int:
        """Delete up to `limit` delivered or failed deliveries that ended more than
        `older_than_s` ago; how many went. Bounded so one pass never holds the lock long."""
        cutoff = now() - timedelta(seconds=older_than_s)
        ended = sa.select(deliveries.c.id).where(
            deliveries.c.status.in_(("delivered", "failed")), deliveries.c.finished_at < cutoff
        )
        with self._write() as conn:
            doomed = ended.limit(limit).scalar_subquery()
            return conn.execute(deliveries.delete().where(deliveries.c.id.in_(doomed))).rowcount

    def delivered(self, d: Delivery) -> None:
        self._end(d, "delivered", None)

    def failed(self, d: Delivery, error: str) -> None:
        self._end(d, "failed", error)

    def retry(self, d: Delivery, at: datetime, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                deliveries.update()
                .where(self._held(d))
                .values(next_at=at, lease_until=None, last_error=error[:2000])
            )

    def _end(self, d: Delivery, status: str, error: str | None) -> None:
        with self._write() as conn:
            conn.execute(
                deliveries.update()
                .where(self._held(d))
                .values(status=status, finished_at=now(), lease_until=None, last_error=error and error[:2000])
            )

    @staticmethod
    def _held(d: Delivery) -> sa.ColumnElement[bool]:
        return (
            (deliveries.c.id == d.id)
            & (deliveries.c.status == "pending")
            & (deliveries.c.attempts == d.attempts)
        )
