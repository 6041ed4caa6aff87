"""A sweep spread over the fleet, on processes of this module's own: a real API, two real Celery
workers on the cpu queue, PostgreSQL and Redis. The sweep's units run on both workers (the
document names two), and a SIGKILLed worker's unit is trained by the other, with no unit trained
to its end twice and no trial recorded twice. A CV grid that names no `parallel` is split for the
live workers, so both train it.

The tests run in file order and share the processes; the second one kills a worker.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from live_service import FINISHED, Service, base_env, fleet_backend

pytestmark = pytest.mark.integration

EPOCHS, FOLDS = 6, 2
# Units of two trials that take a few seconds each on a shared CPU: long enough for the other
# worker to take its share, and to kill a worker in the middle of one.
SWEEP: dict[str, Any] = {
    "base": {
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden": [128, 128]},
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": EPOCHS, "batch_size": 32, "device": "cpu"},
    },
    "grid": {"regularization.l2": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3]},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "cv_folds": FOLDS,
    "parallel": 2,
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("regtrain-sweep-units")
    with contextlib.ExitStack() as stack:
        env = {
            **base_env(root / "data"),
            **stack.enter_context(fleet_backend()),
            "REGTRAIN_LEASE_SECONDS": "3",
            "REGTRAIN_HEARTBEAT_SECONDS": "0.3",
            "REGTRAIN_REAPER_INTERVAL_S": "0.5",
            "REGTRAIN_TORCH_THREADS": "1",
        }
        svc = Service("fleet", env, root, worker_args=["--queues", "cpu"])
        stack.callback(svc.close)  # every process it started, killed ones included
        svc.start_worker()
        svc.wait_workers(2)
        yield svc


def _name(pid: int) -> str:
    """A worker's name, as its leases and the sweep document spell it."""
    return f"{socket.gethostname()}:{pid}"


def _sweep(svc: Service, sweep_id: str) -> dict[str, Any]:
    r = svc.http.get(f"/v1/sweeps/{sweep_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _wait(svc: Service, sweep_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (sweep := _sweep(svc, sweep_id))["status"] not in FINISHED:
        if time.monotonic() > deadline:
            logs = "\n".join(svc.log(f"worker{i}") for i in range(len(svc.workers)))
            pytest.fail(f"sweep still {sweep['status']} after {timeout} s: {sweep['units']}\n{logs}")
        time.sleep(0.3)
    return sweep


def _units_trained(svc: Service, sweep_id: str) -> list[tuple[str, int]]:
    """(worker log, unit index) of every time a worker began training a unit of the sweep."""
    out = []
    for i in range(len(svc.workers)):
        for m in re.finditer(rf"sweep {sweep_id} unit (\d+): trials", svc.log(f"worker{i}")):
            out.append((f"worker{i}", int(m.group(1))))
    return out


def _trained_once(sweep: dict[str, Any]) -> None:
    """Every trial succeeded with exactly its epochs (each fold once) and the worker of its unit."""
    units = {u["index"]: u for u in sweep["units"]}
    assert {i for u in units.values() for i in u["trials"]} == set(range(8))
    for t in sweep["trials"]:
        assert t["status"] == "succeeded", t
        assert t["epochs_trained"] == EPOCHS * FOLDS and len(t["fold_scores"]) == FOLDS
        assert t["worker"] == units[t["unit"]]["worker"]
        assert [step for step, _ in t["curve"]] == list(range(1, EPOCHS * FOLDS + 1))


def test_a_sweeps_units_run_on_both_workers(fleet: Service) -> None:
    r = fleet.http.post("/v1/sweeps", json={**SWEEP, "name": "spread"})
    assert r.status_code == 202, r.text
    sweep = _wait(fleet, r.json()["id"])
    assert sweep["status"] == "succeeded", sweep["error"]
    assert [u["index"] for u in sweep["units"]] == [0, 1, 2, 3]
    assert all(u["status"] == "succeeded" and u["attempts"] == 1 for u in sweep["units"]), sweep["units"]
    assert {u["worker"] for u in sweep["units"]} == {_name(p.pid) for p in fleet.workers}, sweep["units"]
    _trained_once(sweep)
    # ended only once the best trial's retrain had: best carries its test metrics
    assert sweep["best"]["job_status"] == "succeeded" and sweep["best"]["test_metrics"]["test_accuracy"] > 0


def test_a_cv_grid_without_parallel_is_split_for_the_live_workers(fleet: Service) -> None:
    """An 8-trial, 4-fold CV grid that names no `parallel` is cut into as many units as there
    are live workers on its queue, counted from their heartbeats: both train it, each all 8
    trials stacked over half the folds (a wide stack costs little more a step than a narrow
    one: worker/coordinator.py grid_unit_size)."""
    grid = {k: v for k, v in SWEEP.items() if k != "parallel"}
    base = {**grid["base"], "training": {**grid["base"]["training"], "epochs": 3}}
    r = fleet.http.post("/v1/sweeps", json={**grid, "base": base, "cv_folds": 4, "name": "fills"})
    assert r.status_code == 202, r.text
    sweep = _wait(fleet, r.json()["id"])
    assert sweep["status"] == "succeeded", sweep["error"]
    assert [(u["trials"], u["folds"]) for u in sweep["units"]] == [
        (list(range(8)), f) for f in ([0, 2], [1, 3])
    ]
    assert {u["worker"] for u in sweep["units"]} == {_name(p.pid) for p in fleet.workers}, sweep["units"]
    assert all(len(t["fold_scores"]) == 4 for t in sweep["trials"])
    for i in range(len(fleet.workers)):  # each warmed up (worker_init) before it took a message
        assert "worker warmed up before it said ready" in (fleet.logs / f"worker{i}.log").read_text(
            errors="replace"
        )


def test_a_cv_trial_alone_is_split_over_its_folds(fleet: Service) -> None:
    """Fewer trials than workers: a trial's folds are dealt over units, one a worker, and the
    trial ends once its last fold-unit has, scored over every fold."""
    grid = {k: v for k, v in SWEEP.items() if k != "parallel"}
    r = fleet.http.post("/v1/sweeps", json={**grid, "grid": {"regularization.l2": [1e-4]}, "cv_folds": 4})
    assert r.status_code == 202, r.text
    sweep = _wait(fleet, r.json()["id"])
    assert sweep["status"] == "succeeded", sweep["error"]
    assert [(u["trials"], u["folds"]) for u in sweep["units"]] == [([0], [0, 2]), ([0], [1, 3])]
    assert {u["worker"] for u in sweep["units"]} == {_name(p.pid) for p in fleet.workers}, sweep["units"]
    [trial] = sweep["trials"]
    assert trial["status"] == "succeeded" and len(trial["fold_scores"]) == 4
    assert trial["epochs_trained"] == 4 * EPOCHS and trial["score"] == pytest.approx(
        sum(trial["fold_scores"]) / 4
    )
    assert sweep["best"]["job_status"] == "succeeded"


def test_a_sigkilled_workers_unit_finishes_on_the_other_without_training_twice(fleet: Service) -> None:
    r = fleet.http.post("/v1/sweeps", json={**SWEEP, "name": "killed"})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    # A unit in the middle of its training: some epochs done, its trials not yet recorded.
    deadline = time.monotonic() + 120
    while True:
        sweep = _sweep(fleet, sweep_id)
        running = [
            u
            for u in sweep["units"]
            if u["status"] == "running"
            and all((t := sweep["trials"][i])["progress"] and t["status"] == "running" for i in u["trials"])
        ]
        if running:
            break
        assert time.monotonic() < deadline and sweep["status"] not in FINISHED, sweep["units"]
        time.sleep(0.1)
    unit = running[0]
    finished_before = {
        t["index"]: (t["worker"], t["finished_at"]) for t in sweep["trials"] if t["finished_at"]
    }
    pid = int(unit["worker"].rsplit(":", 1)[1])
    victim = next(p for p in fleet.workers if p.pid == pid)
    victim.send_signal(signal.SIGKILL)  # no warm shutdown: its leases just stop being renewed
    victim.wait()

    sweep = _wait(fleet, sweep_id)
    assert sweep["status"] == "succeeded", sweep["error"]
    survivor = next(_name(p.pid) for p in fleet.workers if p.pid != pid)
    killed = next(u for u in sweep["units"] if u["index"] == unit["index"])
    assert killed["worker"] == survivor and killed["attempts"] == 2 and killed["status"] == "succeeded"
    _trained_once(sweep)
    # What was recorded before the kill stayed as it was: not trained again, not rewritten.
    after = {t["index"]: (t["worker"], t["finished_at"]) for t in sweep["trials"]}
    assert all(after[i] == v for i, v in finished_before.items())
    # Each unit began once, but the killed one, which began again on the survivor only.
    began = _units_trained(fleet, sweep_id)
    counts = {u["index"]: sum(1 for _, i in began if i == u["index"]) for u in sweep["units"]}
    assert counts == {u["index"]: 2 if u["index"] == unit["index"] else 1 for u in sweep["units"]}, began
    labels = {f"worker{k}": _name(p.pid) for k, p in enumerate(fleet.workers)}
    assert sorted(labels[w] for w, i in began if i == unit["index"]) == sorted([unit["worker"], survivor])
