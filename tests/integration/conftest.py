"""Real components: a uvicorn server process and a Celery worker process on free loopback
ports, on each of the two backends regtrain supports:

- embedded: SQLite file + the filesystem broker in a temporary data dir (what `regtrain up` runs);
- fleet: a fresh PostgreSQL database and a Redis db with a queue/key prefix of this run's own.

One server and one worker per backend are shared by every test (session scope); the small
jobs the tests submit keep the suite fast on two cores. Never Celery's eager mode.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from live_service import Service, base_env

PG_ADMIN = os.environ.get("REGTRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = os.environ.get("REGTRAIN_TEST_PG_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("REGTRAIN_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def fleet_backend(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` on a fresh PostgreSQL database and a Redis queue/key prefix of its own, both
    dropped afterwards."""
    db = f"regtrain_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{db}"')
    prefix = f"rt{uuid.uuid4().hex[:8]}-"
    redis_db = random.randint(1, 15)
    try:
        yield {
            **env,
            "REGTRAIN_DATABASE_URL": f"{PG_BASE}/{db}",
            "REGTRAIN_BROKER_URL": f"{REDIS}/{redis_db}",
            "REGTRAIN_QUEUE_PREFIX": prefix,
        }
    finally:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.close()
        r = redis.Redis.from_url(f"{REDIS}/{redis_db}")
        for key in r.scan_iter(f"{prefix}*"):
            r.delete(key)
        r.close()


@pytest.fixture(scope="session", params=["embedded", "fleet"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"regtrain-{request.param}")
    with ExitStack() as stack:
        env = base_env(root / "data")
        if request.param == "fleet":
            env = stack.enter_context(fleet_backend(env))
        svc = Service(request.param, env, root)
        stack.callback(svc.close)
        yield svc


@pytest.fixture(scope="module")
def fleet_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """For a module that starts processes of its own on the fleet backend: a folder for their
    logs and data, and their environment."""
    root = tmp_path_factory.mktemp("regtrain-own-fleet")
    with fleet_backend(base_env(root / "data")) as env:
        yield root, env
