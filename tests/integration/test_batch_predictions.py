"""Batch predictions and predict's probabilities against the live API and worker, on both
backends: a job trained on a tiny upload scores 10,000 MNIST-shaped rows (784 features) on a
worker into CSV and Parquet files whose predictions and probabilities are /predict's; a dataset
of the wrong width fails naming it; another tenant's job, prediction and file are 404; the
client's predict of 10,000 such rows goes through, split under /predict's limits.

Its own API and worker per backend (as the `service` fixture starts them) with two API keys,
since tenant isolation is part of what is tested."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from live_service import Service, base_env, fleet_backend
from regtrain_client import Client

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
FEATURES = 784
CLASSES = ["one", "three", "two"]  # sorted: the order of `classes`


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def keyed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp(f"batch-{request.param}")
    env = base_env(root / "data")
    env["REGTRAIN_API_KEYS"] = "tenant-a:key-a,tenant-b:key-b"
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        svc = Service(request.param, env, root)
        stack.callback(svc.close)
        yield svc


def _rows(n: int, seed: int, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-like rows (ints 0-255) whose class shows in their first pixels' mean."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.integers(0, 256, (n, features)).astype(np.uint8)
    k = min(50, features)
    X[:, :k] = np.clip(y[:, None] * 100 + rng.integers(0, 40, (n, k)), 0, 255)
    return X, y


def _parquet(X: np.ndarray, y: np.ndarray) -> bytes:
    columns = {f"px{i}": X[:, i] for i in range(X.shape[1])}
    columns["label"] = np.array(CLASSES, dtype=object)[y]
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _upload(svc: Service, X: np.ndarray, y: np.ndarray, name: str) -> str:
    files = {"file": (name, _parquet(X, y))}
    r = svc.http.post("/v1/datasets", files=files, data={"target": "label"}, headers=A, timeout=120)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def trained(keyed: Service) -> tuple[Service, str]:
    X, y = _rows(300, seed=0)
    dataset = _upload(keyed, X, y, "train.parquet")
    spec = {"dataset": {"id": dataset}, "model": {"type": "mlp", "hidden": [16]}, "training": {"epochs": 2}}
    r = keyed.http.post("/v1/jobs", json=spec, headers=A)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    done = _wait(keyed, f"/v1/jobs/{job_id}", A)
    assert done["status"] == "succeeded", done
    return keyed, job_id


def _wait(svc: Service, path: str, headers: dict[str, str], timeout: float = 180) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        doc = svc.http.get(path, headers=headers).json()
        if doc["status"] in ("succeeded", "failed", "cancelled"):
            return doc
        assert time.monotonic() < deadline, f"{path} still {doc['status']}"
        time.sleep(0.3)


def test_probabilities_come_with_classes_and_sum_to_one(trained: tuple[Service, str]) -> None:
    svc, job_id = trained
    X, _ = _rows(20, seed=1)
    body = {"inputs": X.tolist(), "probabilities": True}
    doc = svc.http.post(f"/v1/jobs/{job_id}/predict", json=body, headers=A).json()
    assert doc["classes"] == CLASSES
    proba = np.array(doc["probabilities"])
    assert proba.shape == (20, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert [CLASSES[i] for i in proba.argmax(1)] == doc["predictions"]
    # without the flag, the answer is as before: labels only
    plain = svc.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": X.tolist()}, headers=A).json()
    assert plain["predictions"] == doc["predictions"] and "probabilities" not in plain


def test_a_dataset_is_scored_on_a_worker_as_predict_scores_it(
    trained: tuple[Service, str], tmp_path: Path
) -> None:
    svc, job_id = trained
    X, y = _rows(10_000, seed=2)
    dataset = _upload(svc, X, y, "score.parquet")
    sample = [0, 1, 4095, 4096, 9_999]  # either side of a batch's edge
    expected = svc.http.post(
        f"/v1/jobs/{job_id}/predict", json={"inputs": X[sample].tolist(), "probabilities": True}, headers=A
    ).json()
    for fmt in ("csv", "parquet"):
        body = {"dataset": {"id": dataset}, "format": fmt}
        r = svc.http.post(f"/v1/jobs/{job_id}/predictions", json=body, headers=A)
        assert r.status_code == 202, r.text
        pid = r.json()["id"]
        assert r.json()["status"] in ("queued", "running", "succeeded")
        done = _wait(svc, f"/v1/jobs/{job_id}/predictions/{pid}", A)
        assert done["status"] == "succeeded" and done["rows"] == 10_000, done.get("error")
        r = svc.http.get(f"/v1/jobs/{job_id}/predictions/{pid}/file", headers=A)
        assert r.status_code == 200
        path = tmp_path / f"p.{fmt}"
        path.write_bytes(r.content)
        table = pq.read_table(path) if fmt == "parquet" else pa_csv.read_csv(path)
        assert table.num_rows == 10_000
        assert table.column_names == ["prediction", "target"] + [f"p_{c}" for c in CLASSES]
        assert table.column("target").to_pylist() == [CLASSES[i] for i in y]
        got = table.take(sample)
        assert got.column("prediction").to_pylist() == expected["predictions"]
        proba = np.column_stack([got.column(f"p_{c}").to_numpy() for c in CLASSES])
        assert np.allclose(proba, expected["probabilities"], atol=1e-5)
    # the client reads the same
    with Client(svc.url, api_key="key-a") as client:
        found = client.batch_prediction(job_id, pid)
        assert found.rows == 10_000 and found.format == "parquet"
        client.download_predictions(job_id, pid, tmp_path / "again.parquet")
        assert pq.read_table(tmp_path / "again.parquet").num_rows == 10_000


def test_a_dataset_of_another_width_fails_naming_it(trained: tuple[Service, str]) -> None:
    svc, job_id = trained
    X, y = _rows(100, seed=3, features=10)
    dataset = _upload(svc, X, y, "narrow.parquet")
    r = svc.http.post(f"/v1/jobs/{job_id}/predictions", json={"dataset": {"id": dataset}}, headers=A)
    assert r.status_code == 202, r.text
    done = _wait(svc, f"/v1/jobs/{job_id}/predictions/{r.json()['id']}", A)
    assert done["status"] == "failed" and done["error"]["type"] == "bad_data", done
    assert dataset in done["error"]["message"] and "10 features" in done["error"]["message"]
    r = svc.http.get(f"/v1/jobs/{job_id}/predictions/{done['id']}/file", headers=A)
    assert r.status_code == 409


def test_another_tenant_sees_nothing(trained: tuple[Service, str]) -> None:
    svc, job_id = trained
    X, y = _rows(100, seed=4)
    mine = _upload(svc, X, y, "mine.parquet")
    r = svc.http.post(f"/v1/jobs/{job_id}/predictions", json={"dataset": {"id": mine}}, headers=A)
    pid = r.json()["id"]
    _wait(svc, f"/v1/jobs/{job_id}/predictions/{pid}", A)
    # B may not score A's job, nor read A's prediction or its file...
    assert (
        svc.http.post(f"/v1/jobs/{job_id}/predictions", json={"dataset": {"id": mine}}, headers=B).status_code
        == 404
    )
    for path in (f"/v1/jobs/{job_id}/predictions/{pid}", f"/v1/jobs/{job_id}/predictions/{pid}/file"):
        assert svc.http.get(path, headers=B).status_code == 404
    # ...nor score A's upload with a job of its own (a 422 naming dataset.id, as for training)
    spec = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}
    theirs = svc.http.post("/v1/jobs", json=spec, headers=B).json()["id"]
    assert _wait(svc, f"/v1/jobs/{theirs}", B)["status"] == "succeeded"
    r = svc.http.post(f"/v1/jobs/{theirs}/predictions", json={"dataset": {"id": mine}}, headers=B)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "id"], r.text


def test_the_client_predicts_10000_rows_split_under_the_limit(trained: tuple[Service, str]) -> None:
    svc, job_id = trained
    X, _ = _rows(10_000, seed=5)
    rows = X.tolist()  # ~31 MB of JSON: past one request's 16 MiB
    with Client(svc.url, api_key="key-a") as client:
        got = client.predict(job_id, rows, probabilities=True)
    assert len(got.predictions) == 10_000 and got.classes == CLASSES
    proba = np.array(got.probabilities)
    assert proba.shape == (10_000, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert [CLASSES[i] for i in proba.argmax(1)] == got.predictions
    # one request of them all is refused, naming the limits
    r = svc.http.post(f"/v1/jobs/{job_id}/predict", json={"inputs": rows}, headers=A)
    assert r.status_code == 413 and "rows and" in r.json()["detail"]


def test_deleting_the_job_deletes_its_predictions(keyed: Service) -> None:
    X, y = _rows(200, seed=6, features=8)
    dataset = _upload(keyed, X, y, "small.parquet")
    spec = {"dataset": {"id": dataset}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}
    job_id = keyed.http.post("/v1/jobs", json=spec, headers=A).json()["id"]
    assert _wait(keyed, f"/v1/jobs/{job_id}", A)["status"] == "succeeded"
    with Client(keyed.url, api_key="key-a") as client:  # the client's way, start to end
        queued = client.score(job_id, dataset, format="parquet")
        done = client.wait_batch_prediction(job_id, queued.id, timeout=120)
    assert done.status == "succeeded" and done.rows == 200
    pid = done.id
    assert keyed.http.delete(f"/v1/jobs/{job_id}", headers=A).status_code in (200, 204)
    assert keyed.http.get(f"/v1/jobs/{job_id}/predictions/{pid}", headers=A).status_code == 404
    files = list((Path(keyed.env["REGTRAIN_DATA_DIR"]) / "jobs" / job_id).glob("**/*"))
    assert not files


def test_a_dataset_by_uri_is_read_under_the_jobs_rules(trained: tuple[Service, str]) -> None:
    svc, job_id = trained
    # an object no data source grants to the tenant: refused at the door, naming dataset.uri
    body = {"dataset": {"uri": "s3://not-granted/x.parquet", "target": "label"}}
    r = svc.http.post(f"/v1/jobs/{job_id}/predictions", json=body, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "uri"], r.text
    # a loopback origin: the job was admitted under a denying egress rule (this API has keys),
    # so the worker never calls it, and says so naming dataset.uri
    body = {"dataset": {"uri": "https://127.0.0.1:9/x.parquet", "target": "label"}}
    r = svc.http.post(f"/v1/jobs/{job_id}/predictions", json=body, headers=A)
    assert r.status_code == 202, r.text
    done = _wait(svc, f"/v1/jobs/{job_id}/predictions/{r.json()['id']}", A)
    assert done["status"] == "failed" and done["error"]["type"] == "bad_data", done
    assert "dataset.uri" in done["error"]["message"] and "private" in done["error"]["message"], done
