"""A model type from a plugin (examples/plugins: `residual_mlp`, installed in the venv the API
and worker processes run from) over HTTP, on both backends: validated, trained, exported,
swept; and a job of that type waiting, queued and never failed, while the only worker lacks the
plugin, then trained by one that has it."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from live_service import FINISHED, Service, base_env, fleet_backend

pytestmark = pytest.mark.integration

PLUGIN: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "residual_mlp", "width": 16, "blocks": 2, "dropout": 0.1},
    "regularization": {"l2": 0.001, "max_norm": 3.0},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 20, "batch_size": 32, "device": "cpu"},
}


def test_the_plugin_type_is_in_the_contract(service: Service) -> None:
    schema = service.http.get("/openapi.json").json()
    assert "ResidualMLPSpec" in schema["components"]["schemas"]
    r = service.http.post("/v1/jobs", json={**PLUGIN, "model": {"type": "gru_of_my_own"}})
    assert r.status_code == 422
    (err,) = [e for e in r.json()["detail"] if e["loc"][:3] == ["body", "model", "type"]]
    assert "'residual_mlp'" in err["msg"] and "'mlp'" in err["msg"]


def test_the_plugin_type_trains_predicts_and_exports(service: Service) -> None:
    job = service.wait(service.submit(PLUGIN)["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["metrics"]["test_accuracy"] > 0.6  # iris: far above a third
    raw = torch.tensor([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
    url = f"/v1/jobs/{job['id']}/checkpoints/best"
    r = service.http.get(url, params={"format": "torchscript"})
    assert r.status_code == 200, r.text
    scripted = torch.jit.load(io.BytesIO(r.content))
    predicted = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": raw.tolist()}).json()
    assert len(predicted["predictions"]) == 3
    assert scripted(raw).shape == (3, 3)
    assert service.http.get(url, params={"format": "onnx"}).status_code == 200


def test_the_plugin_type_sweeps_trial_by_trial(service: Service) -> None:
    r = service.http.post(
        "/v1/sweeps",
        json={
            "name": "residual-l2",
            "base": {**PLUGIN, "training": {**PLUGIN["training"], "epochs": 3}},
            "grid": {"regularization.l2": [0, 0.01], "model.dropout": [0, 0.3]},
            "objective": {"metric": "val_loss", "mode": "min"},
        },
    )
    assert r.status_code == 202, r.text
    sweep = finished_sweep(service, r.json()["id"], timeout=180)
    assert sweep["status"] == "succeeded", sweep["error"]
    assert len(sweep["trials"]) == 4 and not any(t["vectorized"] for t in sweep["trials"])
    best = service.wait(sweep["best"]["job_id"])
    assert best["status"] == "succeeded", best["error"]
    assert best["spec"]["model"]["type"] == "residual_mlp"


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def no_plugin_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """An API with the plugin and a first worker (worker0) that hides it, as an operator does
    with REGTRAIN_DISABLED_MODEL_PLUGINS on a host that cannot run it."""
    root = tmp_path_factory.mktemp(f"regtrain-noplugin-{request.param}")
    env = base_env(root / "data")
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        hide = {"REGTRAIN_DISABLED_MODEL_PLUGINS": "residual_mlp"}
        svc = Service(request.param, env, root, own_env=lambda label: hide if label == "worker0" else {})
        stack.callback(svc.close)
        yield svc


def finished_sweep(svc: Service, sweep_id: str, timeout: float) -> dict[str, Any]:
    """The sweep's document once it has ended."""
    deadline = time.monotonic() + timeout
    while (sweep := svc.http.get(f"/v1/sweeps/{sweep_id}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, sweep
        time.sleep(0.3)
    return dict(sweep)


def notes(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's history rows that say it waits for the plugin's type."""
    return [h for h in job["history"] if "residual_mlp" in (h.get("message") or "")]


def test_a_worker_without_the_plugin_leaves_the_job_waiting(no_plugin_worker: Service) -> None:
    svc = no_plugin_worker
    job_id = svc.submit({**PLUGIN, "training": {**PLUGIN["training"], "epochs": 2}})["id"]
    deadline = time.monotonic() + 60
    while not (waiting := notes(job := svc.job(job_id))):
        assert time.monotonic() < deadline, f"{job}\n{svc.log('worker0')}"
        time.sleep(0.2)
    assert job["status"] == "queued"
    assert (
        len(waiting) == 1 and "waiting for a worker with model type 'residual_mlp'" in waiting[0]["message"]
    )
    time.sleep(3)  # worker0 returns the message again and again: the job stays queued, one note
    job = svc.job(job_id)
    assert (
        job["status"] == "queued" and job["attempt"] == 0 if "attempt" in job else job["status"] == "queued"
    )
    assert len([h for h in job["history"] if "residual_mlp" in (h.get("message") or "")]) == 1
    svc.start_worker()  # worker1 has the plugin
    job = svc.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert [h["status"] for h in job["history"]] == ["queued", "queued", "running", "succeeded"]


def test_a_worker_without_the_plugin_hands_back_the_units_of_a_sweep(no_plugin_worker: Service) -> None:
    """Units of a plugin-type sweep, whichever worker's queue they reach first: worker0 (without
    the plugin) hands each back unclaimed, worker1 trains them all, none fails."""
    svc = no_plugin_worker
    while len(svc.workers) < 2:
        svc.start_worker()  # worker1 has the plugin (started here if this test runs alone)
    r = svc.http.post(
        "/v1/sweeps",
        json={
            "base": {**PLUGIN, "training": {**PLUGIN["training"], "epochs": 2}},
            "grid": {"regularization.l2": [0, 0.001, 0.01, 0.1]},
            "parallel": 1,  # a unit per trial: messages for both workers
        },
    )
    assert r.status_code == 202, r.text
    sweep = finished_sweep(svc, r.json()["id"], timeout=240)
    assert sweep["status"] == "succeeded", sweep["error"]
    assert [t["status"] for t in sweep["trials"]] == ["succeeded"] * 4
    trained_by = {u["worker"] for u in sweep["units"]}
    assert len(trained_by) == 1 and trained_by != {None}, sweep["units"]
