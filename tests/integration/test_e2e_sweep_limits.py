"""Sweeps that say what they do and keep within the caps, end to end on both backends (a real
API and a real Celery worker, SQLite + file broker and PostgreSQL + Redis):

- a grid sampler asked for 8 trials over 2 combinations trains each combination exactly once,
  says so in `warnings`, and ends `succeeded` with its retrained best (it used to train one
  twice, fail 5 trials `internal: Study.stop` and still read `succeeded`);
- a worker whose caps are lower than the API's (an operator lowered them after the sweep was
  admitted, or a fleet whose workers run with other limits) fails the trials over its caps
  `over_limit`, untrained, and the sweep goes on with the others: a grid's unit and a search's
  (told failed to its study). No API path makes an over-cap trial now that the API checks a
  space's joint worst case, so the caps differ between the two processes here;
- on the fleet, a database URL with its password in the query (`?password=…`, which libpq
  honours) is never shown: every tenant reads a search's `study.storage`, and it opens the study
  without it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from live_service import FINISHED, Service, base_env, fleet_backend

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [4]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 2, "batch_size": 64, "device": "cpu"},
}
# The worker's cap on parameters: hidden [4] on digits has 310, hidden [64] 4,810.
WORKER_MAX_PARAMETERS = 1_000
SECRET = "s3cr3t-db-password"


def _finished(service: Service, sweep_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = service.http.get(f"/v1/sweeps/{sweep_id}")
        assert r.status_code == 200, r.text
        if r.json()["status"] in FINISHED:
            return r.json()
        assert time.monotonic() < deadline, (r.json()["status"], service.log("worker0"))
        time.sleep(0.3)


def test_a_grid_sampler_asked_for_more_trials_than_combinations_trains_each_once(service: Service) -> None:
    r = service.http.post(
        "/v1/sweeps",
        json={
            "base": BASE,
            "space": {"optimizer.name": {"choice": ["adam", "sgd"]}},
            "sampler": "grid",
            "trials": 8,
            "objective": {"metric": "val_accuracy", "mode": "max"},
        },
    )
    assert r.status_code == 202, r.text
    admitted = r.json()
    assert admitted["spec"]["trials"] == 2
    assert len(admitted["warnings"]) == 1 and "2 combinations" in admitted["warnings"][0]

    sweep = _finished(service, admitted["id"])
    assert sweep["status"] == "succeeded", (sweep["error"], service.log("worker0"))
    trials = sweep["trials"]
    assert sorted(t["params"]["optimizer.name"] for t in trials) == ["adam", "sgd"]  # each once
    assert all(t["status"] == "succeeded" and t["error"] is None for t in trials)
    assert all(u["status"] == "succeeded" for u in sweep["units"])
    assert admitted["warnings"][0] in sweep["warnings"]  # kept past the retrain's own warnings
    assert sweep["best"]["job_status"] == "succeeded"
    study = optuna.load_study(study_name=sweep["study"]["name"], storage=sweep["study"]["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def strict_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """An API with the default caps and a worker with a far lower REGTRAIN_MAX_PARAMETERS."""
    root = tmp_path_factory.mktemp(f"regtrain-caps-{request.param}")
    env = base_env(root / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
            # trust auth ignores it, but libpq and SQLAlchemy pass it on: a secret to keep
            env["REGTRAIN_DATABASE_URL"] += f"?password={SECRET}"

        def own_env(label: str) -> dict[str, str]:
            return (
                {"REGTRAIN_MAX_PARAMETERS": str(WORKER_MAX_PARAMETERS)} if label.startswith("worker") else {}
            )

        svc = Service(request.param, env, root, own_env=own_env)
        stack.callback(svc.close)
        yield svc


@pytest.mark.parametrize("search", ["grid", "space"])
def test_a_trial_over_the_workers_caps_fails_over_limit_untrained(
    strict_worker: Service, search: str
) -> None:
    widths = [[4], [64]]
    sweep_doc: dict[str, Any] = {"base": BASE, "objective": {"metric": "val_accuracy", "mode": "max"}}
    if search == "grid":
        sweep_doc["grid"] = {"model.hidden": widths}
    else:
        sweep_doc.update(space={"model.hidden": {"choice": widths}}, sampler="grid", trials=2)
    r = strict_worker.http.post("/v1/sweeps", json=sweep_doc)
    assert r.status_code == 202, r.text  # the API's caps admit both widths

    sweep = _finished(strict_worker, r.json()["id"])
    assert sweep["status"] == "succeeded", (sweep["error"], strict_worker.log("worker0"))
    by_width = {tuple(t["params"]["model.hidden"]): t for t in sweep["trials"]}
    over, within = by_width[(64,)], by_width[(4,)]
    assert over["status"] == "failed" and over["error"]["type"] == "over_limit", over
    assert "4,810 parameters exceed the limit of 1,000" in over["error"]["message"]
    assert over["epochs_trained"] == 0 and over["score"] is None and not over["curve"]  # never trained
    assert within["status"] == "succeeded" and within["epochs_trained"] == 2
    assert sweep["best"]["index"] == within["index"] and sweep["best"]["job_status"] == "succeeded"
    assert SECRET not in json.dumps(sweep)
    if search == "space":  # the study was told the over-cap trial failed
        storage = sweep["study"]["storage"]
        if strict_worker.backend == "fleet":
            assert storage.startswith("postgresql+psycopg://postgres@") and "?" not in storage
        study = optuna.load_study(study_name=sweep["study"]["name"], storage=storage)
        assert study.trials[over["index"]].state == optuna.trial.TrialState.FAIL
