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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import obstore
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from live_service import Service, base_env, fleet_backend
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
        yield svc, bucket, root


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
    assert not (root / f"worker{survivor}" / "jobs" / job_id).exists()
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
