"""Fixtures of the API tests: the real app on a real SQLite store in a temporary data dir.

No worker runs here (jobs stay queued; their messages wait in the embedded broker's folder);
tests/integration runs the same routes against real worker and server processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from service.store import Repository, open_store
from service.store import migrate as migrations
from service.store.engine import make_engine
from service.store.tables import metadata

PG_ADMIN = os.environ.get("REGTRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(data_dir=tmp_path / f"data{len(clients)}", **overrides)
        client = TestClient(create_app(settings))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database's URL, the database dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}: {e} (start it, see .ci/run)")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_pg_database("regtrain_test") as url:
        yield url


@pytest.fixture
def own_pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards: for what a dropped table
    leaves behind (Optuna's enum types) or a schema made from nothing."""
    with fresh_pg_database("regtrain_own") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL on SQLite, then on the session's PostgreSQL database (emptied after each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    engine = make_engine(url)  # a clean schema for the next test on this database
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {migrations.VERSION_TABLE}"))
    engine.dispose()


@pytest.fixture
def store(store_url: str) -> Iterator[Repository]:
    """An opened (migrated) store on each backend."""
    repo = open_store(store_url)
    yield repo
    repo.engine.dispose()


DIGITS_MLP: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2},
}
