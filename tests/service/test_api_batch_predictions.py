"""POST /v1/jobs/{id}/predictions at the API's edge (in-process app, real store and file broker,
no worker): who may ask, for what, and how many. Scoring itself runs on a worker:
tests/integration/test_batch_predictions.py."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

SPEC: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [4]},
    "training": {"epochs": 1},
}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
URI = {"dataset": {"uri": "https://example.com/score.csv", "target": "label"}}


def _job_with_best(client: TestClient) -> str:
    """A job of tenant alpha holding a `best` checkpoint row, as a worker would have left it."""
    job_id = str(client.post("/v1/jobs", json=SPEC, headers=A).json()["id"])
    store = client.app.state.store  # type: ignore[attr-defined]
    assert store.claim(job_id, "w", 60, 3) is not None
    recorded = store.record_checkpoint(
        job_id, "w", name="best", epoch=1, path="best.safetensors", size_bytes=1, sha256="0" * 64, metrics={}
    )
    assert recorded
    return job_id


def test_a_batch_prediction_is_queued_and_read_by_its_tenant_only(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    job_id = _job_with_best(client)
    r = client.post(f"/v1/jobs/{job_id}/predictions", json=URI, headers=A)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["status"] == "queued" and doc["format"] == "csv" and doc["checkpoint"] == "best"
    pid = doc["id"]
    assert client.get(f"/v1/jobs/{job_id}/predictions/{pid}", headers=A).json()["id"] == pid
    # not finished: no file yet
    assert client.get(f"/v1/jobs/{job_id}/predictions/{pid}/file", headers=A).status_code == 409
    # another tenant: the job, the prediction and its file are not there
    assert client.post(f"/v1/jobs/{job_id}/predictions", json=URI, headers=B).status_code == 404
    for path in (f"/v1/jobs/{job_id}/predictions/{pid}", f"/v1/jobs/{job_id}/predictions/{pid}/file"):
        assert client.get(path, headers=B).status_code == 404
    # a checkpoint the job lacks, an upload the tenant lacks, a field it does not know
    r = client.post(f"/v1/jobs/{job_id}/predictions", json={**URI, "checkpoint": "epoch-9"}, headers=A)
    assert r.status_code == 404
    r = client.post(f"/v1/jobs/{job_id}/predictions", json={"dataset": {"id": "ds-nope"}}, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "id"]
    r = client.post(f"/v1/jobs/{job_id}/predictions", json={**URI, "format": "xlsx"}, headers=A)
    assert r.status_code == 422


def test_batch_predictions_count_toward_the_tenants_cap(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b", max_active_jobs=2)
    job_id = _job_with_best(client)  # one active job
    assert client.post(f"/v1/jobs/{job_id}/predictions", json=URI, headers=A).status_code == 202
    r = client.post(f"/v1/jobs/{job_id}/predictions", json=URI, headers=A)
    assert r.status_code == 429 and "Retry-After" in r.headers
