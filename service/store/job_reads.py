"""The API's hot reads of jobs: GET /v1/jobs/{id} and GET /v1/jobs, each one statement.

A job's history comes back inside the job's row, as a JSON array aggregated in SQL (a scalar
subquery), rather than as one joined row per transition: the spec and the other JSON columns
are then decoded once, not once per transition, and a page of 50 jobs is one statement, not two.
The statement for one job is built once per dialect: a statement object keeps its cache key, so
a read skips building and hashing the query, which cost as much as running it on SQLite.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from service.store import leased
from service.store.leased import Row
from service.store.tables import job_history, jobs

# The columns the job document shows (service.contract.documents.job_document), and seq, the
# list's cursor: the driver describes and converts fewer columns per row (a quarter of a read on
# PostgreSQL went to describing all of them), and the job's notify secret never leaves the
# database on these reads.
DOCUMENT_COLUMNS = (
    "seq", "id", "name", "status", "created_at", "started_at", "finished_at", "attempts",
    "cancel_requested", "progress_epoch", "latest_metrics", "result", "error", "spec",
)  # fmt: skip
# The fields of a transition the job document shows, and seq, to order them.
HISTORY_FIELDS = ("seq", "status", "at", "attempt", "worker", "resumed_from_epoch", "message")


def history_column(dialect: str) -> sa.ScalarSelect[Any]:
    """The job's transitions as a JSON array of objects, correlated to `jobs` in the outer query
    (unordered: SQLite before 3.44 has no ORDER BY inside an aggregate; see decode_history)."""
    h = job_history
    pairs: list[sa.ColumnElement[Any]] = []
    for name in HISTORY_FIELDS:
        pairs += [sa.literal_column(f"'{name}'"), h.c[name]]
    array: sa.ColumnElement[Any]
    if dialect == "postgresql":
        array = sa.func.coalesce(
            sa.func.json_agg(sa.func.json_build_object(*pairs)), sa.literal_column("'[]'::json")
        )
    else:
        array = sa.func.json_group_array(sa.func.json_object(*pairs))
    return sa.select(sa.type_coerce(array, sa.JSON)).where(h.c.job_id == jobs.c.id).scalar_subquery()


@functools.cache
def by_id(dialect: str, *, tenant: bool) -> sa.Select[Any]:
    """One job with its `history`; bound parameters `job_id` (and `tenant`). Built once per
    dialect and kind (see the module's docstring)."""
    query = sa.select(*_columns(dialect)).where(jobs.c.id == sa.bindparam("job_id"))
    if tenant:
        query = query.where(jobs.c.tenant == sa.bindparam("tenant"))
    return query


def page(
    dialect: str,
    tenant: str | leased.Bound,
    *,
    status: str | leased.Bound | None,
    limit: int | leased.Bound,
    before_seq: int | leased.Bound | None,
) -> sa.Select[Any]:
    """A page of the tenant's jobs, newest first, each with its `history`."""
    query = leased.page(jobs, tenant, status=status, limit=limit, before_seq=before_seq)
    return query.with_only_columns(*_columns(dialect))


def _columns(dialect: str) -> list[sa.ColumnElement[Any]]:
    return [*(jobs.c[name] for name in DOCUMENT_COLUMNS), history_column(dialect).label("history")]


def decode(row: Mapping[Any, Any]) -> tuple[Row, list[Row]]:
    """(the job's columns, its history in order) from a row of by_id or page."""
    job = dict(row)
    return job, decode_history(job.pop("history"))


def decode_history(entries: list[dict[str, Any]]) -> list[Row]:
    """Transitions in the order they happened, with `at` a timezone-aware datetime like every
    other time the store returns (inside JSON it is the database's text for the naive UTC time)."""
    entries = sorted(entries, key=lambda h: h["seq"])
    for h in entries:
        h["at"] = datetime.fromisoformat(h["at"]).replace(tzinfo=UTC)
    return entries
