"""Real components: a uvicorn server process and a Celery worker process on free loopback
ports, on each of the two backends regtrain supports:

- embedded: SQLite file + the filesystem broker in a temporary data dir (what `regtrain up` runs);
- fleet: a fresh PostgreSQL database and a Redis db with a queue/key prefix of this run's own.

One server and one worker per backend are shared by every test of a test process (started on
first use, ended with the session); the small jobs the tests submit keep the suite fast on two
cores. Never Celery's eager mode.

Why a pool rather than a session fixture parametrized by backend: pytest holds one parameter of
a parametrized fixture at a time, so with the tests of each file run together (xdist's
`--dist loadfile`) every file would tear its backend down for the other one and start it again:
two API + worker pairs started per file, 10-20 s each on two loaded cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_service import Service, base_env, fleet_backend


class ServicePool:
    """The session's services, one per backend, each started the first time a test asks."""

    def __init__(self, root: Path, stack: contextlib.ExitStack) -> None:
        self.root, self.stack = root, stack
        self.started: dict[str, Service] = {}

    def get(self, backend: str) -> Service:
        if backend not in self.started:
            root = self.root / backend
            root.mkdir()
            env = base_env(root / "data")
            if backend == "fleet":
                env.update(self.stack.enter_context(fleet_backend()))
            svc = Service(backend, env, root)
            self.stack.callback(svc.close)
            self.started[backend] = svc
        return self.started[backend]


@pytest.fixture(scope="session")
def service_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServicePool]:
    with contextlib.ExitStack() as stack:
        yield ServicePool(tmp_path_factory.mktemp("regtrain"), stack)


@pytest.fixture(params=["embedded", "fleet"])
def service(request: pytest.FixtureRequest, service_pool: ServicePool) -> Iterator[Service]:
    svc = service_pool.get(request.param)
    yield svc
    svc.cancel_unfinished()  # what a failed test left running must not starve the next one
