"""What every repository of the store stands on: the engine, a read and a write transaction per
backend, the listeners told of a job's change, ids and clocks; and the lease lifecycle's fleet-wide
queries (rows waiting for a message), which jobs and sweeps share.

State changes that race (claim, cancel, finish, reap) are single conditional UPDATEs: the WHERE
clause states what must still be true, and the rows it returns say who won. Two workers never
train the same job, and a reaper running on every worker is safe."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa

from service.store import leased
from service.store.engine import READ, write_transaction
from service.store.leased import Row
from service.store.tables import (
    jobs,
    sweep_units,
    sweeps,
)

log = logging.getLogger("regtrain.store")

DeleteOutcome = Literal["deleted", "active", "missing"]

# The leased rows whose messages wait on the broker's queues (what the reaper's count of lost
# messages compares with a queue's depth).
_WAITING = (jobs, sweeps, sweep_units)


class Resend(NamedTuple):
    """The rows whose messages are to be sent again, by the task each needs."""

    jobs: list[str]
    sweeps: list[str]
    units: list[str]


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "") -> str:
    """Server-made ids: they name files under the data dir, so never take them from a user."""
    return prefix + uuid.uuid4().hex


Listener = Callable[[str, str, Any], None]  # (job id, method name, what the method returned)


def rings(method: Callable[..., Any]) -> Callable[..., Any]:
    """After the method's transaction has committed, tell the store's listeners (the event
    streams' doorbell, webhooks) that job `job_id` may have changed. A failing listener is
    logged, never raised: the change itself is done."""

    @functools.wraps(method)
    def wrapper(self: StoreBase, job_id: str, *args: Any, **kwargs: Any) -> Any:
        out = method(self, job_id, *args, **kwargs)
        for listener in self.listeners:
            try:
                listener(job_id, method.__name__, out)
            except Exception:
                log.exception("store listener failed after %s(%s)", method.__name__, job_id)
        return out

    return wrapper


def requeued(transitions: list[leased.Transition]) -> list[tuple[str, str]]:
    """(id, queue) of the rows the reaper put back on the queue: each needs a message."""
    return [(row_id, queue) for status, row_id, queue in transitions if status == "queued"]


def grouped(rows: Iterable[Mapping[Any, Any]], key: str, ids: list[str]) -> dict[str, list[Row]]:
    """Rows grouped by their `key` column, in the order they came, with every id of `ids`
    present (an id without rows has an empty list)."""
    out: dict[str, list[Row]] = {i: [] for i in ids}
    for r in rows:
        out[r[key]].append(dict(r))
    return out


class StoreBase:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.listeners: list[Listener] = []  # called after each change to a job; see _rings
        # Where REGTRAIN_MLFLOW_TRACKING_URI is set (service/notify/listeners.py): claims, epochs
        # and ends write MLflow's outbox rows in their own transactions (store/mlflow_runs.py).
        self.mlflow_tracking = False
        # PostgreSQL: no BEGIN and COMMIT round trips around a read; SQLite: no BEGIN (see
        # engine.READ). Each statement sees its own snapshot; the reads that need one snapshot
        # are one statement.
        self._read_options: dict[str, Any] = (
            {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" else {READ: True}
        )

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

    def job_finished(self, job_id: str) -> None:
        """Called after a job's final state is written; the sweeps' repository settles the
        sweep waiting on it (its best trial, retrained)."""

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def waiting(self, older_than_s: float) -> dict[str, tuple[int, int]]:
        """Queue → (queued jobs, sweeps and sweep units, those of them whose message went out
        more than older_than_s ago): the reaper compares the first with what the broker holds,
        to find lost messages, and resends among the second. Units count because their
        messages sit on the same queues: left out, they would hide a lost job's message."""
        at = now()
        counts: dict[str, tuple[int, int]] = {}
        with self._read() as conn:
            for table in _WAITING:
                old = leased.waiting_counts(conn, table, older_than_s, at)
                for queue, n in leased.waiting_counts(conn, table, 0.0, at).items():
                    total, stale = counts.get(queue, (0, 0))
                    counts[queue] = (total + n, stale + old.get(queue, 0))
        return counts

    def resend_waiting(self, queue: str, older_than_s: float, limit: int) -> Resend:
        """Up to `limit` of the longest-waiting rows of `waiting` on `queue`, jobs, sweeps and
        units alike (the oldest message is the likeliest lost), marked as sent now."""
        at = now()
        with self._write() as conn:
            oldest = sorted(
                (sent, table.name, row_id)
                for table in _WAITING
                for sent, row_id in leased.longest_waiting(conn, table, older_than_s, at, queue, limit)
            )[:limit]
            chosen = {t.name: [i for _, name, i in oldest if name == t.name] for t in _WAITING}
            for table in _WAITING:
                leased.mark_sent(conn, table, chosen[table.name], at)
        return Resend(chosen[jobs.name], chosen[sweeps.name], chosen[sweep_units.name])
