"""The artifact store on a bucket and datasets by URI, against a real S3-compatible server process
(moto's, on loopback), reached through obstore as in production. The API runs in-process on a
real SQLite store; the job is trained by the worker's own task code with a data dir of its own,
so nothing reaches the API but through the store and the bucket."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import obstore
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from s3_server import S3Server

from service.data.buckets import s3_store
from service.settings import Settings
from service.store import open_store
from service.store.artifacts import Artifacts
from worker.presence import Presence
from worker.tasks import execute


def _keys(bucket: str, prefix: str = "") -> list[str]:
    store = s3_store(f"s3://{bucket}")
    return sorted(m["path"] for chunk in obstore.list(store, prefix or None) for m in chunk)


def _parquet(n: int = 120, *, labels: bool = True) -> bytes:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    cols: dict[str, Any] = {f"f{i}": X[:, i] for i in range(4)}
    if labels:
        cols["label"] = (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0).astype(np.int64)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


def _put(bucket: str, key: str, data: bytes) -> str:
    obstore.put(s3_store(f"s3://{bucket}"), key, data)
    return f"s3://{bucket}/{key}"


def test_artifacts_on_a_bucket_put_fetch_stream_presign_delete(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.bucket()
    artifacts = Artifacts(Settings(data_dir=tmp_path / "a", artifacts_url=f"s3://{bucket}/run"))
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights" * 1000)
    artifacts.put("jobs/j1/checkpoints/best.safetensors", src)
    artifacts.put("jobs/j1/checkpoints/best.json", src)
    assert _keys(bucket) == ["run/jobs/j1/checkpoints/best.json", "run/jobs/j1/checkpoints/best.safetensors"]

    # another process (its own data dir) reads it into its cache
    reader = Artifacts(Settings(data_dir=tmp_path / "b", artifacts_url=f"s3://{bucket}/run"))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    with reader.cached("jobs/j1/checkpoints/best.safetensors", sha) as got:
        assert got.is_relative_to(tmp_path / "b" / "cache") and got.read_bytes() == src.read_bytes()
    # a stale cached copy (a `best` written again) is fetched again
    got.write_bytes(b"old")
    with reader.cached("jobs/j1/checkpoints/best.safetensors", sha) as again:
        assert again.read_bytes() == src.read_bytes()
    # a worker's pull puts it in its scratch, outside the cache
    pulled = reader.pull("jobs/j1/checkpoints/best.json")
    assert pulled == tmp_path / "b" / "jobs" / "j1" / "checkpoints" / "best.json"
    size, chunks = reader.stream("jobs/j1/checkpoints/best.safetensors")
    assert size == src.stat().st_size and b"".join(chunks) == src.read_bytes()
    assert httpx.get(reader.presigned_url("jobs/j1/checkpoints/best.safetensors")).content == src.read_bytes()

    with pytest.raises(FileNotFoundError), reader.cached("jobs/j1/checkpoints/nothing.safetensors"):
        pass
    with pytest.raises(FileNotFoundError):
        reader.local_path("../outside")
    reader.delete_prefix("jobs/j1")
    assert _keys(bucket) == [] and not (tmp_path / "b" / "jobs" / "j1").exists()
    assert not (tmp_path / "b" / "cache" / "artifacts" / "jobs" / "j1").exists()


def test_a_workers_copies_of_uploads_stay_within_its_cache_bound(s3: S3Server, tmp_path: Path) -> None:
    """A worker trains on an upload from its cached copy, held while it trains: the copies of
    every upload it ever trained on do not pile up outside the cache, and a copy not in use is
    evicted once newer ones fill the bound."""
    from worker.artifact_sync import held_dataset

    bucket = s3.bucket()
    url = f"s3://{bucket}/run"
    api = Artifacts(Settings(data_dir=tmp_path / "api", artifacts_url=url))
    blob = tmp_path / "ds.npz"
    for i in range(4):
        blob.write_bytes(bytes([i]) * 40_000)
        api.put(f"datasets/ds-{i}.npz", blob)
    worker = Artifacts(Settings(data_dir=tmp_path / "w", artifacts_url=url, cache_max_bytes=100_000))
    assert worker.exists("datasets/ds-0.npz") and not worker.exists("datasets/ds-9.npz")
    with held_dataset(worker, "ds-0") as first:
        assert first.is_relative_to(tmp_path / "w" / "cache") and first.read_bytes() == bytes([0]) * 40_000
        with held_dataset(worker, "ds-1"), held_dataset(worker, "ds-2"):
            assert first.is_file()  # in use: over the bound, yet kept
    with held_dataset(worker, "ds-3"):  # the next download trims: the least recently used go
        pass
    copies = sorted(p.name for p in (tmp_path / "w" / "cache" / "artifacts" / "datasets").iterdir())
    assert copies == ["ds-2.npz", "ds-3.npz"]
    assert not (tmp_path / "w" / "datasets").exists()
    with pytest.raises(FileNotFoundError), held_dataset(worker, "ds-9"):
        pass


def test_local_backend_is_the_data_dir_itself(tmp_path: Path) -> None:
    artifacts = Artifacts(Settings(data_dir=tmp_path))
    path = artifacts.local_path("datasets/ds-1.npz")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    artifacts.put("datasets/ds-1.npz", path)  # already in place: nothing is copied
    assert artifacts.pull("datasets/ds-1.npz") == path
    with artifacts.cached("datasets/ds-1.npz") as cached:
        assert cached == path
    assert not artifacts.remote and not artifacts.presign


def _worker_rt(api_settings: Settings, data_dir: Path) -> Any:
    settings = api_settings.model_copy(update={"data_dir": data_dir, "database_url": api_settings.store_url})
    return SimpleNamespace(
        settings=settings,
        store=open_store(settings.store_url),
        artifacts=Artifacts(settings),
        name="w1",
        shutdown=threading.Event(),
        presence=Presence("w1", "test", interval_s=60),  # never started: no row in the store
    )


@pytest.fixture
def bucket_client(s3: S3Server, tmp_path: Path, make_client: Callable[..., TestClient]) -> TestClient:
    bucket = s3.bucket()
    return make_client(artifacts_url=f"s3://{bucket}/run", keep_epoch_checkpoints=1)


def test_a_job_from_an_s3_parquet_uri_trains_and_is_served_from_the_bucket(
    bucket_client: TestClient, tmp_path: Path
) -> None:
    client = bucket_client
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    bucket = (settings.artifacts_url or "").removeprefix("s3://").split("/")[0]
    data = _parquet()
    uri = _put(bucket, "data/train.parquet", data)
    spec = {
        "dataset": {"uri": uri, "target": "label"},
        "model": {"type": "mlp", "hidden": [8]},
        "training": {"epochs": 4, "checkpoint_every": 1, "device": "cpu"},
    }
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["spec"]["dataset"]["format"] == "parquet"  # from the suffix
    execute(job_id, _worker_rt(settings, tmp_path / "worker"))

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    found = job["result"]["environment"]["dataset"]
    assert found == {"uri": uri, "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    # retention (keep 1) ran on the bucket too: best, final and epoch-4, each complete
    keys = _keys(bucket, f"run/jobs/{job_id}")
    stems = {k.rsplit("/", 1)[1].split(".")[0] for k in keys}
    assert stems == {"best", "final", "epoch-4"}
    assert f"run/jobs/{job_id}/checkpoints/epoch-4.state.safetensors" in keys
    # nothing of the job in the API's data dir until it asks; the worker dropped its scratch copy
    assert not (settings.data_dir / "jobs" / job_id).exists()
    assert (tmp_path / "worker" / "jobs").is_dir() and not (tmp_path / "worker" / "jobs" / job_id).exists()

    rows = {c["name"]: c for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]}
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/best")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == rows["best"]["sha256"]
    r = client.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[0.5, 0.5, 0.0, 0.0]]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0] in (0, 1, 2, 3) and isinstance(r.json()["predictions"][0], int)
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/best", params={"format": "onnx"})
    assert r.status_code == 200
    onnx.checker.check_model(onnx.load_from_string(r.content))
    assert any("/exports/best-" in k for k in _keys(bucket, f"run/jobs/{job_id}"))

    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert _keys(bucket, f"run/jobs/{job_id}") == []


def test_presigned_downloads_redirect_to_the_bucket(
    s3: S3Server, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    bucket = s3.bucket()
    client = make_client(artifacts_url=f"s3://{bucket}/run", artifacts_presign=True)
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    r = client.post("/v1/jobs", json={"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]},
                                      "training": {"epochs": 2, "device": "cpu"}})  # fmt: skip
    job_id = r.json()["id"]
    execute(job_id, _worker_rt(settings, tmp_path / "worker"))
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/final", follow_redirects=False)
    assert r.status_code == 307
    location = r.headers["location"]
    assert location.startswith(f"{s3.endpoint}/{bucket}/run/jobs/{job_id}/checkpoints/final.safetensors?")
    row = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]
    final = next(c for c in row if c["name"] == "final")
    assert hashlib.sha256(httpx.get(location).content).hexdigest() == final["sha256"]


def test_bad_dataset_uris_fail_the_job_or_answer_4xx_naming_the_field(
    bucket_client: TestClient, tmp_path: Path
) -> None:
    client = bucket_client
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    bucket = (settings.artifacts_url or "").removeprefix("s3://").split("/")[0]
    model = {"type": "mlp", "hidden": [4]}

    def submit(dataset: dict[str, Any]) -> httpx.Response:
        return client.post("/v1/jobs", json={"dataset": dataset, "model": model, "training": {"epochs": 1}})

    r = submit({"uri": f"s3://{bucket}/data/missing.parquet"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "uri"]
    assert "no such object" in r.json()["detail"][0]["msg"]
    r = submit({"uri": f"s3://{bucket}/data/train"})  # no suffix, no format
    assert r.status_code == 422 and "format" in r.text
    r = submit({"uri": "ftp://example.com/x.csv"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "dataset", "uri"]
    # a sweep trains on a registered dataset (its shape is known before any trial is built)
    base = {"dataset": {"uri": f"s3://{bucket}/data/any.parquet"}, "model": model}
    r = client.post("/v1/sweeps", json={"base": base, "grid": {"regularization.l2": [0.0, 0.01]}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base", "dataset", "uri"]
    assert "POST /v1/datasets" in r.json()["detail"][0]["msg"]

    big = _put(bucket, "data/big.csv", b"a,b\n" + b"1,2\n" * 100)
    small = make_limited(client, tmp_path, max_dataset_bytes=100)
    r = small.post("/v1/jobs", json={"dataset": {"uri": big}, "model": model})
    assert r.status_code == 422 and "exceed the limit of 100" in r.text

    # known only once read: the worker fails the job with the reason
    def failed(dataset: dict[str, Any]) -> dict[str, Any]:
        r = submit(dataset)
        assert r.status_code == 202, r.text
        execute(r.json()["id"], _worker_rt(settings, tmp_path / "worker"))
        job = client.get(f"/v1/jobs/{r.json()['id']}").json()
        assert job["status"] == "failed"
        return dict(job["error"])

    no_target = failed({"uri": _put(bucket, "data/t.parquet", _parquet()), "target": "nope"})
    assert no_target["type"] == "bad_data" and no_target["message"].startswith("dataset.uri:")
    assert "nope" in no_target["message"]
    wrong = failed({"uri": _put(bucket, "data/really-parquet.csv", _parquet())})
    assert "the URI's format is csv, but the object holds parquet" in wrong["message"]

    # the limits the API applies to data of a known shape, applied once the worker knows it
    tight = make_limited(client, tmp_path, max_epoch_samples=100)
    r = tight.post("/v1/jobs", json={"dataset": {"uri": _put(bucket, "data/e.parquet", _parquet())},
                                     "model": model, "training": {"epochs": 1}})  # fmt: skip
    assert r.status_code == 202, r.text
    execute(r.json()["id"], _worker_rt(tight.app.state.settings, tmp_path / "worker2"))  # type: ignore[attr-defined]
    job = tight.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "bad_data"
    assert job["error"]["message"].startswith("training.epochs: 1 epochs × 120 samples")
    assert job["progress"]["epoch"] == 0  # refused before any training


def make_limited(client: TestClient, tmp_path: Path, **overrides: Any) -> TestClient:
    from service.api.app import create_app

    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    limited = settings.model_copy(update={"data_dir": tmp_path / "limited", **overrides})
    return TestClient(create_app(limited))


def test_https_uris_to_private_addresses_are_refused_with_api_keys(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_keys="t:secret-key-1")
    r = client.post(
        "/v1/jobs",
        json={"dataset": {"uri": "https://127.0.0.1:9/data.csv"}, "model": {"type": "mlp"}},
        headers={"Authorization": "Bearer secret-key-1"},
    )
    assert r.status_code == 422 and "private or link-local" in r.text
    assert r.json()["detail"][0]["loc"] == ["body", "dataset", "uri"]


def test_register_a_dataset_by_uri(bucket_client: TestClient) -> None:
    client = bucket_client
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    bucket = (settings.artifacts_url or "").removeprefix("s3://").split("/")[0]
    data = _parquet()
    uri = _put(bucket, "data/reg.parquet", data)
    r = client.post("/v1/datasets", json={"uri": uri, "target": "label", "name": "reg"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["uri"], ds["n_samples"], ds["n_features"], ds["n_classes"]) == (
        "reg",
        uri,
        120,
        4,
        4,
    )
    assert ds["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert f"run/datasets/{ds['id']}.npz" in _keys(bucket, "run/datasets")
    assert not (settings.data_dir / "datasets" / f"{ds['id']}.npz").exists()  # no copy kept
    # a job on its id checks against the registered shape, as for an upload
    r = client.post("/v1/jobs:validate", json={"dataset": {"id": ds["id"]}, "model": {"type": "mlp"}})
    assert r.status_code == 200 and r.json()["n_features"] == 4

    r = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/data/none.parquet"})
    assert r.status_code == 400 and "uri: no such object" in r.text
    r = client.post("/v1/datasets", json={"uri": uri, "target": "nope"})
    assert r.status_code == 400 and "nope" in r.text
    r = client.post("/v1/datasets", json={"uri": uri, "format": "xls"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "format"]
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert _keys(bucket, "run/datasets") == []


def test_a_workers_scratch_goes_once_its_job_is_released_or_finished(s3: S3Server, tmp_path: Path) -> None:
    from service.contract.spec import JobSpec
    from worker.artifact_sync import drop_scratch

    settings = Settings(data_dir=tmp_path, artifacts_url=f"s3://{s3.bucket()}/run")
    store, artifacts = open_store(settings.store_url), Artifacts(settings)
    spec = JobSpec.model_validate({"dataset": {"name": "iris"}, "model": {"type": "mlp"}})
    job_id = str(store.create_job(tenant="t", spec=spec.model_dump(mode="json"), queue="cpu")["id"])
    scratch = settings.jobs_dir / job_id
    (scratch / "checkpoints").mkdir(parents=True)
    (scratch / "checkpoints" / "epoch-1.safetensors").write_bytes(b"w")

    assert store.claim(job_id, "w1", 30, 3) is not None
    drop_scratch(store, artifacts, job_id, scratch)
    assert scratch.is_dir()  # running: the worker that holds it writes there
    assert store.release(job_id, "w1") is not None
    drop_scratch(store, artifacts, job_id, scratch)
    assert not scratch.exists()  # back in the queue: its next attempt resumes from the bucket
