"""A fleet with no shared file system: one API and two workers, each with a data dir of its own,
sharing only PostgreSQL, Redis and one bucket on a real S3-compatible server (moto_server on
loopback). A job trains from a Parquet file given by s3:// URI; the worker that runs it is
SIGKILLed; the other resumes it from the resume state in the bucket; then the API serves the
checkpoint, predictions and an ONNX export, fetched from the bucket into its own cache."""

from __future__ import annotations

import contextlib
import hashlib
import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import obstore
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from live_service import FINISHED, Service, base_env, fleet_backend
from s3_server import S3Server

from service.data.buckets import s3_store

pytestmark = pytest.mark.integration

EPOCHS = 30


def _parquet() -> bytes:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((4000, 16)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) * 7  # integer classes 0 and 7
    buf = io.BytesIO()
    pq.write_table(pa.table({**{f"x{i}": X[:, i] for i in range(16)}, "label": y}), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def fleet(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, str, Path]]:
    root = tmp_path_factory.mktemp("fleet-s3")
    bucket = s3_server.bucket()
    env = base_env(root / "unused")  # every process gets a data dir of its own below
    env.update(s3_server.env, REGTRAIN_ARTIFACTS_URL=f"s3://{bucket}/regtrain")
    with contextlib.ExitStack() as stack:
        env.update(stack.enter_context(fleet_backend()))
        svc = Service("fleet-s3", env, root, own_env=lambda label: {"REGTRAIN_DATA_DIR": str(root / label)})
        stack.callback(svc.close)
        svc.start_worker()
        svc.wait_workers(2)
        yield svc, bucket, root


def test_a_sweep_on_an_upload_trains_its_units_on_both_workers_from_the_bucket(
    fleet: tuple[Service, str, Path],
) -> None:
    """Each worker that takes one of the sweep's units fetches the upload from the bucket into
    its own cache (first in this file: both workers are alive)."""
    svc, _, root = fleet
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2000, 8))
    rows = [",".join([*(f"{v:.5f}" for v in x), str(int(x[0] > 0))]) for x in X]
    csv = ("\n".join([",".join([*(f"x{i}" for i in range(8)), "label"]), *rows]) + "\n").encode()
    r = svc.http.post("/v1/datasets", files={"file": ("up.csv", csv)}, data={"target": "label"})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    r = svc.http.post("/v1/sweeps", json={
        "base": {"dataset": {"id": dataset_id}, "model": {"type": "mlp", "hidden": [128, 128]},
                 "training": {"epochs": 15, "batch_size": 16, "device": "cpu"}},
        "grid": {"regularization.l2": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0]},
        "cv_folds": 2,
        "parallel": 2,
    })  # fmt: skip
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 240
    while (sweep := svc.http.get(f"/v1/sweeps/{r.json()['id']}").json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, sweep["units"]
        time.sleep(0.3)
    assert sweep["status"] == "succeeded", sweep["error"]
    assert all(t["status"] == "succeeded" for t in sweep["trials"]), [t["error"] for t in sweep["trials"]]
    assert len({u["worker"] for u in sweep["units"]}) == 2, sweep["units"]
    # every worker read the upload from its own cache, fetched there from the bucket (a copy
    # the cache bounds, not one left in its data dir for good)
    for i in range(len(svc.workers)):
        assert (root / f"worker{i}" / "cache" / "artifacts" / "datasets" / f"{dataset_id}.npz").is_file()
        assert not (root / f"worker{i}" / "datasets").exists()


def test_a_killed_workers_job_resumes_on_another_from_the_bucket_and_is_served(
    fleet: tuple[Service, str, Path], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, bucket, root = fleet
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    data = _parquet()
    obstore.put(s3_store(f"s3://{bucket}"), "data/train.parquet", data)
    spec = {
        "name": "fleet-s3",
        "dataset": {"uri": f"s3://{bucket}/data/train.parquet", "target": "label"},
        "model": {"type": "mlp", "hidden": [64]},
        "training": {"epochs": EPOCHS, "batch_size": 32, "checkpoint_every": 1, "device": "cpu"},
    }
    job_id = svc.submit(spec)["id"]

    job = svc.wait(job_id, until={"running"}, min_epoch=3, timeout=120)
    owner = [h for h in job["history"] if h["status"] == "running"][-1]["worker"]
    victim = next(p for p in svc.workers if p.pid == int(owner.rsplit(":", 1)[1]))
    victim.send_signal(signal.SIGKILL)  # no warm shutdown: its lease just stops
    victim.wait()
    killed_at = job["progress"]["epoch"]

    job = svc.wait(job_id, timeout=180)
    assert job["status"] == "succeeded", job["error"]
    runs = [h for h in job["history"] if h["status"] == "running"]
    assert len(runs) == 2 and runs[0]["worker"] != runs[1]["worker"]
    assert runs[1]["resumed_from_epoch"] is not None and runs[1]["resumed_from_epoch"] >= killed_at - 1
    epochs = [row["epoch"] for row in svc.http.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]]
    assert epochs == list(range(1, EPOCHS + 1))
    found = job["result"]["environment"]["dataset"]
    assert found["sha256"] == hashlib.sha256(data).hexdigest() and found["size_bytes"] == len(data)

    # The survivor could only resume from what the bucket held (its data dir is its own); once
    # the job finished it dropped its scratch copy. The API's data dir holds nothing of the job yet.
    survivor = next(i for i, p in enumerate(svc.workers) if p is not victim)
    assert (root / f"worker{survivor}" / "jobs").is_dir()
    scratch = root / f"worker{survivor}" / "jobs" / job_id
    deadline = time.monotonic() + 15  # dropped just after the finish is written, not before
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not scratch.exists()
    assert not (root / "api" / "jobs" / job_id).exists()

    rows = {c["name"]: c for c in svc.http.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]}
    r = svc.http.get(f"/v1/jobs/{job_id}/checkpoints/best")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == rows["best"]["sha256"]
    r = svc.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[3.0] * 16, [-3.0] * 16]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [7, 0]  # integer classes come back as ints
    r = svc.http.get(f"/v1/jobs/{job_id}/checkpoints/best", params={"format": "onnx"})
    assert r.status_code == 200, r.text
    onnx.checker.check_model(onnx.load_from_string(r.content))

    keys = [m["path"] for chunk in obstore.list(s3_store(f"s3://{bucket}"), "regtrain/jobs") for m in chunk]
    assert f"regtrain/jobs/{job_id}/checkpoints/best.safetensors" in keys
    assert any(k.startswith(f"regtrain/jobs/{job_id}/exports/best-") for k in keys)
