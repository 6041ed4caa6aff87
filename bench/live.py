"""Start real regtrain processes for a benchmark: an API and workers on loopback, on the embedded
default or on Redis + PostgreSQL (a database and a Redis key prefix of their own, removed after)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PG_ADMIN = os.environ.get("REGTRAIN_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = os.environ.get("REGTRAIN_BENCH_PG_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("REGTRAIN_BENCH_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    def __init__(self, env: dict[str, str], root: Path, workers: int, worker_nice: int = 0) -> None:
        self.env, self.root = env, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api = self.spawn("api", ["api", "--port", str(self.port)])
        for i in range(workers):
            self.spawn(f"worker{i}", ["worker", "--queues", "cpu,gpu", "--loglevel", "warning"], worker_nice)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.api.poll() is not None:
                raise RuntimeError((root / "api.log").read_text()[-3000:])
            time.sleep(0.1)

    def spawn(self, label: str, args: list[str], nice: int = 0) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{label}.log", "ab")  # noqa: SIM115 (closed with the process)
        # REGTRAIN_WORKER_NICE: the worker lowers its own priority and its session's autogroup
        # (a plain nice(1) weighs nothing against the API's session under autogroup scheduling).
        env = {**self.env, "REGTRAIN_WORKER_NICE": str(nice)} if nice else self.env
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def rss_mb(self, proc: subprocess.Popen[bytes]) -> float:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@contextmanager
def live(
    fleet: bool, workers: int = 1, extra_env: dict[str, str] | None = None, worker_nice: int = 0
) -> Iterator[Live]:
    """An API and `workers` workers; fleet=True puts them on Redis + PostgreSQL. worker_nice
    lowers the workers' CPU priority: on one small machine, what keeps training from taking the
    cores a fleet's API replicas would have to themselves."""
    root = Path(tempfile.mkdtemp(prefix="regtrain-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    env.update(REGTRAIN_DATA_DIR=str(root / "data"), PYTHONUNBUFFERED="1", **(extra_env or {}))
    drop = None
    if fleet:
        import psycopg
        import redis

        db = f"regtrain_bench_{uuid.uuid4().hex[:10]}"
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
        admin.execute(f'CREATE DATABASE "{db}"')
        prefix, redis_db = f"rtb{uuid.uuid4().hex[:8]}-", random.randint(1, 15)
        env.update(
            REGTRAIN_DATABASE_URL=f"{PG_BASE}/{db}",
            REGTRAIN_BROKER_URL=f"{REDIS}/{redis_db}",
            REGTRAIN_QUEUE_PREFIX=prefix,
        )

        def drop() -> None:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
            admin.close()
            r = redis.Redis.from_url(f"{REDIS}/{redis_db}")
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)
            r.close()

    svc = Live(env, root, workers, worker_nice)
    try:
        yield svc
    finally:
        svc.close()
        if drop:
            drop()
