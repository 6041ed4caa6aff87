"""What the worker logged for a job, kept with the job: every attempt's lines, in the order they
were written, bounded per job.

A worker writes a job's lines in batches (worker/attempt_logs.py), never one round trip per
line. The bound keeps the job's first lines and its last ones, which hold what a reader looks
for (how the attempt began; how the job ended, the error's traceback at the very end): past
`max_bytes`, lines from the middle are dropped and one line, the marker, says how many. The
marker takes the place of the last line it drops, so it sits between the kept head and tail,
and a reader that follows the log (its cursor past the head) still meets it.

Lines go with their job: the foreign key cascades on DELETE /v1/jobs/{id} (both backends enforce
it; SQLite with PRAGMA foreign_keys, see engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from service.store.base import StoreBase, rings
from service.store.tables import job_logs, jobs

# What a line counts against the bound beyond its message's bytes (its row: time, attempt,
# level, keys), so that a flood of empty lines is bounded too.
LINE_OVERHEAD = 32
# The head keeps at most this share of the bound; the tail, which ends with the error, the rest.
HEAD_SHARE = 4


@dataclass(frozen=True)
class LogLine:
    """One line as the worker captured it (its level is logging's name: INFO, WARNING, ...)."""

    at: datetime
    level: str
    message: str


def line_size(message: str) -> int:
    return len(message.encode("utf-8", "replace")) + LINE_OVERHEAD


def dropped_message(count: int, max_bytes: int) -> str:
    return (
        f"[{count} lines dropped here: a job's log keeps its first and last lines, "
        f"{max_bytes} bytes in all (REGTRAIN_JOB_LOG_MAX_BYTES)]"
    )


class JobLogStore(StoreBase):
    @rings
    def append_logs(self, job_id: str, attempt: int, lines: list[LogLine], *, max_bytes: int) -> int:
        """Add an attempt's lines, in order, then trim the job's log back under `max_bytes`;
        one transaction. Rings the job's doorbell, so its event streams send them at once.
        The number of lines written (0 when the job is gone: a deleted job keeps none)."""
        if not lines:
            return 0
        rows = [
            {
                "job_id": job_id,
                "attempt": attempt,
                "at": line.at,
                "level": line.level,
                "message": line.message,
                "size": line_size(line.message),
            }
            for line in lines
        ]
        with self._write() as conn:
            # A job deleted while its worker still writes takes no more lines: read it first
            # rather than let the foreign key refuse the batch.
            if conn.execute(_JOB_EXISTS, {"job_id": job_id}).first() is None:
                return 0
            conn.execute(job_logs.insert(), rows)
            total = conn.execute(_TOTAL_SIZE, {"job_id": job_id}).scalar() or 0
            if total > max_bytes:
                _trim(conn, job_id, max_bytes)
        return len(rows)

    def log_lines(self, job_id: str, *, after: int | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` lines of the job past seq `after` (None: from the first), in order:
        each {"seq", "at", "attempt", "level", "message"}."""
        query = (
            sa.select(job_logs.c.seq, job_logs.c.at, job_logs.c.attempt, job_logs.c.level, job_logs.c.message)
            .where(job_logs.c.job_id == job_id, job_logs.c.seq > (after or 0))
            .order_by(job_logs.c.seq)
            .limit(limit)
        )
        return self._all(query)


_JOB_EXISTS = sa.select(jobs.c.id).where(jobs.c.id == sa.bindparam("job_id"))
_TOTAL_SIZE = sa.select(sa.func.sum(job_logs.c.size)).where(job_logs.c.job_id == sa.bindparam("job_id"))


def _trim(conn: sa.Connection, job_id: str, max_bytes: int) -> None:
    """Drop lines from the middle of the job's log until it is under `max_bytes` again: the head
    (the lines before an earlier marker, else the first lines up to a share of the bound) stays,
    the tail is the newest lines that fit beside it and the marker; the lines in between, an
    earlier marker included, become one marker (the newest of them, kept in place)."""
    rows = conn.execute(
        sa.select(job_logs.c.seq, job_logs.c.size, job_logs.c.dropped)
        .where(job_logs.c.job_id == job_id)
        .order_by(job_logs.c.seq)
    ).all()
    marker_size = line_size(dropped_message(10**12, max_bytes))
    marker_at = next((i for i, r in enumerate(rows) if r.dropped is not None), None)
    if marker_at is None:  # the first trim: the head is the first lines up to its share
        head, used = 0, 0
        while head < len(rows) and used + rows[head].size <= max_bytes // HEAD_SHARE:
            used += rows[head].size
            head += 1
    else:
        head, used = marker_at, sum(r.size for r in rows[:marker_at])
    tail, room = len(rows), max_bytes - used - marker_size
    # The newest line always stays (a line is cut to a share of the bound when it is captured).
    while tail > head + 1 and (tail == len(rows) or room >= rows[tail - 1].size):
        room -= rows[tail - 1].size
        tail -= 1
    middle = rows[head:tail]
    if not middle:
        return
    count = sum(r.dropped if r.dropped is not None else 1 for r in middle)
    keep = middle[-1].seq
    gone = [r.seq for r in middle[:-1]]
    for i in range(0, len(gone), 500):  # bounded IN lists
        conn.execute(job_logs.delete().where(job_logs.c.seq.in_(gone[i : i + 500])))
    message = dropped_message(count, max_bytes)
    conn.execute(
        job_logs.update()
        .where(job_logs.c.seq == keep)
        .values(level="WARNING", message=message, size=line_size(message), dropped=count)
    )
