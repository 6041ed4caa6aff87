"""The fleet in view, on real processes: an API and two worker processes on each backend.

- GET /v1/workers lists both, with their queues; `regtrain workers --json` shows them; a worker
  that trains says what (to its tenant), and /metrics has its per-worker series; a worker
  stopped cleanly leaves the list at once, one killed once silent for a lease.
- On the fleet backend (PostgreSQL + Redis), Celery's own tools see the same fleet: the real
  `celery inspect ping` gets both workers' replies, and Flower lists both workers at
  /api/workers and the job's task at /api/tasks.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_service import FINISHED, Service, base_env, fleet_backend, free_port
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

CELERY = str(Path(sys.executable).with_name("celery"))
# Long enough to be seen training (it is cancelled once seen); iris trains an epoch in ms.
LONG = {
    "name": "fleet-view",
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 10000, "batch_size": 16, "device": "cpu", "checkpoint_every": 0},
}


@pytest.fixture(params=["embedded", "fleet"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """An API and two worker processes of its own (a worker is stopped by a test)."""
    env = base_env(tmp_path / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        svc = Service(request.param, env, tmp_path)
        stack.callback(svc.close)
        svc.start_worker()
        yield svc


def _until(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def _workers(svc: Service) -> list[dict[str, Any]]:
    r = svc.http.get("/v1/workers")
    assert r.status_code == 200, r.text
    return list(r.json()["workers"])


def _series(svc: Service, name: str) -> dict[str, float]:
    text = svc.http.get("/metrics").text
    return {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def flower(svc: Service, logs: Path) -> Iterator[str]:
    """Flower on a free loopback port, on the service's broker (its REGTRAIN_* settings give
    the app its URL, key prefix and transport options); its URL."""
    port = free_port()
    log = open(logs / "flower.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [CELERY, "-A", "worker.celery_app", "flower", f"--port={port}", "--address=127.0.0.1"],
        env={**svc.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


def _flower_json(url: str, path: str) -> Any:
    try:
        r = httpx.get(url + path, timeout=10)
    except httpx.TransportError:
        return None  # not listening yet
    return r.json() if r.status_code == 200 else None


def test_the_fleet_is_listed_and_each_tool_sees_it(two_workers: Service, tmp_path: Path) -> None:
    svc = two_workers
    rows = _until("both workers in /v1/workers", lambda: len(_workers(svc)) == 2 and _workers(svc))
    prefix = svc.env.get("REGTRAIN_QUEUE_PREFIX", "")
    for w in rows:
        assert w["queues"] == [f"{prefix}cpu", f"{prefix}gpu"], w
        assert w["device"] == "cpu" and w["busy"] is False and w["busy_with"] is None
        assert w["celery_name"].startswith("regtrain-cpu-") and w["version"]
    names = {w["name"] for w in rows}
    pids = {p.pid for p in svc.workers}
    assert {int(n.rsplit(":", 1)[1]) for n in names} == pids  # host:pid, as in job histories

    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "workers", "--json", "--url", svc.url],
        capture_output=True, text=True, timeout=60, env=svc.env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {w["name"] for w in json.loads(out.stdout)} == names
    table = subprocess.run(
        [sys.executable, "-m", "service.cli", "workers", "--url", svc.url],
        capture_output=True, text=True, timeout=60, env=svc.env,
    )  # fmt: skip
    assert table.returncode == 0 and table.stdout.split()[:2] == ["NAME", "QUEUES"]
    assert all(n in table.stdout for n in names)

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(flower(svc, tmp_path)) if svc.backend == "fleet" else None
        if url is not None:
            celery_names = {w["celery_name"] for w in rows}
            ping = subprocess.run(
                [CELERY, "-A", "worker.celery_app", "inspect", "ping", "--json", "--timeout", "5"],
                capture_output=True, text=True, timeout=120, env=svc.env,
            )  # fmt: skip
            assert ping.returncode == 0, ping.stdout + ping.stderr
            replies = json.loads(ping.stdout.strip().splitlines()[-1])
            assert set(replies) == celery_names and all(r == {"ok": "pong"} for r in replies.values())
            listed = _until(
                "both workers in Flower's /api/workers",
                lambda: (w := _flower_json(url, "/api/workers?refresh=1")) and set(w) == celery_names and w,
            )
            assert all("stats" in info for info in listed.values())

        job = svc.submit(LONG)
        busy = _until(
            "a worker busy with the job",
            lambda: next((w for w in _workers(svc) if w["busy_with"] == job["id"]), None),
        )
        assert busy["busy_kind"] == "job"
        assert svc.wait(job["id"], {"running"})["history"][-1]["worker"] == busy["name"]
        assert _series(svc, "regtrain_worker_busy")[busy["name"]] == 1.0
        assert set(_series(svc, "regtrain_worker_epochs_per_second")) == names
        _until(
            "an epoch rate from the busy worker",
            lambda: _series(svc, "regtrain_worker_epochs_per_second")[busy["name"]] > 0,
        )
        assert svc.http.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
        assert svc.wait(job["id"], FINISHED)["status"] == "cancelled"
        _until("the worker idle again", lambda: all(not w["busy"] for w in _workers(svc)))

        if url is not None:
            tasks = _until(
                "the job's task in Flower's /api/tasks",
                lambda: {
                    t["uuid"]: t
                    for t in (_flower_json(url, "/api/tasks") or {}).values()
                    if t.get("name") == "regtrain.run_job" and t.get("args") and job["id"] in t["args"]
                },
            )
            assert {t["worker"] for t in tasks.values()} <= set(celery_names)

    # A clean stop: the worker's row goes before its process exits.
    stopped = next(p for p in svc.workers if p.pid == int(busy["name"].rsplit(":", 1)[1]))
    _stop(stopped)
    assert stopped.returncode == 0, svc.log("worker0") + svc.log("worker1")
    assert {w["name"] for w in _workers(svc)} == names - {busy["name"]}
    assert set(_series(svc, "regtrain_worker_busy")) == names - {busy["name"]}

    # Killed outright, the other cannot delete its row: it is left out once silent for a lease.
    killed = next(p for p in svc.workers if p.poll() is None)
    killed.kill()
    killed.wait()
    _until("the killed worker left out", lambda: _workers(svc) == [], timeout=60)
    assert _series(svc, "regtrain_worker_busy") == {}
