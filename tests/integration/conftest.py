"""Real components: a uvicorn server process and a Celery worker process on free loopback
ports, on each of the two backends regtrain supports:

- embedded: SQLite file + the filesystem broker in a temporary data dir (what `regtrain up` runs);
- fleet: a fresh PostgreSQL database and a Redis db with a queue/key prefix of this run's own.

One server and one worker per backend are shared by every test (session scope); the small
jobs the tests submit keep the suite fast on two cores. Never Celery's eager mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from live_service import Service, base_env, fleet_backend


@pytest.fixture(scope="session", params=["embedded", "fleet"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(f"regtrain-{request.param}")
    env = base_env(root / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        svc = Service(request.param, env, root)
        stack.callback(svc.close)
        yield svc
