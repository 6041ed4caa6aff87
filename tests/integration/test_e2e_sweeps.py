"""Sweeps end to end: HTTP → store → broker → worker → engine (every trial, every fold) → the
best trial retrained as a job → HTTP, on both backends."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from live_service import FINISHED, Service

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [16]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 2, "batch_size": 64, "device": "cpu"},
}
IRIS: dict[str, Any] = {**BASE, "dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [8]}}


def submit(service: Service, sweep: dict[str, Any]) -> dict[str, Any]:
    r = service.http.post("/v1/sweeps", json=sweep)
    assert r.status_code == 202, r.text
    return r.json()


def get(service: Service, sweep_id: str) -> dict[str, Any]:
    r = service.http.get(f"/v1/sweeps/{sweep_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _logs(service: Service) -> str:
    """The tail of every worker's log (a lost-worker test starts a new one)."""
    return "\n".join(service.log(f"worker{i}")[-1500:] for i in range(len(service.workers)))


def wait(
    service: Service, sweep_id: str, until: set[str] | None = None, timeout: float = 60
) -> dict[str, Any]:
    until = until or FINISHED
    deadline = time.monotonic() + timeout
    while True:
        sweep = get(service, sweep_id)
        if sweep["status"] in until:
            return sweep
        if sweep["status"] in FINISHED:
            trials = [(t["index"], t["status"], t.get("error") or t.get("reason")) for t in sweep["trials"]]
            pytest.fail(
                f"sweep ended {sweep['status']}: {sweep['error']}\ntrials: {trials}\n{_logs(service)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"sweep {sweep_id} still {sweep['status']} after {timeout} s\n{_logs(service)}")
        time.sleep(0.2)


def assert_scored(sweep: dict[str, Any]) -> None:
    """Every trial succeeded with metrics and a score; `best` is the arg-best of the scores."""
    assert sweep["status"] == "succeeded", sweep["error"]
    trials = sweep["trials"]
    assert all(t["status"] == "succeeded" and t["metrics"] and t["score"] is not None for t in trials)
    metric, mode = sweep["objective"]["metric"], sweep["objective"]["mode"]
    assert all(t["score"] == pytest.approx(t["metrics"][metric]) for t in trials)
    sign = -1 if mode == "max" else 1
    ranked = sorted(trials, key=lambda t: (sign * t["score"], t["index"]))
    assert sweep["leaderboard"] == [t["index"] for t in ranked]
    best = sweep["best"]
    assert best["index"] == ranked[0]["index"] and best["params"] == ranked[0]["params"]
    assert best["metrics"] == ranked[0]["metrics"] and best["job_id"]


def test_a_grid_sweep_with_cv_picks_the_best_and_retrains_it(service: Service) -> None:
    sweep = submit(
        service,
        {
            "name": "l2-grid",
            "base": BASE,
            "grid": {"regularization.l2": [0, 0.0001, 0.001, 0.1]},
            "objective": {"metric": "val_loss", "mode": "min"},
            "cv_folds": 2,
        },
    )
    sweep = wait(service, sweep["id"])
    assert_scored(sweep)
    assert sweep["started_at"] and sweep["finished_at"]
    assert all(len(t["fold_scores"]) == 2 and t["vectorized"] for t in sweep["trials"])
    assert "val_loss_std" in sweep["trials"][0]["metrics"]

    job = service.wait(sweep["best"]["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["name"] == "l2-grid-best"
    assert job["spec"]["split"]["validation"] == 0.0  # retrained on train + validation
    assert job["spec"]["regularization"]["l2"] == sweep["best"]["params"]["regularization.l2"]
    assert 0.0 <= job["result"]["metrics"]["test_accuracy"] <= 1.0
    names = {c["name"] for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]}
    assert "final" in names
    assert service.http.get(f"/v1/jobs/{job['id']}/checkpoints/final").status_code == 200
    listed = service.http.get("/v1/sweeps", params={"status": "succeeded"}).json()["sweeps"]
    assert sweep["id"] in [s["id"] for s in listed]
    assert service.http.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409


def test_a_random_search_and_a_regularization_path(service: Service) -> None:
    random = submit(
        service,
        {
            "base": IRIS,
            "random": {
                "regularization.l2": {"log_uniform": [1e-5, 0.1]},
                "model.dropout": {"uniform": [0, 0.3]},
            },
            "trials": 3,
            "objective": {"metric": "val_accuracy", "mode": "max"},
        },
    )
    path = submit(service, {"base": IRIS, "path": {"regularization.l2": [0.1, 0.01, 0.001]}, "cv_folds": 2})
    random, path = wait(service, random["id"]), wait(service, path["id"])
    assert_scored(random)
    assert all(len(t["fold_scores"]) == 1 for t in random["trials"])  # one validation split
    assert_scored(path)
    assert [t["params"]["regularization.l2"] for t in path["trials"]] == [0.1, 0.01, 0.001]
    assert not any(t["vectorized"] for t in path["trials"])  # each step starts from the last
    for sweep in (random, path):
        assert service.wait(sweep["best"]["job_id"])["status"] == "succeeded"


def test_cancel_a_running_sweep(service: Service) -> None:
    long = {
        **BASE,
        "model": {"type": "mlp", "hidden": [256, 256]},
        "training": {"epochs": 2000, "batch_size": 32},
    }
    sweep = submit(service, {"base": long, "grid": {"regularization.l2": [0, 0.001]}, "cv_folds": 2})
    wait(service, sweep["id"], until={"running"})
    # The sweep runs once its coordinator holds it; its trials run once a worker claims their
    # unit, a second task that a loaded machine may start seconds later.
    deadline = time.monotonic() + 60
    while (running := get(service, sweep["id"]))["status"] == "running":
        if {t["status"] for t in running["trials"]} == {"running"}:
            break
        assert time.monotonic() < deadline, running
        time.sleep(0.1)
    assert {t["status"] for t in running["trials"]} == {"running"}, running
    time.sleep(0.5)
    t0 = time.monotonic()
    r = service.http.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = wait(service, sweep["id"], until={"cancelled"}, timeout=15)
    assert time.monotonic() - t0 < 10
    assert {t["status"] for t in done["trials"]} == {"cancelled"}  # none left running
    assert done["best"] is None and done["finished_at"]
    assert service.http.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 409


def test_a_lost_worker_is_reaped_and_only_unfinished_trials_run_again(service: Service) -> None:
    if service.backend != "embedded":
        # The lease's 4 s and a worker's start dominate; the store tests run the reaper's
        # queries on PostgreSQL too.
        pytest.skip("once is enough: on the embedded backend")
    slow = {**BASE, "model": {"type": "mlp", "hidden": [64]}, "training": {"epochs": 10, "batch_size": 32}}
    sweep = submit(
        service, {"base": slow, "grid": {"regularization.l2": [0, 0.001, 0.01]}, "vectorize": False}
    )
    deadline = time.monotonic() + 60
    while (first := get(service, sweep["id"]))["trials"][0]["status"] != "succeeded":
        assert time.monotonic() < deadline and first["status"] in {"queued", "running"}, first
        time.sleep(0.1)
    for proc in service.workers:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # no warm shutdown: the lease just stops
            proc.wait()
    assert [t["status"] for t in get(service, sweep["id"])["trials"]][1:] == ["running", "running"]
    service.start_worker()
    done = wait(service, sweep["id"], timeout=90)
    assert_scored(done)
    assert done["attempts"] == 2
    # The trial the first attempt finished was kept, not trained again.
    assert done["trials"][0]["finished_at"] == first["trials"][0]["finished_at"]
    assert done["trials"][0]["score"] == first["trials"][0]["score"]
    assert service.wait(done["best"]["job_id"])["status"] == "succeeded"
