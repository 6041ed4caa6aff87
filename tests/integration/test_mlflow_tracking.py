"""MLflow tracking against a real `mlflow server` process on loopback (its own SQLite store and
artifact folder), with regtrain's API and worker processes on both backends: a job is a run with
its spec's params, per-epoch metrics and tags; a sweep a parent run with one nested run per trial
and its winner registered; with the tracker down, a job still succeeds and its run appears once
the tracker is back (the outbox). What MLflow holds is read through its REST API.

regtrain reaches the tracker through a TCP relay (tcp_relay.py): the outage is the relay taken
down (connections refused, open ones cut) and brought back on the same port, which takes no time,
where stopping and starting `mlflow server` took tens of seconds on two loaded cores."""

from __future__ import annotations

import contextlib
import os
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
from tcp_relay import Relay

pytestmark = pytest.mark.integration

MLFLOW = Path(sys.executable).with_name("mlflow")
JOB: dict[str, Any] = {
    "dataset": {"name": "synthetic", "n_samples": 120, "n_features": 4, "seed": 1},
    "model": {"type": "mlp", "hidden": [8]},
    "regularization": {"l2": 0.001},
    "training": {"epochs": 3, "batch_size": 32, "device": "cpu"},
}


class Tracker:
    """An `mlflow server` process and a client of its REST API, and the relay regtrain reaches
    it through (`relay.url`; down and up again: the tracker's outage)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = httpx.Client(base_url=f"{self.url}/api/2.0/mlflow", timeout=30)
        self.proc: subprocess.Popen[bytes] | None = None
        self.relay = Relay(self.port)

    def start(self) -> None:
        log = open(self.root / "mlflow.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server and its job runner end together (killpg)
            env={k: v for k, v in os.environ.items() if not k.startswith(("REGTRAIN_", "MLFLOW_"))},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "mlflow.log").read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError("mlflow server never answered /health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        r = self.api.get(endpoint, params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.api.post(path, json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def runs(self, experiment: str, filter: str) -> list[dict[str, Any]]:
        r = self.api.get("experiments/get-by-name", params={"experiment_name": experiment})
        if r.status_code == 404:
            return []
        experiment_id = r.json()["experiment"]["experiment_id"]
        found = self.post("runs/search", {"experiment_ids": [experiment_id], "filter": filter})
        return list(found.get("runs") or [])

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        metrics = self.get("metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        return [(m["step"], m["value"]) for m in metrics]


def eventually(probe: Callable[[], Any], timeout: float = 90, what: str = "") -> Any:
    """probe()'s first truthy answer (the sender works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        out = probe()
        if out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.5)


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def ended_run(tracker: Tracker, experiment: str, kind: str, tag: str, value: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = tracker.runs(experiment, f"tags.`regtrain.kind` = '{kind}' and tags.`{tag}` = '{value}'")
        return found[0] if found and found[0]["info"]["status"] != "RUNNING" else None

    return dict(eventually(probe, what=f"an ended {kind} run tagged {tag}={value} in {experiment}"))


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    t = Tracker(tmp_path_factory.mktemp("mlflow"))
    t.start()
    try:
        yield t
    finally:
        t.stop()
        t.relay.down()
        t.api.close()


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def tracked(
    request: pytest.FixtureRequest, tracker: Tracker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """regtrain's API and a worker on the backend, tracking every job in `tracker`."""
    root = tmp_path_factory.mktemp(f"tracked-{request.param}")
    env = {**base_env(root / "data"), "REGTRAIN_MLFLOW_TRACKING_URI": tracker.relay.url}
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        svc = Service(request.param, env, root)
        stack.callback(svc.close)
        yield svc


def test_a_job_is_a_run_with_its_params_epoch_metrics_and_tags(tracked: Service, tracker: Tracker) -> None:
    experiment = f"jobs-{tracked.backend}"
    job = tracked.submit({**JOB, "name": "tracked", "tracking": {"mlflow": {"experiment": experiment}}})
    done = tracked.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]

    run = ended_run(tracker, experiment, "job", "regtrain.job_id", job["id"])
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "tracked"
    p, t = params(run), tags(run)
    assert (p["regularization.l2"], p["model.hidden"], p["training.epochs"]) == ("0.001", "[8]", "3")
    assert "tracking.mlflow.experiment" not in p and not any(k.startswith("notify") for k in p)
    assert t["regtrain.tenant"] == "default" and t["regtrain.status"] == "succeeded"
    assert t["regtrain.torch_version"] == done["result"]["environment"]["torch"]
    assert t["regtrain.version"] == done["result"]["environment"]["regtrain"]
    # Every epoch's metrics, at step = epoch, as the job's own metrics say.
    rows = tracked.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"]
    history = tracker.history(run["info"]["run_id"], "train_loss")
    assert history == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    assert [s for s, _ in history] == [1, 2, 3]
    final = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert final["test_accuracy"] == pytest.approx(done["result"]["metrics"]["test_accuracy"])


def test_a_sweep_is_a_parent_run_with_a_nested_run_per_trial_and_its_winner_registered(
    tracked: Service, tracker: Tracker
) -> None:
    experiment, model = f"sweeps-{tracked.backend}", f"winner-{tracked.backend}"
    base = {**JOB, "training": {**JOB["training"], "epochs": 2}}
    base["tracking"] = {"mlflow": {"experiment": experiment, "register_as": model}}
    r = tracked.http.post(
        "/v1/sweeps", json={"name": "l2-grid", "base": base, "grid": {"regularization.l2": [0.0, 0.01]}}
    )
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        sweep = tracked.http.get(f"/v1/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] in FINISHED else None

    sweep = eventually(finished, timeout=120, what="the sweep's end")
    assert sweep["status"] == "succeeded", sweep["error"]
    parent = ended_run(tracker, experiment, "sweep", "regtrain.sweep_id", sweep_id)
    assert parent["info"]["status"] == "FINISHED"
    assert params(parent)["sweep.grid"] == '{"regularization.l2":[0.0,0.01]}'
    assert "regularization.l2" not in params(parent)  # each trial's run has its own
    parent_id = parent["info"]["run_id"]

    children = tracker.runs(experiment, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    trials = sorted(
        (c for c in children if "regtrain.trial_index" in tags(c)),
        key=lambda c: tags(c)["regtrain.trial_index"],
    )
    assert [tags(c)["regtrain.trial_index"] for c in trials] == ["0", "1"]
    assert [params(c)["regularization.l2"] for c in trials] == ["0.0", "0.01"]
    assert all(c["info"]["status"] == "FINISHED" for c in trials)
    assert all(tracker.history(c["info"]["run_id"], "objective") for c in trials)
    (retrain,) = [c for c in children if tags(c).get("regtrain.job_id")]
    best_job = sweep["best"]["job_id"] if isinstance(sweep.get("best"), dict) else None
    assert tags(retrain)["regtrain.job_id"] == (best_job or tags(parent)["regtrain.best_job_id"])

    # The winner: a version of the registered model, whose source is the retrain's run's model.
    versions = eventually(
        lambda: tracker.get("model-versions/search", filter=f"name='{model}'").get("model_versions"),
        what="the winner's model version",
    )
    (version,) = versions
    assert version["run_id"] == retrain["info"]["run_id"]
    assert version["source"] == f"{retrain['info']['artifact_uri']}/model"
    files = tracker.get("artifacts/list", run_id=retrain["info"]["run_id"], path="model")["files"]
    assert {f["path"] for f in files} == {"model/model.safetensors", "model/model.json"}


def test_with_the_tracker_down_a_job_succeeds_and_its_run_appears_once_it_is_back(
    tracked: Service, tracker: Tracker
) -> None:
    if tracked.backend != "fleet":
        pytest.skip("the outbox is the store's, the same on both backends: run on the fleet's")
    experiment = "outage"
    tracker.relay.down()
    try:
        job = tracked.submit({**JOB, "tracking": {"mlflow": {"experiment": experiment}}})
        done = tracked.wait(job["id"])  # as prompt as any job: no step waits on the tracker
        assert done["status"] == "succeeded", done["error"]
        assert tracker.runs(experiment, f"tags.`regtrain.job_id` = '{job['id']}'") == []
    finally:
        tracker.relay.up()
    run = ended_run(tracker, experiment, "job", "regtrain.job_id", job["id"])
    assert run["info"]["status"] == "FINISHED"
    assert [s for s, _ in tracker.history(run["info"]["run_id"], "train_loss")] == [1, 2, 3]
