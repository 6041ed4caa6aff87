"""A live regtrain: API and worker processes on a free loopback port, and a client to drive them."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

FINISHED = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """A running API + worker pair, and the HTTP client to drive it."""

    def __init__(
        self,
        backend: str,
        env: dict[str, str],
        logs: Path,
        worker_args: list[str] | None = None,
        own_env: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self.backend = backend
        self.worker_args = worker_args or ["--queues", "cpu,gpu"]
        self.env = env
        # what one process ("api", "worker0", ...) sets on top of env: its own data dir, in a
        # fleet with no shared file system
        self.own_env = own_env or (lambda _label: {})
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.api = self._spawn("api", ["api", "--port", str(self.port)])
        self.workers: list[subprocess.Popen[bytes]] = []
        self.start_worker()
        self._wait_ready()

    def _spawn(self, label: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{label}.log", "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env={**self.env, **self.own_env(label)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        label = f"worker{len(self.workers)}"
        proc = self._spawn(label, ["worker", *self.worker_args, "--loglevel", "info"])
        self.workers.append(proc)
        return proc

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited ({self.api.returncode}):\n{self.log('api')}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API never got ready:\n{self.log('api')}")

    def log(self, label: str) -> str:
        path = self.logs / f"{label}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/v1/jobs", json=spec)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until: set[str] | None = None, timeout: float = 90,
             min_epoch: int = 0) -> dict[str, Any]:  # fmt: skip
        """Poll the job until its status is in `until` (default: finished) and it has at least
        `min_epoch` epochs done."""
        until = until or FINISHED
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until and job["progress"]["epoch"] >= min_epoch:
                return job
            if job["status"] in FINISHED and job["status"] not in until:
                pytest.fail(f"job ended {job['status']}: {job['error']}\n{self.log('worker0')}")
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(f"worker{i}") for i in range(len(self.workers)))
                pytest.fail(f"job {job_id} still {job['status']} after {timeout} s\n{logs}")
            time.sleep(0.2)

    def wait_workers(self, count: int, timeout: float = 90) -> None:
        """Until `count` workers have a heartbeat in /v1/workers. A test of how work spreads
        waits for this first: on loaded cores a second worker's start (torch's import, its
        warm-up) can outlast a whole sweep that the first one then trains alone."""
        deadline = time.monotonic() + timeout
        while len(self.http.get("/v1/workers").json()["workers"]) < count:
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(f"worker{i}") for i in range(len(self.workers)))
                pytest.fail(f"fewer than {count} workers after {timeout} s\n{logs}")
            time.sleep(0.1)

    def cancel_unfinished(self, timeout: float = 20) -> None:
        """Cancel every sweep and job still queued or running, and wait (a while) for them to
        end. The pool's services live for the session: a test that fails before it cancels its
        long sweep would otherwise hold the worker, and every later test of that service would
        wait behind it and fail as well."""
        pending: list[tuple[str, str]] = []
        for kind in ("sweeps", "jobs"):  # sweeps first: a sweep's retrain is a job
            for status in ("running", "queued"):
                r = self.http.get(f"/v1/{kind}", params={"status": status, "limit": 100})
                if r.status_code == 200:
                    pending += [(kind, row["id"]) for row in r.json()[kind]]
        for kind, row_id in pending:
            self.http.post(f"/v1/{kind}/{row_id}/cancel")  # 409 when it ended meanwhile
        deadline = time.monotonic() + timeout
        for kind, row_id in pending:
            while time.monotonic() < deadline:
                r = self.http.get(f"/v1/{kind}/{row_id}")
                if r.status_code != 200 or r.json()["status"] in FINISHED:
                    break
                time.sleep(0.2)

    def close(self) -> None:
        self.http.close()
        for proc in [*self.workers, self.api]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.api]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


PG_ADMIN = os.environ.get("REGTRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = os.environ.get("REGTRAIN_TEST_PG_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("REGTRAIN_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def fleet_backend() -> Iterator[dict[str, str]]:
    """The fleet's store and broker for one run: a fresh PostgreSQL database and a Redis db with
    a queue/key prefix of its own (the settings that point at them); dropped afterwards."""
    db = f"regtrain_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{db}"')
    prefix = f"rt{uuid.uuid4().hex[:8]}-"
    redis_db = random.randint(1, 15)
    try:
        yield {
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


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    env.update(
        REGTRAIN_DATA_DIR=str(data_dir),
        # Short leases so that the lost-worker test sees the reaper act within seconds.
        REGTRAIN_LEASE_SECONDS="4",
        REGTRAIN_HEARTBEAT_SECONDS="0.3",
        REGTRAIN_REAPER_INTERVAL_S="1",
        REGTRAIN_MAX_ATTEMPTS="3",
        # Two cores are shared with the test process and with other suites.
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env
