"""Reliability on the fleet backend, with processes of this module's own (never the shared ones):
a Redis server on a free port (no persistence, so a restart loses every message), a fresh
PostgreSQL database, one API and three workers:

- worker0 takes the gpu queue only: it never trains these (cpu) jobs, but its reaper runs, so
  jobs are reaped even when every cpu worker is dead;
- worker1 and worker2 take the cpu queue.

Short leases (3 s) and max_attempts=2 keep every wait to seconds. The tests run in file order
and share the processes; the last one kills the cpu workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from live_service import Service, base_env, free_port

from service.queue.broker import Broker
from service.settings import Settings

pytestmark = pytest.mark.integration

PG_ADMIN = os.environ.get("REGTRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = os.environ.get("REGTRAIN_TEST_PG_BASE", "postgresql+psycopg://postgres@127.0.0.1:5432")

SHORT = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [32]},
         "training": {"epochs": 12, "batch_size": 64, "device": "cpu"}}  # fmt: skip
# A few seconds of training: long enough to act on while it runs.
MEDIUM = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [256, 256]},
          "training": {"epochs": 60, "batch_size": 32, "device": "cpu"}}  # fmt: skip
ENDLESS = {**MEDIUM, "training": {"epochs": 5000, "batch_size": 32, "device": "cpu"}}


class RedisServer:
    """A redis-server of our own: SIGKILLed and started again on the same port, empty."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.logs / "redis.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, RedisServer]]:
    root = tmp_path_factory.mktemp("reliability")
    redis_server = RedisServer(root)
    db = f"regtrain_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{db}"')
    env = base_env(root / "data")
    env.update(
        REGTRAIN_DATABASE_URL=f"{PG_BASE}/{db}",
        REGTRAIN_BROKER_URL=redis_server.url,
        REGTRAIN_LEASE_SECONDS="3",
        REGTRAIN_HEARTBEAT_SECONDS="0.3",
        REGTRAIN_REAPER_INTERVAL_S="0.5",
        REGTRAIN_MAX_ATTEMPTS="2",
        # A queued job whose message Redis lost is sent again once it has waited this long on a
        # queue that holds fewer messages than the store has such jobs; the blind resend
        # (REGTRAIN_RESEND_AFTER_S, 30 min) stays at its default, so the tests prove the former.
        REGTRAIN_LOST_MESSAGE_AFTER_S="3",
    )
    svc = None
    try:
        svc = Service("fleet", env, root, worker_args=["--queues", "gpu"])
        svc.worker_args = ["--queues", "cpu"]
        svc.start_worker()
        svc.start_worker()
        yield svc, redis_server
    finally:
        if svc is not None:
            svc.close()
        if redis_server.proc is not None and redis_server.proc.poll() is None:
            redis_server.kill()
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
        admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.close()


def _epochs(svc: Service, job_id: str) -> list[int]:
    return [r["epoch"] for r in svc.http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]]


def _trained_once(svc: Service, job: dict[str, Any]) -> None:
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    assert [h["status"] for h in job["history"]] == ["queued", "running", "succeeded"]
    assert _epochs(svc, job["id"]) == list(range(1, job["spec"]["training"]["epochs"] + 1))


def test_two_workers_racing_for_one_job_train_it_once(fleet: tuple[Service, RedisServer]) -> None:
    svc, redis_server = fleet
    job_id = svc.submit(SHORT)["id"]
    # Ring the doorbell again, several times: both cpu workers get a message for the one job.
    broker = Broker(Settings(data_dir=svc.logs, broker_url=redis_server.url))
    for _ in range(4):
        broker.enqueue(job_id, "cpu")
    job = svc.wait(job_id, timeout=60)
    _trained_once(svc, job)
    time.sleep(1.0)  # the duplicate messages have been taken and dropped by now
    _trained_once(svc, svc.job(job_id))


def test_redis_restarted_mid_job_loses_nothing(fleet: tuple[Service, RedisServer]) -> None:
    svc, redis_server = fleet
    running = [svc.submit(MEDIUM)["id"] for _ in range(2)]
    for job_id in running:
        svc.wait(job_id, until={"running"}, min_epoch=1, timeout=60)
    # Both cpu workers are busy: this one's message sits in Redis, and dies with it.
    waiting = svc.submit(SHORT)["id"]
    redis_server.kill()
    time.sleep(0.5)
    redis_server.start()  # empty: no persistence
    after = svc.submit(SHORT)["id"]  # the API reconnects to the new Redis
    for job_id in running:
        _trained_once(svc, svc.wait(job_id, timeout=90))
    for job_id in (waiting, after):
        job = svc.wait(job_id, timeout=90)
        assert job["status"] == "succeeded", job["error"]
        assert _epochs(svc, job_id) == list(range(1, SHORT["training"]["epochs"] + 1))


def test_a_submit_retried_after_a_503_queues_its_job(fleet: tuple[Service, RedisServer]) -> None:
    svc, redis_server = fleet
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    redis_server.kill()
    try:
        r = svc.http.post("/v1/jobs", json=SHORT, headers=key)
        assert r.status_code == 503, r.text
    finally:
        redis_server.start()
    deadline = time.monotonic() + 30
    while True:  # the API's connection pool finds the new Redis
        r = svc.http.post("/v1/jobs", json=SHORT, headers=key)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued"
    job = svc.wait(r.json()["id"], timeout=90)
    assert job["status"] == "succeeded", job["error"]
    assert [h["status"] for h in job["history"]] == ["queued", "failed", "queued", "running", "succeeded"]
    again = svc.http.post("/v1/jobs", json=SHORT, headers=key)  # a third try: the same job, finished
    assert again.status_code == 202 and again.json()["id"] == job["id"]
    assert again.json()["status"] == "succeeded"


def test_a_worker_that_cannot_open_its_store_exits_before_taking_a_message(
    fleet: tuple[Service, RedisServer],
) -> None:
    svc, _ = fleet
    env = {
        **svc.env,
        "REGTRAIN_DATABASE_URL": f"postgresql+psycopg://postgres:pw@127.0.0.1:{free_port()}/nope",
    }
    bad = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--queues", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        job_id = svc.submit(SHORT)["id"]
        _, err = bad.communicate(timeout=60)
    finally:
        if bad.poll() is None:
            bad.kill()
            bad.wait()
    assert bad.returncode != 0
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot open the store" in lines[0] and ":pw@" not in lines[0], err
    job = svc.wait(job_id, timeout=90)  # a good worker trains it
    _trained_once(svc, job)


def test_api_restarted_loses_nothing(fleet: tuple[Service, RedisServer]) -> None:
    svc, _ = fleet
    job_id = svc.submit(MEDIUM)["id"]
    svc.wait(job_id, until={"running"}, min_epoch=1, timeout=60)
    before = svc.http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    svc.api.send_signal(signal.SIGKILL)
    svc.api.wait()
    svc.http.close()
    svc.http = httpx.Client(base_url=svc.url, timeout=30)
    svc.api = svc._spawn("api-restarted", ["api", "--port", str(svc.port)])
    svc._wait_ready()
    _trained_once(svc, svc.wait(job_id, timeout=90))  # it trained on while the API was down
    after = svc.http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert [j["id"] for j in after] == [j["id"] for j in before]
    for job in after:
        if job["status"] == "succeeded":
            epochs = job["spec"]["training"]["epochs"]
            assert _epochs(svc, job["id"]) == list(range(1, epochs + 1))
            names = {
                c["name"] for c in svc.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
            }
            assert {"best", "final"} <= names


def test_a_job_whose_worker_dies_every_attempt_fails_worker_lost(fleet: tuple[Service, RedisServer]) -> None:
    svc, _ = fleet
    job_id = svc.submit(ENDLESS)["id"]
    for attempt in (1, 2):
        # Two epochs done: the first one's checkpoint is recorded (the engine writes an epoch's
        # metrics row, then its checkpoint), so the next attempt has something to resume from.
        job = svc.wait(job_id, until={"running"}, min_epoch=2, timeout=60)
        deadline = time.monotonic() + 30
        while job["attempts"] != attempt and time.monotonic() < deadline:
            time.sleep(0.2)
            job = svc.job(job_id)
        assert job["attempts"] == attempt
        owner = [h for h in job["history"] if h["status"] == "running"][-1]["worker"]
        pid = int(owner.rsplit(":", 1)[1])
        victim = next(p for p in svc.workers if p.pid == pid)
        victim.send_signal(signal.SIGKILL)  # no warm shutdown: the lease just stops
        victim.wait()
        if attempt == 1:
            # The other cpu worker picks it up once the lease lapses, resumed.
            job = svc.wait(job_id, until={"running"}, min_epoch=job["progress"]["epoch"] + 1, timeout=60)
    # Every cpu worker is dead; the gpu-only worker's reaper ends the job.
    job = svc.wait(job_id, until={"failed"}, timeout=60)
    assert job["error"]["type"] == "worker_lost" and job["error"]["message"]
    assert job["attempts"] == 2
    runs = [h for h in job["history"] if h["status"] == "running"]
    assert len(runs) == 2 and runs[0]["worker"] != runs[1]["worker"]
    assert runs[1]["resumed_from_epoch"] is not None and runs[1]["resumed_from_epoch"] >= 1
    epochs = _epochs(svc, job_id)
    assert epochs == list(range(1, len(epochs) + 1))  # no epoch twice, none missing
