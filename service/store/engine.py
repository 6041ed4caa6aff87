"""Connecting to the store: one SQLAlchemy engine per process, tuned per backend."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event

# Passed as an execution option on connections that will write. On SQLite such a transaction
# starts with BEGIN IMMEDIATE: it takes the write lock up front (waiting busy_timeout for it)
# rather than failing with "database is locked" when it upgrades a read snapshot to a write.
WRITE = "regtrain_write"
# Passed on connections that only read. On SQLite such a connection sends no BEGIN: the driver
# is in autocommit mode (see _on_connect), so each statement reads its own WAL snapshot, and a
# read that needs one snapshot is written as one statement. BEGIN and COMMIT around a one-row
# read cost more than the read itself.
READ = "regtrain_read"
# Connections each process keeps open per store. A request beyond the pool's size would open a
# connection and close it again on return (SQLAlchemy's overflow), a cost paid per request under
# load; the API therefore runs no more store calls at once than this (see service.app).
DEFAULT_POOL_SIZE = 20


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that will write: BEGIN IMMEDIATE on SQLite (see WRITE), so one that reads
    before it writes never fails at the upgrade when another process wrote in between."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn


def json_loads(text: str | bytes) -> Any:
    """The JSON columns' decoder: orjson (a job read decodes its spec, metrics and result, and
    the stdlib's decoder was a sixth of the read), falling back to the stdlib for the NaN and
    Infinity that Python's encoder writes and orjson refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> sa.Engine:
    # max_overflow: a caller that holds one connection and takes a second (nested) never waits
    # on itself; the pool size is what a busy process keeps.
    if url.startswith("sqlite"):
        return _sqlite_engine(url, pool_size)
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=10, json_deserializer=json_loads)
    _ping_when_idle(engine)
    return engine


# A pooled connection unused this long is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """pool_pre_ping, for connections that sat idle only. A fleet's database restarts, and a
    stale pooled connection must be replaced, not failed; but pool_pre_ping pays a round trip on
    every checkout, a quarter of a job read. A connection in steady use proves itself alive; one
    idle for a second (as every connection is after a restart) is pinged, and a dead one is
    replaced (DisconnectionError from a checkout makes the pool connect afresh)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            raise sa.exc.DisconnectionError(f"a pooled connection was dead: {e}") from e


def _sqlite_engine(url: str, pool_size: int) -> sa.Engine:
    path = sa.make_url(url).database
    pool: dict[str, Any] = {}
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"pool_size": pool_size, "max_overflow": 10}  # a file: SQLAlchemy's QueuePool
    engine = sa.create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        json_deserializer=json_loads,
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, say when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL: a worker writes metrics while the API reads, without blocking each other.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get(READ, False):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE, False) else "BEGIN")

    return engine
