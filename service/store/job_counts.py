"""What GET /metrics reads of the jobs, at a cost that does not grow with the store's history.

- The job duration histogram is kept as jobs finish: `job_durations` holds one row per
  (final status, bucket), incremented in the transaction that finishes the job, so a scrape
  reads a few dozen rows however many jobs have finished. Like any Prometheus histogram it only
  grows: deleting a finished job leaves it counted.
- Epochs trained: a counter in `store_counters`, incremented with each metrics row; the last
  minute's epochs are counted through the index on job_metrics.at (rows of that minute only).
- Jobs by status: queued and running ones counted through the (status, queue) index (a range
  of the few active jobs); finished ones in `store_counters` (`jobs:<status>`), moved in the
  transactions that finish, re-queue or delete a job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.store.tables import job_durations, job_metrics, jobs, store_counters

# Upper bounds of the duration buckets, in seconds (Prometheus' `le`). Changing them leaves the
# counts already kept under the old bounds; a scrape adds each to the first new bound above it.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
EPOCHS = "epochs"
FINISHED = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
# (status, started_at, finished_at) of a job that has just finished.
Finished = tuple[str, datetime | None, datetime]


def bucket(seconds: float) -> float:
    """The upper bound of the bucket a duration falls in (infinity past the last)."""
    return next((float(b) for b in DURATION_BUCKETS if seconds <= b), math.inf)


def count_finished(conn: sa.Connection, finished: Iterable[Finished]) -> None:
    """Count jobs that have just finished, in the caller's transaction (the one that finished
    them): by status, and in the duration histogram where they started (a job cancelled or
    failed while queued has no duration)."""
    for status, started_at, finished_at in finished:
        _add(conn, f"jobs:{status}", 1)
        if started_at is not None:
            seconds = max((finished_at - started_at).total_seconds(), 0.0)
            add_durations(conn, status, bucket(seconds), 1, seconds)


def uncount_finished(conn: sa.Connection, status: str) -> None:
    """A finished job left `status` (deleted, or a broker_unavailable failure sent again). The
    histogram keeps it: it counts jobs that finished, and a histogram only grows."""
    _add(conn, f"jobs:{status}", -1)


def _add(conn: sa.Connection, name: str, n: int) -> None:
    """Move a counter (its row is made by migration 0008)."""
    conn.execute(
        store_counters.update().where(store_counters.c.name == name).values(value=store_counters.c.value + n)
    )


def add_durations(conn: sa.Connection, status: str, le: float, n: int, seconds: float) -> None:
    """n more jobs of `status` in bucket `le`, lasting `seconds` in all (an upsert)."""
    insert: Any = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(job_durations)
    stmt = insert.values(status=status, le=le, count=n, seconds=seconds)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[job_durations.c.status, job_durations.c.le],
            set_={
                "count": job_durations.c.count + stmt.excluded.count,
                "seconds": job_durations.c.seconds + stmt.excluded.seconds,
            },
        )
    )


def count_epoch(conn: sa.Connection) -> None:
    """One more epoch trained."""
    _add(conn, EPOCHS, 1)


def scrape_statements(dialect: str) -> dict[str, sa.Select[Any]]:
    """The statements a scrape runs (bench/full_store.py shows their plans)."""
    del dialect  # the same on both backends
    return {
        "active jobs": sa.select(jobs.c.status, jobs.c.queue, sa.func.count())
        .where(jobs.c.status.in_(ACTIVE))
        .group_by(jobs.c.status, jobs.c.queue),
        "finished jobs": sa.select(store_counters.c.name, store_counters.c.value).where(
            store_counters.c.name.in_([f"jobs:{s}" for s in FINISHED])
        ),
        "durations": sa.select(
            job_durations.c.status, job_durations.c.le, job_durations.c.count, job_durations.c.seconds
        ),
        "epochs": sa.select(store_counters.c.value).where(store_counters.c.name == EPOCHS),
        "recent epochs": sa.select(sa.func.count())
        .select_from(job_metrics)
        .where(job_metrics.c.at > sa.bindparam("since", type_=job_metrics.c.at.type)),
    }


def status_counts(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """{(status, queue): jobs}; finished jobs are counted whatever their queue, under queue ""."""
    statements = scrape_statements(conn.dialect.name)
    out = {(s, q): int(n) for s, q, n in conn.execute(statements["active jobs"])}
    for name, n in conn.execute(statements["finished jobs"]):
        out[(name.removeprefix("jobs:"), "")] = int(n)
    return out


def histogram(conn: sa.Connection, buckets: Sequence[float]) -> dict[str, tuple[list[int], int, float]]:
    """status → (cumulative count ≤ each of `buckets`, count, sum of seconds)."""
    out: dict[str, tuple[list[int], int, float]] = {}
    for status, le, n, seconds in conn.execute(scrape_statements(conn.dialect.name)["durations"]):
        counts, total, total_s = out.get(status, ([0] * len(buckets), 0, 0.0))
        for i, b in enumerate(buckets):
            if le <= b:
                counts[i] += int(n)
        out[status] = (counts, total + int(n), total_s + float(seconds))
    return out


def epochs(conn: sa.Connection, since: datetime | None = None) -> int:
    """Epochs trained in all, or metrics rows written after `since`."""
    statements = scrape_statements(conn.dialect.name)
    if since is None:
        return int(conn.execute(statements["epochs"]).scalar() or 0)
    return int(conn.execute(statements["recent epochs"], {"since": since}).scalar() or 0)
