"""The API's hot job reads (GET /v1/jobs/{id} and GET /v1/jobs) for async routes, on the event loop.

On PostgreSQL the sync store's read ran in anyio's thread pool, and the hop there and back cost
more than the read: PostgreSQL's reads stayed near a third of the bare endpoint's rate while
SQLite's, run inline, reached half. Here the same statements (store/job_reads.py, compiled once
per shape to SQL text) run on psycopg's AsyncConnection, taken from psycopg_pool's async pool,
so a read waits on the network without holding a thread. SQLite's reads never wait on the
network and stay on the sync store, called inline (InlineJobReads). Every other read and every
write keeps the sync store.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from service.store import job_reads
from service.store.engine import json_loads
from service.store.jobs import JobStore
from service.store.leased import Row
from service.store.tables import UTCDateTime, jobs

# The document's columns stored as naive UTC (UTCDateTime): SQLAlchemy's type makes them aware
# on the sync path; psycopg returns them as stored, so they are made aware here alike.
_UTC_COLUMNS = tuple(c for c in job_reads.DOCUMENT_COLUMNS if isinstance(jobs.c[c].type, UTCDateTime))


class JobReads(Protocol):
    """What the job routes read through: one job with its history, a page of jobs."""

    async def job_with_history(self, job_id: str, tenant: str | None) -> tuple[Row, list[Row]] | None: ...

    async def list_jobs(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class InlineJobReads:
    """SQLite: the sync store's reads, run on the event loop. A read of a local WAL file never
    waits on a writer and takes tens of microseconds, less than a hop to a thread."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def job_with_history(self, job_id: str, tenant: str | None) -> tuple[Row, list[Row]] | None:
        return self._store.job_with_history(job_id, tenant)

    async def list_jobs(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]:
        return self._store.list_jobs(tenant, status=status, limit=limit, before_seq=before_seq)

    async def open(self) -> None:
        """Nothing to open: the sync store's engine is the store's."""

    async def close(self) -> None:
        """Nothing to close (see open)."""


class PostgresJobReads:
    """PostgreSQL: the same statements on psycopg's async pool, opened and closed by the app's
    lifespan (a pool belongs to the event loop that opened it)."""

    def __init__(self, engine: sa.Engine, pool_size: int) -> None:
        self._dialect = engine.dialect
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            conninfo,
            # Grows to the sync engine's size under load; two kept open cover a quiet process.
            min_size=min(2, pool_size),
            max_size=pool_size,
            open=False,
            # No BEGIN and COMMIT round trips around a one-statement read (as the sync store's
            # reads, service.store.base).
            kwargs={"autocommit": True},
            configure=_configure,
        )

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def job_with_history(self, job_id: str, tenant: str | None) -> tuple[Row, list[Row]] | None:
        params: dict[str, Any] = {"job_id": job_id}
        if tenant is not None:
            params["tenant"] = tenant
        rows = await self._fetch(_by_id_sql(self._dialect, tenant is not None), params)
        return _decode(rows[0]) if rows else None

    async def list_jobs(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]:
        params: dict[str, Any] = {"tenant": tenant, "limit": limit}
        if status is not None:
            params["status"] = status
        if before_seq is not None:
            params["before_seq"] = before_seq
        sql = _page_sql(self._dialect, status is not None, before_seq is not None)
        return [{**job, "history": history} for job, history in map(_decode, await self._fetch(sql, params))]

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of a read. A read is idempotent, so one that meets a dead connection (the
        database restarted) is run once more, after the pool has checked its idle connections:
        the pool discards a broken connection as it comes back and opens a fresh one."""
        try:
            return await self._run(sql, params)
        except psycopg.OperationalError:
            await self._pool.check()
            return await self._run(sql, params)

    async def _run(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            # the SQL is compiled from job_reads statements, never built from input
            cur = await conn.execute(sql, params)
            return await cur.fetchall()


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    # dict rows, and the JSON columns decoded by the store's decoder (orjson), as on the sync path
    conn.row_factory = dict_row
    set_json_loads(json_loads, conn)


def _decode(row: dict[str, Any]) -> tuple[Row, list[Row]]:
    for name in _UTC_COLUMNS:
        if row[name] is not None:
            row[name] = row[name].replace(tzinfo=UTC)
    return job_reads.decode(row)


@functools.cache
def _by_id_sql(dialect: sa.Dialect, tenant: bool) -> str:
    return str(job_reads.by_id("postgresql", tenant=tenant).compile(dialect=dialect))


@functools.cache
def _page_sql(dialect: sa.Dialect, status: bool, cursor: bool) -> str:
    """job_reads.page with named parameters in place of the values, compiled once per shape
    (with or without a status, with or without a cursor)."""
    query = job_reads.page(
        "postgresql",
        sa.bindparam("tenant"),
        status=sa.bindparam("status") if status else None,
        limit=sa.bindparam("limit"),
        before_seq=sa.bindparam("before_seq") if cursor else None,
    )
    return str(query.compile(dialect=dialect))


def event_loop_reads(store: JobStore, pool_size: int) -> JobReads:
    """The job reads an async route awaits, for this store's backend."""
    if store.engine.dialect.name == "postgresql":
        return PostgresJobReads(store.engine, pool_size)
    return InlineJobReads(store)
