"""The Python client, the event stream, /metrics and predict, against the live server and worker
of tests/integration (both backends)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from live_service import Service
from prometheus_client.parser import text_string_to_metric_families
from regtrain_client import (
    Client,
    Conflict,
    EpochMetrics,
    InvalidSpec,
    Job,
    JobFailed,
    NotFound,
    parse_sse,
)

pytestmark = pytest.mark.integration

TINY = {
    "name": "client-tiny",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [16]},
    "training": {"epochs": 3, "batch_size": 64},
}
DIVERGES = {
    "name": "client-diverges",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [64]},
    "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9},
    "training": {"epochs": 3, "batch_size": 64},
}


@pytest.fixture
def client(service: Service) -> Any:
    with Client(service.url, retries=2, backoff=0.05) as c:
        yield c


def test_submit_wait_metrics_checkpoints_download(client: Client, tmp_path: Any) -> None:
    job = client.submit(TINY)
    assert isinstance(job, Job) and job.status in {"queued", "running"}
    seen: list[EpochMetrics] = []
    done = job.wait(progress=lambda row, _: seen.append(row), timeout=90)
    assert done.status == "succeeded" and done.result is not None
    assert [r.epoch for r in seen] == [1, 2, 3]
    assert 0 <= done.result.metrics["test_accuracy"] <= 1
    rows = done.metrics()
    assert [r.epoch for r in rows] == [1, 2, 3] and rows[0].train_loss is not None
    assert rows[-1].as_dict() == seen[-1].as_dict()  # the stream's rows are the store's rows
    ckpts = {c.name: c for c in done.checkpoints()}
    assert {"best", "final"} <= set(ckpts)
    path = done.download("best", tmp_path / "best.safetensors")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ckpts["best"].sha256
    assert [j.id for j in client.jobs(limit=5)].count(done.id) == 1


def test_the_servers_detail_is_raised(client: Client) -> None:
    with pytest.raises(NotFound) as e:
        client.job("no-such-job")
    assert e.value.status_code == 404 and "no-such-job" in str(e.value.detail)
    with pytest.raises(InvalidSpec) as bad:
        client.submit({**TINY, "training": {"epochs": 0}})
    assert ["body", "training", "epochs"] in [d["loc"] for d in bad.value.detail]
    assert "body.training.epochs" in str(bad.value)
    failed = client.submit(DIVERGES)
    with pytest.raises(JobFailed) as why:
        failed.wait(check=True, timeout=60)
    assert why.value.job.status == "failed" and why.value.job.error.type == "diverged"
    with pytest.raises(Conflict):
        failed.cancel()
    long = client.submit({**TINY, "name": "long", "training": {"epochs": 3000}})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        long.wait(timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert long.cancel().cancel_requested


class LosesAnswers(httpx.HTTPTransport):
    """Sends the request, then drops the first `n` answers (the client sees a read error)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent += 1
        if self.n > 0:
            self.n -= 1
            response.close()
            raise httpx.ReadError("connection dropped", request=request)
        return response


def test_a_retried_submit_makes_one_job(service: Service) -> None:
    transport = LosesAnswers(2)
    with Client(service.url, retries=3, backoff=0.01, transport=transport) as client:
        job = client.submit({**TINY, "name": "retried", "training": {"epochs": 1}})
        assert transport.sent == 3  # the server saw the POST three times...
        same = [j for j in client.jobs(limit=50) if j.name == "retried"]
        assert [j.id for j in same] == [job.id]  # ...and made one job
        assert job.wait(timeout=60).status == "succeeded"
    with Client("http://127.0.0.1:9", retries=1, backoff=0.01) as nowhere, pytest.raises(httpx.ConnectError):
        nowhere.job("x")


def _read_events(service: Service, job_id: str, last_id: str | None = None) -> tuple[list[Any], list[str]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with service.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    return list(parse_sse(iter(lines))), lines


def test_events_stream_and_resume(service: Service) -> None:
    job_id = service.submit({**TINY, "name": "events", "training": {"epochs": 4}})["id"]
    events, lines = _read_events(service, job_id)  # live: returns once the job is done
    received = datetime.now(UTC)
    if service.backend == "fleet":
        # The worker's Redis doorbell wakes the stream: no waiting out the 5 s fallback poll.
        finished = datetime.fromisoformat(events[-1].data["finished_at"])
        assert (received - finished).total_seconds() < 2.0
    assert any(line.startswith(":") for line in lines)  # a comment (keep-alive) the parser skips
    kinds = [e.event for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert events[-1].data["status"] == "succeeded" and events[-1].data["id"] == job_id
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    epochs = [e.data for e in events if e.event == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert epochs == service.http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    assert {"best", "final"} <= {e.data["name"] for e in events if e.event == "checkpoint"}
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids[:-1])) == len(ids) - 1  # done repeats the last position

    # Reconnect after the second epoch: exactly what followed it, nothing twice.
    cut = next(i for i, e in enumerate(events) if e.event == "epoch" and e.data["epoch"] == 2)
    rest, _ = _read_events(service, job_id, events[cut].id)
    assert [e.data["epoch"] for e in rest if e.event == "epoch"] == [3, 4]
    assert [e.data["status"] for e in rest if e.event == "status"] == ["succeeded"]
    assert rest[-1].event == "done"
    # An unknown id answers 404 before any stream starts.
    assert service.http.get("/v1/jobs/nope/events").status_code == 404


def test_prometheus_metrics_parse(service: Service) -> None:
    job = service.wait(service.submit({**TINY, "name": "metrics", "training": {"epochs": 1}})["id"])
    service.http.get(f"/v1/jobs/{job['id']}")
    r = service.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    by_status = {s.labels["status"]: s.value for s in families["regtrain_jobs"].samples}
    assert by_status["succeeded"] >= 1 and set(by_status) >= {"queued", "running", "failed"}
    assert "regtrain_queue_depth" in families
    durations = families["regtrain_job_duration_seconds"].samples
    count = next(
        s.value for s in durations if s.name.endswith("_count") and s.labels["status"] == "succeeded"
    )
    assert count >= 1
    assert next(iter(families["regtrain_epochs"].samples)).value >= 1
    assert families["regtrain_epochs_per_second"].samples[0].value >= 0
    routes = {s.labels.get("route") for s in families["regtrain_http_request_duration_seconds"].samples}
    assert "/v1/jobs/{job_id}" in routes and not any(job["id"] in (r or "") for r in routes)


@pytest.mark.parametrize("service", ["embedded"], indirect=True)  # the API process alone predicts
@pytest.mark.parametrize("dataset", ["digits", "diabetes"])
def test_predict_reproduces_the_jobs_test_metrics(client: Client, dataset: str, tmp_path: Any) -> None:
    import numpy as np

    from service.contract.spec import JobSpec
    from worker.training.data import prepare

    spec = {"name": f"predict-{dataset}", "dataset": {"name": dataset},
            "model": {"type": "mlp", "hidden": [32], "dropout": 0.2},
            "training": {"epochs": 8, "batch_size": 32}}  # fmt: skip
    job = client.submit(spec).wait(timeout=90, check=True)
    data = prepare(JobSpec.model_validate(job.spec))
    st = data.standardization
    raw = data.X_test * st.std + st.mean  # the raw feature space the user has
    predictions = job.predict(raw, checkpoint="final")
    metrics = job.result.metrics  # type: ignore[union-attr]
    if dataset == "digits":
        labels = [data.classes[i] for i in data.y_test]
        accuracy = float(np.mean([p == t for p, t in zip(predictions, labels, strict=True)]))
        assert abs(accuracy - metrics["test_accuracy"]) <= 1 / len(labels)
        assert set(predictions) <= set(data.classes)
    else:
        y = data.y_test * st.target_std + st.target_mean  # raw units
        mse = float(np.mean((np.asarray(predictions) - y) ** 2))
        assert mse == pytest.approx(metrics["test_mse"], rel=1e-3)
    # The README's recipe: the downloaded weights + sidecar, loaded without the server.
    weights = job.download("final", tmp_path / "model.safetensors")
    assert _readme_recipe(weights, raw) == predictions
    # The default checkpoint is `best`; a second call hits the cached model.
    assert len(job.predict(raw[:3])) == 3
    with pytest.raises(InvalidSpec) as e:
        job.predict([[1.0, 2.0]])
    assert e.value.detail[0]["loc"] == ["body", "inputs"]
    with pytest.raises(NotFound):
        job.predict(raw[:1], checkpoint="epoch-999")


def _readme_recipe(weights: Any, raw: Any) -> list[Any]:
    """README.md's "Using a checkpoint elsewhere", verbatim but for the names."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import load_file

    from service.contract.spec import JobSpec
    from worker.training.inference import data_shape
    from worker.training.models import create_model

    sidecar = json.loads(weights.with_suffix(".json").read_text())
    model = create_model(JobSpec.model_validate(sidecar["spec"]), data_shape(sidecar))
    model.load_state_dict(load_file(weights))
    model.eval()

    st = sidecar["standardization"]
    mean = np.asarray(st["mean"], np.float32).reshape(st["shape"])
    std = np.asarray(st["std"], np.float32).reshape(st["shape"])
    X = (np.asarray(raw, np.float32).reshape(-1, *sidecar["input_shape"]) - mean) / std
    with torch.no_grad():
        out = model(torch.from_numpy(X))
    if sidecar["task"] == "classification":
        return [sidecar["classes"][i] for i in out.argmax(1).tolist()]
    return (out.squeeze(-1) * st["target_std"] + st["target_mean"]).tolist()


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_events_resume_across_an_api_restart(service: Service, tmp_path: Any) -> None:
    """A second API replica (on the same store) serves the stream; it stops, cutting the open
    stream after its grace period, and comes back on the same port: the client reconnects with
    Last-Event-ID and sees every epoch exactly once."""
    import signal
    import subprocess
    import sys

    from live_service import free_port

    port = free_port()
    log = open(tmp_path / "replica.log", "ab")  # noqa: SIM115 (closed below)

    def replica() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)],
                                env=service.env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    api = replica()
    try:
        spec = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [64]},
                "training": {"epochs": 3000, "batch_size": 256}}  # fmt: skip
        job_id = service.submit(spec)["id"]
        # Retries cover the replica's start-up and its restart alike.
        with Client(f"http://127.0.0.1:{port}", retries=40, backoff=0.2, max_backoff=0.5) as client:
            stream = client.events(job_id)
            epochs = [next(e.data["epoch"] for e in stream if e.event == "epoch" and e.data["epoch"] >= 2)]
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=20)  # within the grace period, though a stream is open
            api = replica()
            for event in stream:
                if event.event == "epoch":
                    epochs.append(event.data["epoch"])
                    if len(epochs) == 6:
                        client.cancel(job_id)
                if event.event == "done":
                    assert event.data["status"] == "cancelled"
                    break
        assert epochs == list(range(epochs[0], epochs[-1] + 1)) and len(epochs) >= 6
    finally:
        api.terminate()
        api.wait(timeout=20)
        log.close()


@pytest.mark.parametrize("service", ["embedded"], indirect=True)
def test_webhooks_are_posted_on_each_status(service: Service) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, dict[str, Any]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["X-Regtrain-Event"], json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        spec = {**TINY, "name": "hooked", "training": {"epochs": 1},
                "notify": {"url": url, "events": ["status", "done"]}}  # fmt: skip
        job = service.wait(service.submit(spec)["id"])
        deadline = time.monotonic() + 15
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(event, doc["event"], doc["job"]["status"]) for event, doc in received] == [
            ("status", "status", "running"), ("status", "status", "succeeded"), ("done", "done", "succeeded")]  # fmt: skip
        assert received[-1][1]["job"]["id"] == job["id"] and received[-1][1]["job"]["result"]
    finally:
        server.shutdown()
