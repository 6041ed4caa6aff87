"""The queries jobs and sweeps share: both are leased rows with the same lifecycle.

A row is queued, then running under one worker's lease (renewed by heartbeats, which also read
the cancel flag), then finished once; a worker that shuts down releases it back to the queue,
and the reaper hands on rows whose lease expired. `tables.jobs` and `tables.sweeps` carry the
same columns for this, so each function here takes the table and does only the part that is
the same for both. What differs (a job's history rows, a sweep's trial rows) stays in
`repository`, inside the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from service.contract.errors import ErrorType

FINISHED = ("succeeded", "failed", "cancelled")
CancelOutcome = Literal["cancelled", "requested", "finished", "missing"]
Row = dict[str, Any]
# (new status, row id, queue) of a row the reaper moved.
Transition = tuple[str, str, str]


def queued_values(
    *,
    row_id: str,
    tenant: str,
    spec: dict[str, Any],
    queue: str,
    at: datetime,
    idempotency_key: str | None,
    request_sha256: str | None,
) -> dict[str, Any]:
    """The columns of a new row, queued and never attempted."""
    return {
        "id": row_id,
        "tenant": tenant,
        "name": spec.get("name"),
        "spec": spec,
        "queue": queue,
        "status": "queued",
        "created_at": at,
        "enqueued_at": at,
        "attempts": 0,
        "cancel_requested": False,
        "idempotency_key": idempotency_key,
        "request_sha256": request_sha256,
    }


# --- reads -----------------------------------------------------------------------------------


def by_id(table: sa.Table, row_id: str, tenant: str | None = None) -> sa.Select[Any]:
    """One row; with a tenant, only if it is that tenant's (another's reads as missing)."""
    query = table.select().where(table.c.id == row_id)
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    return query


def by_idempotency_key(table: sa.Table, tenant: str, key: str) -> sa.Select[Any]:
    return table.select().where(table.c.tenant == tenant, table.c.idempotency_key == key)


# A value left as a named parameter: the statement is compiled once and run with many values
# (store/event_loop_reads.py).
Bound = sa.BindParameter[Any]


def page(
    table: sa.Table,
    tenant: str | Bound,
    *,
    status: str | Bound | None,
    limit: int | Bound,
    before_seq: int | Bound | None,
) -> sa.Select[Any]:
    """Newest first; `before_seq` is the cursor (the seq of the last row of the last page)."""
    query = table.select().where(table.c.tenant == tenant)
    if status is not None:
        query = query.where(table.c.status == status)
    if before_seq is not None:
        query = query.where(table.c.seq < before_seq)
    return query.order_by(table.c.seq.desc()).limit(limit)


# --- the API side ----------------------------------------------------------------------------


def cancel(
    conn: sa.Connection, table: sa.Table, row_id: str, tenant: str | None, at: datetime
) -> CancelOutcome:
    """A queued row is cancelled at once (it will never start); a running one is flagged and
    its worker stops at the next heartbeat."""
    owned = table.c.id == row_id
    if tenant is not None:
        owned = owned & (table.c.tenant == tenant)
    done = conn.execute(
        table.update()
        .where(owned, table.c.status == "queued")
        .values(status="cancelled", finished_at=at, cancel_requested=True)
        .returning(table.c.id)
    ).first()
    if done:
        return "cancelled"
    flagged = conn.execute(
        table.update()
        .where(owned, table.c.status == "running")
        .values(cancel_requested=True)
        .returning(table.c.id)
    ).first()
    if flagged:
        return "requested"
    exists = conn.execute(sa.select(table.c.id).where(owned)).first()
    return "finished" if exists else "missing"


def fail_queued(
    conn: sa.Connection, table: sa.Table, row_id: str, error: dict[str, Any], at: datetime
) -> bool:
    """A row that could not be put on the queue (broker down) fails instead of waiting forever."""
    done = conn.execute(
        table.update()
        .where(table.c.id == row_id, table.c.status == "queued")
        .values(status="failed", finished_at=at, error=error)
        .returning(table.c.id)
    ).first()
    return done is not None


UNSENT = ErrorType.BROKER_UNAVAILABLE  # the error of a row whose message could not be sent


def requeue_unsent(conn: sa.Connection, table: sa.Table, row_id: str, at: datetime) -> bool:
    """A row failed UNSENT (it never reached the queue, so it never ran) goes back to queued:
    a client's retry under the same Idempotency-Key, once the broker answers, queues it."""
    row = conn.execute(
        sa.select(table.c.status, table.c.attempts, table.c.error).where(table.c.id == row_id)
    ).first()
    if row is None or row.status != "failed" or row.attempts or (row.error or {}).get("type") != UNSENT:
        return False
    done = conn.execute(
        table.update()
        .where(table.c.id == row_id, table.c.status == "failed", table.c.attempts == 0)
        .values(status="queued", finished_at=None, error=None, enqueued_at=at)
        .returning(table.c.id)
    ).first()
    return done is not None


# --- the worker side -------------------------------------------------------------------------


def held(table: sa.Table, row_id: str, owner: str) -> sa.ColumnElement[bool]:
    """`owner` still holds the row's lease: every write of a worker is conditional on it."""
    return sa.and_(table.c.id == row_id, table.c.lease_owner == owner, table.c.status == "running")


def owns(conn: sa.Connection, table: sa.Table, row_id: str, owner: str) -> bool:
    return conn.execute(sa.select(table.c.id).where(held(table, row_id, owner))).first() is not None


def claim(
    conn: sa.Connection,
    table: sa.Table,
    row_id: str,
    owner: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    at: datetime,
    returning: tuple[sa.Column[Any], ...],
) -> sa.Row[Any] | None:
    """Take a queued row, or a running one whose worker went silent, in one conditional
    UPDATE; None if another worker has it, or it is finished or cancelled."""
    claimable = (table.c.status == "queued") | (
        (table.c.status == "running")
        & (table.c.lease_expires_at < at)
        & (table.c.attempts < max_attempts)
        & sa.not_(table.c.cancel_requested)
    )
    return conn.execute(
        table.update()
        .where(table.c.id == row_id, claimable)
        .values(
            status="running",
            attempts=table.c.attempts + 1,
            lease_owner=owner,
            lease_expires_at=at + timedelta(seconds=lease_seconds),
            started_at=sa.func.coalesce(table.c.started_at, at),
        )
        .returning(*returning)
    ).first()


def heartbeat(
    conn: sa.Connection, table: sa.Table, row_id: str, owner: str, lease_seconds: float, at: datetime
) -> bool | None:
    """Renew the lease. True: cancel requested; False: carry on; None: the lease is lost (the
    reaper gave the row to another worker), so stop without writing anything."""
    row = conn.execute(
        table.update()
        .where(held(table, row_id, owner))
        .values(lease_expires_at=at + timedelta(seconds=lease_seconds))
        .returning(table.c.cancel_requested)
    ).first()
    return None if row is None else bool(row.cancel_requested)


def finish(
    conn: sa.Connection, table: sa.Table, row_id: str, owner: str, status: str, at: datetime, **values: Any
) -> int | None:
    """Write the final state, once: only the lease owner of a running row can. The attempt
    that finished it, or None if this worker no longer holds it."""
    done = conn.execute(
        table.update()
        .where(held(table, row_id, owner))
        .values(status=status, finished_at=at, lease_owner=None, lease_expires_at=None, **values)
        .returning(table.c.attempts)
    ).first()
    return None if done is None else int(done.attempts)


def release(conn: sa.Connection, table: sa.Table, row_id: str, owner: str, at: datetime) -> str | None:
    """Give a row back to the queue (its worker is shutting down); its queue, or None."""
    row = conn.execute(
        table.update()
        .where(held(table, row_id, owner))
        .values(status="queued", lease_owner=None, lease_expires_at=None, enqueued_at=at)
        .returning(table.c.queue)
    ).first()
    return None if row is None else str(row.queue)


def expire(conn: sa.Connection, table: sa.Table, max_attempts: int, at: datetime) -> list[Transition]:
    """Deal with running rows whose lease expired (their worker died): cancel the ones flagged
    for cancel, fail worker_lost the ones out of attempts, put the rest back on the queue."""
    expired = (table.c.status == "running") & (table.c.lease_expires_at < at)
    lost = {"type": ErrorType.WORKER_LOST, "message": f"the worker stopped answering, {max_attempts} times"}
    transitions: list[Transition] = []
    for status, cond, values in (
        ("cancelled", table.c.cancel_requested, {"finished_at": at}),
        ("failed", table.c.attempts >= max_attempts, {"finished_at": at, "error": lost}),
        ("queued", sa.true(), {"enqueued_at": at}),
    ):
        rows = conn.execute(
            table.update()
            .where(expired, cond)
            .values(status=status, lease_owner=None, lease_expires_at=None, **values)
            .returning(table.c.id, table.c.queue)
        ).all()
        transitions += [(status, r.id, r.queue) for r in rows]
    return transitions


def _waiting(table: sa.Table, older_than_s: float, at: datetime) -> sa.ColumnElement[bool]:
    """Queued rows whose last message went out more than older_than_s ago."""
    sent = sa.func.coalesce(table.c.enqueued_at, table.c.created_at)
    return (table.c.status == "queued") & (sent < at - timedelta(seconds=older_than_s))


def waiting_counts(conn: sa.Connection, table: sa.Table, older_than_s: float, at: datetime) -> dict[str, int]:
    """Queue → how many queued rows have waited on it longer than older_than_s."""
    rows = conn.execute(
        sa.select(table.c.queue, sa.func.count())
        .where(_waiting(table, older_than_s, at))
        .group_by(table.c.queue)
    ).all()
    return {str(r[0]): int(r[1]) for r in rows}


def resend_stale(
    conn: sa.Connection, table: sa.Table, resend_after_s: float, at: datetime
) -> list[tuple[str, str]]:
    """Queued rows whose message is older than resend_after_s: it may have been lost (a broker
    restart, an API killed between insert and send), and a duplicate is harmless. Their (id,
    queue), each marked as sent now."""
    rows = conn.execute(
        table.update()
        .where(_waiting(table, resend_after_s, at))
        .values(enqueued_at=at)
        .returning(table.c.id, table.c.queue)
    ).all()
    return [(r.id, r.queue) for r in rows]


def longest_waiting(
    conn: sa.Connection, table: sa.Table, older_than_s: float, at: datetime, queue: str, limit: int
) -> list[tuple[datetime, str]]:
    """The `limit` rows of `table` queued on `queue` whose message went out longest ago (and
    more than older_than_s ago): (when it was sent, id), oldest first."""
    sent = sa.func.coalesce(table.c.enqueued_at, table.c.created_at)
    rows = conn.execute(
        sa.select(sent.label("sent"), table.c.id)
        .where(_waiting(table, older_than_s, at), table.c.queue == queue)
        .order_by(sent, table.c.seq)
        .limit(limit)
    ).all()
    return [(r.sent, r.id) for r in rows]


def mark_sent(conn: sa.Connection, table: sa.Table, ids: list[str], at: datetime) -> None:
    """The rows' messages went out (again) now."""
    if ids:
        conn.execute(table.update().where(table.c.id.in_(ids)).values(enqueued_at=at))
