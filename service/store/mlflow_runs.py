"""MLflow's outbox: what each tracked job, sweep and trial has sent to the tracker, and when to
send again (service/notify/mlflow.py sends it).

Not a queue of messages but one row per subject, which the sender brings up to date with the
store: a job's row is written in the transaction of its claim (`track`) and touched in those of
each epoch and of its end (`touch`), so no change is lost whatever process dies when; the row
keeps the MLflow run id, so that every later change goes to the same run, and how far the
metrics were sent. A sweep's row is written with its claim and is due again every few seconds
while the sweep runs (its trials end in many processes; the sender reads them from the store).
A trial's row only keeps its run id, written as soon as MLflow made the run, so a retry never
makes a second one.

A row is leased like a webhook delivery: a sender claims due rows with a conditional UPDATE and
holds them for the lease, and a sender that dies leaves rows that another sends once it lapses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from service.store.base import now
from service.store.engine import READ, write_transaction
from service.store.tables import job_metrics
from service.store.tables import mlflow_runs as runs

Kind = Literal["job", "sweep", "trial"]
# pending: due at next_at; synced: nothing known to send; ended: all sent; failed: given up.
# A trial's row is "open" until its run is fully logged, then "ended"; no sender claims either.
_LIVE = ("pending", "synced")


@dataclass(frozen=True)
class Tracked:
    """A row a sender now holds (until lease_until)."""

    subject: str
    kind: Kind
    run_id: str | None
    sent_epoch: int
    changes: int  # as claimed: a touch meanwhile leaves the row pending
    attempts: int
    lease_until: datetime


def track(
    conn: sa.Connection, subject: str, kind: Kind, at: datetime, resumed_from: int | None = None
) -> None:
    """In the transaction of a job's or sweep's claim: track it from now on. A job claimed again
    (another attempt) keeps its run and sends its metrics again from the epoch it resumed from
    (the claim dropped the rows past it; the new attempt writes them again)."""
    row = conn.execute(sa.select(runs.c.status, runs.c.sent_epoch).where(runs.c.subject == subject)).first()
    if row is None:
        conn.execute(
            runs.insert().values(
                subject=subject, kind=kind, status="pending", next_at=at, created_at=at, sent_epoch=0
            )
        )
        return
    if row.status not in _LIVE:
        return
    values: dict[str, Any] = {"changes": runs.c.changes + 1, "status": "pending"}
    if row.status == "synced":
        values["next_at"] = at
    if resumed_from is not None and row.sent_epoch > resumed_from:
        values["sent_epoch"] = resumed_from
    conn.execute(runs.update().where(runs.c.subject == subject).values(**values))


def touch(conn: sa.Connection, subject: str, at: datetime) -> None:
    """In the transaction of a change (an epoch's metrics, the end): the subject has more to
    send. A row waiting out a backoff keeps its time: a tracker that is down is not asked again
    at every epoch."""
    conn.execute(
        runs.update()
        .where(runs.c.subject == subject, runs.c.status.in_(_LIVE))
        .values(
            changes=runs.c.changes + 1,
            status="pending",
            next_at=sa.case((runs.c.status == "synced", at), else_=runs.c.next_at),
        )
    )


class MlflowRuns:
    """The sender's side of the outbox."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _write(self) -> AbstractContextManager[sa.Connection]:
        # claim_due reads, then updates: BEGIN IMMEDIATE on SQLite.
        return write_transaction(self.engine)

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            options = {"isolation_level": "AUTOCOMMIT"} if conn.dialect.name == "postgresql" else {READ: True}
            yield conn.execution_options(**options)

    def claim_due(self, limit: int, lease_s: float) -> list[Tracked]:
        """Up to `limit` due rows, oldest first (a sweep's before its retrain job's, so the
        parent run is there first), each now held for lease_s."""
        at = now()
        free = runs.c.lease_until.is_(None) | (runs.c.lease_until < at)
        due = (runs.c.status == "pending") & (runs.c.next_at <= at) & free
        until = at + timedelta(seconds=lease_s)
        pick = sa.select(runs.c.seq).where(due).order_by(runs.c.seq).limit(limit)
        # A read first: every process looks every second, and most looks find nothing, which
        # must not take SQLite's write lock each time.
        with self._read() as conn:
            if conn.execute(pick).first() is None:
                return []
        with self._write() as conn:
            seqs = [r[0] for r in conn.execute(pick)]
            if not seqs:
                return []
            # `due` again: of two senders that picked the same row, the second finds it held.
            rows = conn.execute(
                runs.update()
                .where(runs.c.seq.in_(seqs), due)
                .values(lease_until=until)
                .returning(
                    runs.c.seq,
                    runs.c.subject,
                    runs.c.kind,
                    runs.c.run_id,
                    runs.c.sent_epoch,
                    runs.c.changes,
                    runs.c.attempts,
                )
            ).all()
        rows = sorted(rows, key=lambda r: r.seq)
        return [
            Tracked(r.subject, r.kind, r.run_id, r.sent_epoch, r.changes, r.attempts, until) for r in rows
        ]

    # Each write below is made only by the sender that holds the row (its claim's lease_until):
    # one whose lease lapsed mid-send cannot undo a later sender's progress.

    def set_run(self, t: Tracked, run_id: str) -> bool:
        return self._update(t, run_id=run_id)

    def sent(self, t: Tracked, epoch: int) -> bool:
        return self._update(t, sent_epoch=epoch)

    def synced(self, t: Tracked, again_in_s: float | None = None) -> None:
        """Everything known was sent. `again_in_s`: due again then all the same (a running
        sweep, whose trials end without touching its row)."""
        at = now()
        touched = runs.c.changes != t.changes
        status: sa.ColumnElement[str]
        if again_in_s is None:
            status = sa.case((touched, "pending"), else_="synced")
            next_at: Any = at
        else:
            status = sa.literal("pending")
            next_at = sa.case((touched, at), else_=at + timedelta(seconds=again_in_s))
        self._update(t, status=status, next_at=next_at, attempts=0, lease_until=None, last_error=None)

    def ended(self, t: Tracked, note: str | None = None) -> None:
        """All sent (`note`: what was left out, such as a model that could not be registered)."""
        at = now()
        with self._write() as conn:
            done = conn.execute(
                runs.update()
                .where(self._held(t))
                .values(status="ended", finished_at=at, lease_until=None, last_error=note and note[:2000])
            ).rowcount
            if done and t.kind == "sweep":  # its trials' rows go with it (see purge)
                conn.execute(runs.update().where(runs.c.parent == t.subject).values(finished_at=at))

    def retry(self, t: Tracked, at: datetime, error: str) -> None:
        self._update(t, attempts=t.attempts + 1, next_at=at, lease_until=None, last_error=error[:2000])

    def wait(self, t: Tracked, at: datetime, why: str) -> None:
        """Due again at `at`, not as a failure (a retrain job whose sweep has no run yet)."""
        self._update(t, next_at=at, lease_until=None, last_error=why[:2000])

    def failed(self, t: Tracked, error: str) -> None:
        self._update(t, status="failed", finished_at=now(), lease_until=None, last_error=error[:2000])

    def _update(self, t: Tracked, **values: Any) -> bool:
        with self._write() as conn:
            return bool(conn.execute(runs.update().where(self._held(t)).values(**values)).rowcount)

    @staticmethod
    def _held(t: Tracked) -> sa.ColumnElement[bool]:
        return (runs.c.subject == t.subject) & (runs.c.lease_until == t.lease_until)

    # --- runs of sweeps and their trials ---------------------------------------------------

    def run_of(self, subject: str) -> tuple[str | None, bool]:
        """(the subject's run id, whether one may still come: it is tracked, and not given up)."""
        query = sa.select(runs.c.run_id, runs.c.status).where(runs.c.subject == subject)
        with self._read() as conn:
            row = conn.execute(query).first()
        return (row.run_id, row.status in _LIVE) if row is not None else (None, False)

    def trial_runs(self, sweep_id: str) -> dict[int, tuple[str, bool]]:
        """Trial index → (its run id, whether it was fully logged)."""
        query = sa.select(runs.c.subject, runs.c.run_id, runs.c.status).where(
            runs.c.parent == sweep_id, runs.c.kind == "trial"
        )
        with self._read() as conn:
            return {
                int(r.subject.rpartition(".")[2]): (r.run_id, r.status == "ended")
                for r in conn.execute(query)
            }

    def add_trial(self, sweep_id: str, index: int, run_id: str) -> None:
        at = now()
        with self._write() as conn:
            conn.execute(
                runs.insert().values(
                    subject=f"{sweep_id}.{index}",
                    kind="trial",
                    parent=sweep_id,
                    run_id=run_id,
                    status="open",
                    next_at=at,
                    created_at=at,
                )
            )

    def trial_logged(self, sweep_id: str, index: int) -> None:
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.subject == f"{sweep_id}.{index}").values(status="ended"))

    # --- reads and upkeep ------------------------------------------------------------------

    def metrics_after(self, job_id: str, epoch: int) -> list[tuple[int, dict[str, Any], datetime]]:
        """The job's metrics rows past `epoch`: (epoch, row, when it was written)."""
        query = (
            sa.select(job_metrics.c.epoch, job_metrics.c.row, job_metrics.c.at)
            .where(job_metrics.c.job_id == job_id, job_metrics.c.epoch > epoch)
            .order_by(job_metrics.c.epoch)
        )
        with self._read() as conn:
            return [(r.epoch, r.row, r.at) for r in conn.execute(query)]

    def purge(self, older_than_s: float, limit: int = 1000) -> int:
        """Delete up to `limit` rows that ended (or failed) more than older_than_s ago; how
        many went. A trial's row ends with its sweep's."""
        cutoff = now() - timedelta(seconds=older_than_s)
        old = sa.select(runs.c.seq).where(runs.c.status.in_(("ended", "failed")), runs.c.finished_at < cutoff)
        with self._write() as conn:
            doomed = old.limit(limit).scalar_subquery()
            return conn.execute(runs.delete().where(runs.c.seq.in_(doomed))).rowcount
