"""Jobs end to end: HTTP → store → broker → worker → engine → store → HTTP, on both backends."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time

import numpy as np
import pytest
from live_service import FINISHED, Service
from safetensors.torch import load as load_safetensors

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.spec import JobSpec

pytestmark = pytest.mark.integration

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [16], "dropout": 0.2},
    "regularization": {"l2": 0.0001},
    "training": {"epochs": 3, "batch_size": 64},
}
# Long enough to act on while it runs (hundreds of epochs), small enough to stop at once.
LONG = {
    "name": "long",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [256, 256]},
    "training": {"epochs": 2000, "batch_size": 32},
}


def test_a_digits_job_trains_to_succeeded(service: Service) -> None:
    job = service.wait(service.submit(TINY)["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["started_at"] and job["finished_at"]
    assert [h["status"] for h in job["history"]] == ["queued", "running", "succeeded"]
    running = job["history"][1]
    assert running["attempt"] == 1 and running["worker"] and running["resumed_from_epoch"] is None
    assert job["progress"] == {"epoch": 3, "epochs": 3, "fraction": 1.0}
    assert 0.0 <= job["result"]["metrics"]["test_accuracy"] <= 1.0
    assert job["result"]["environment"]["seed"] == 0
    assert job["latest_metrics"]["epoch"] == 3

    rows = service.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "data_loss", "penalty", "val_loss", "val_accuracy", "lr", "seconds",
            "samples_per_second"} <= set(rows[0])  # fmt: skip

    ckpts = {
        c["name"]: c for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["checkpoints"]
    }
    assert {"best", "final"} <= set(ckpts)
    import torch

    from worker.training.models import create_model

    model = create_model(JobSpec.model_validate(job["spec"]), BUILTIN_SHAPES["digits"])
    for name in ("best", "final"):
        r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert len(r.content) == ckpts[name]["size_bytes"]
        assert hashlib.sha256(r.content).hexdigest() == ckpts[name]["sha256"]
        state = load_safetensors(r.content)
        assert all(isinstance(t, torch.Tensor) for t in state.values())
        model.load_state_dict(state, strict=True)

    # The same checkpoint as whole models that take raw inputs: TorchScript and ONNX.
    raw = torch.rand(5, 64) * 16  # digits' pixels lie in [0, 16]
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "torchscript"})
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('.pt"')
    scripted = torch.jit.load(io.BytesIO(r.content))
    labels = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": raw.tolist()}).json()
    # digits' classes are the ints 0-9, and predictions answer them as ints
    assert scripted(raw).argmax(1).tolist() == labels["predictions"]
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "onnx"})
    assert r.status_code == 200 and r.headers["content-disposition"].endswith('.onnx"')
    import onnx

    onnx.checker.check_model(onnx.load_from_string(r.content))
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "pickle"})
    assert r.status_code == 422


def test_list_paginates_newest_first(service: Service) -> None:
    ids = [service.submit({**TINY, "training": {"epochs": 1}})["id"] for _ in range(3)]
    page = service.http.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    rest = service.http.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert rest["jobs"][0]["id"] == ids[0]
    for job_id in ids:
        assert service.wait(job_id)["status"] == "succeeded"


def test_cancel_a_running_and_a_queued_job(service: Service) -> None:
    running = service.submit(LONG)["id"]
    service.wait(running, until={"running"}, min_epoch=2)
    queued = service.submit(TINY)["id"]  # waits behind the long job on the one worker
    r = service.http.post(f"/v1/jobs/{queued}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"

    t0 = time.monotonic()
    r = service.http.post(f"/v1/jobs/{running}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    job = service.wait(running, timeout=15)
    assert job["status"] == "cancelled" and time.monotonic() - t0 < 10
    assert job["progress"]["epoch"] < LONG["training"]["epochs"]
    names = {c["name"] for c in service.http.get(f"/v1/jobs/{running}/checkpoints").json()["checkpoints"]}
    assert "final" in names and any(n.startswith("epoch-") for n in names)
    assert service.http.get(f"/v1/jobs/{running}/checkpoints/final").status_code == 200
    assert service.http.post(f"/v1/jobs/{running}/cancel").status_code == 409

    time.sleep(1.5)  # the worker is free now: the cancelled job must still never start
    job = service.job(queued)
    assert job["status"] == "cancelled" and job["attempts"] == 0
    assert [h["status"] for h in job["history"]] == ["queued", "cancelled"]
    assert service.http.post(f"/v1/jobs/{queued}/cancel").status_code == 409


def test_404_and_422_over_http(service: Service) -> None:
    assert service.http.get("/v1/jobs/does-not-exist").status_code == 404
    r = service.http.post("/v1/jobs", json={**TINY, "training": {"epochs": 0}})
    assert r.status_code == 422
    assert ["body", "training", "epochs"] in [e["loc"] for e in r.json()["detail"]]


def test_failures_are_reported_with_a_type(service: Service) -> None:
    diverging = {**TINY, "name": "diverges", "model": {"type": "mlp", "hidden": [64]},
                 "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9}}  # fmt: skip
    timed = {**LONG, "name": "timed", "training": {"epochs": 2000, "time_limit_s": 1.0}}
    jobs = [service.submit(diverging)["id"], service.submit(timed)["id"]]
    for job_id, kind in zip(jobs, ("diverged", "time_limit"), strict=True):
        job = service.wait(job_id, until={"failed"}, timeout=60)
        assert job["error"]["type"] == kind and job["error"]["message"], job["error"]
        assert job["result"] is None and job["finished_at"]
        assert [h["status"] for h in job["history"]][-1] == "failed"
        service.http.get(f"/v1/jobs/{job_id}/metrics").raise_for_status()


def test_upload_csv_and_npz_then_train_on_them(service: Service) -> None:
    from sklearn.datasets import load_digits, load_iris

    iris = load_iris()
    lines = ["sepal_l,sepal_w,petal_l,petal_w,species"]
    lines += [
        ",".join(f"{v:.1f}" for v in x) + f",{iris.target_names[y]}"
        for x, y in zip(iris.data, iris.target, strict=True)
    ]
    csv = service.http.post(
        "/v1/datasets",
        files={"file": ("iris.csv", ("\n".join(lines) + "\n").encode())},
        data={"target": "species"},
    )
    assert csv.status_code == 201, csv.text
    assert csv.json()["n_classes"] == 3 and csv.json()["n_features"] == 4

    digits = load_digits()
    buf = io.BytesIO()
    np.savez(buf, X=digits.images[:400, None].astype(np.float32), y=digits.target[:400])
    npz = service.http.post("/v1/datasets", files={"file": ("digits.npz", buf.getvalue())})
    assert npz.status_code == 201, npz.text
    assert npz.json()["image_shape"] == [1, 8, 8]

    bad = service.http.post("/v1/datasets", files={"file": ("x.csv", b"a,b\n1,2\n1\n")})
    assert 400 <= bad.status_code < 500

    jobs = [
        service.submit({"dataset": {"id": csv.json()["id"]}, "model": {"type": "mlp", "hidden": [8]},
                        "training": {"epochs": 2}}),
        service.submit({"dataset": {"id": npz.json()["id"]},
                        "model": {"type": "cnn", "channels": [4], "hidden": [8]},
                        "training": {"epochs": 2}}),
    ]  # fmt: skip
    for submitted in jobs:
        job = service.wait(submitted["id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["environment"]["data_sha256"]
        assert len(service.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"]) == 2


def test_a_lost_worker_is_reaped_and_the_job_resumes(service: Service) -> None:
    spec = {**LONG, "name": "resume", "training": {"epochs": 40, "batch_size": 64}}
    job_id = service.submit(spec)["id"]
    service.wait(job_id, until={"running"}, min_epoch=3)
    for proc in service.workers:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # no warm shutdown: the lease just stops
            proc.wait()
    service.start_worker()
    job = service.wait(job_id, timeout=120)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    attempts = [h for h in job["history"] if h["status"] == "running"]
    assert len(attempts) == 2 and attempts[0]["worker"] != attempts[1]["worker"]
    assert attempts[1]["resumed_from_epoch"] is not None and attempts[1]["resumed_from_epoch"] >= 1
    assert any(h["status"] == "queued" and h["message"] == "lease expired" for h in job["history"])
    rows = service.http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    assert [r["epoch"] for r in rows] == list(range(1, 41))  # every epoch once, none twice
    assert job["status"] in FINISHED
    # The job's log: the second attempt's lines say where it resumed (the first's come before
    # them, all those written before the kill).
    lines = service.http.get(f"/v1/jobs/{job_id}/logs").json()["lines"]
    assert [line["attempt"] for line in lines] == sorted(line["attempt"] for line in lines)
    second = [line["message"] for line in lines if line["attempt"] == 2]
    assert second[0].startswith("attempt 2 on "), second
    resumed = attempts[1]["resumed_from_epoch"]
    assert f"resuming from the checkpoint of epoch {resumed}" in second, second
