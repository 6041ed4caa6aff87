"""GET /v1/jobs/{id}/logs: what the worker logged for a job, every attempt (store/job_logs.py).

The same lines stream as `log` events on GET /v1/jobs/{id}/events (routes/events.py). The
cursor is opaque, as the job list's (pages.encode): the position after a line, so a client
that polls passes back `next_cursor` and gets only the lines written since.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.api.deps import StoreDep, TenantDep
from service.api.routes import lookup, pages
from service.api.schemas import JobLogs, LogLine
from service.store.repository import Row

router = APIRouter(prefix="/v1", tags=["jobs"])

MAX_LIMIT = 5000


def log_line(row: Row) -> dict[str, Any]:
    """A line as the API shows it (GET /logs and `log` events alike), from the store's row."""
    line = LogLine(
        cursor=pages.encode(row["seq"]), **{k: row[k] for k in ("at", "attempt", "level", "message")}
    )
    return line.model_dump(mode="json")  # as the route's schema writes it (UTC as "Z")


@router.get("/jobs/{job_id}/logs", response_model=JobLogs)
def job_logs(
    job_id: str,
    store: StoreDep,
    tenant: TenantDep,
    cursor: Annotated[
        str | None,
        Query(max_length=40, description="`next_cursor` of an earlier answer: the lines after it."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
) -> dict[str, Any]:
    """The job's log lines in the order they were written, from the first (or after `cursor`).
    Fewer than `limit` lines: these are all the lines written so far; pass `next_cursor` back
    for the ones written since. Past REGTRAIN_JOB_LOG_MAX_BYTES a job keeps its first and last
    lines, and one line between them says how many were dropped."""
    lookup.found("job", job_id, store.get_job(job_id, tenant))
    rows = store.log_lines(job_id, after=pages.decode(cursor), limit=limit)
    next_cursor = pages.encode(rows[-1]["seq"]) if rows else cursor
    return {"lines": [log_line(r) for r in rows], "next_cursor": next_cursor}
