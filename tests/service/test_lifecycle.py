"""DELETE of jobs and datasets (rows and files, tenant-scoped) and the retention of a finished
job's epoch checkpoints, on the real app, a real SQLite store and a job trained in-process by
the worker's own task code."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fastapi.testclient import TestClient

from service.store import open_store
from service.store.artifacts import Artifacts
from worker.presence import Presence
from worker.tasks import execute

SPEC: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [4]},
    "training": {"epochs": 5, "checkpoint_every": 1, "device": "cpu"},
}
CSV = ("a,b,label\n" + "".join(f"{i * 0.1:.1f},{i % 3},{'xy'[i % 2]}\n" for i in range(30))).encode()


def _train(client: TestClient, spec: dict[str, Any], **headers: str) -> str:
    """Submit through the API, then run the job as a worker would, on the same store."""
    r = client.post("/v1/jobs", json=spec, headers=headers)
    assert r.status_code == 202, r.text
    settings = client.app.state.settings  # type: ignore[attr-defined]
    rt = SimpleNamespace(
        settings=settings,
        store=open_store(settings.store_url),
        artifacts=Artifacts(settings),
        name="w1",
        shutdown=threading.Event(),
        presence=Presence("w1", "test", interval_s=60),  # never started: no row in the store
    )
    execute(r.json()["id"], rt)
    return str(r.json()["id"])


def test_retention_keeps_best_final_and_the_last_k_epochs(make_client: Callable[..., TestClient]) -> None:
    client = make_client(keep_epoch_checkpoints=1)
    job_id = _train(client, SPEC)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    names = {c["name"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]}
    assert names == {"best", "final", "epoch-5"}
    folder = client.app.state.settings.jobs_dir / job_id / "checkpoints"  # type: ignore[attr-defined]
    stems = {p.name.split(".")[0] for p in folder.iterdir()}
    assert stems == {"best", "final", "epoch-5"}
    for name in names:
        assert client.get(f"/v1/jobs/{job_id}/checkpoints/{name}").status_code == 200

    none_kept = make_client(keep_epoch_checkpoints=0)
    job_id = _train(none_kept, SPEC)
    names = {c["name"] for c in none_kept.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]}
    assert names == {"best", "final"}
    default = make_client()
    job_id = _train(default, SPEC)
    names = {c["name"] for c in default.get(f"/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]}
    assert names == {"best", "final", "epoch-3", "epoch-4", "epoch-5"}  # as while training


def test_delete_job_removes_rows_and_files(client: TestClient) -> None:
    job_id = _train(client, SPEC)
    r = client.get(f"/v1/jobs/{job_id}/checkpoints/best", params={"format": "onnx"})
    assert r.status_code == 200
    work_dir = client.app.state.settings.jobs_dir / job_id  # type: ignore[attr-defined]
    assert (work_dir / "exports").is_dir()
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 204 and r.content == b""
    assert not work_dir.exists()
    for path in ("", "/metrics", "/checkpoints", "/checkpoints/best"):
        assert client.get(f"/v1/jobs/{job_id}{path}").status_code == 404, path
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert all(j["id"] != job_id for j in client.get("/v1/jobs").json()["jobs"])


def test_delete_job_while_queued_or_running_is_409(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=SPEC).json()
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.delete("/v1/jobs/nope").status_code == 404


def test_delete_is_tenant_scoped(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    job = client.post("/v1/jobs", json=SPEC, headers=a).json()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=a)
    assert client.delete(f"/v1/jobs/{job['id']}", headers=b).status_code == 404
    ds = client.post("/v1/datasets", files={"file": ("p.csv", CSV)}, headers=a).json()
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=b).status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}", headers=a).status_code == 204
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=a).status_code == 204


def test_delete_dataset_removes_its_file_unless_a_job_needs_it(client: TestClient, tmp_path: Path) -> None:
    ds = client.post("/v1/datasets", files={"file": ("p.csv", CSV)}).json()
    path = client.app.state.settings.datasets_dir / f"{ds['id']}.npz"  # type: ignore[attr-defined]
    assert path.is_file()
    job = client.post("/v1/jobs", json={**SPEC, "dataset": {"id": ds["id"]}}).json()
    r = client.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and "queued or running" in r.json()["detail"]
    sweep = {"base": {**SPEC, "dataset": {"id": ds["id"]}}, "grid": {"regularization.l2": [0, 0.1]}}
    s = client.post("/v1/sweeps", json=sweep)
    assert s.status_code == 202, s.text
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 409  # the sweep still needs it
    client.post(f"/v1/sweeps/{s.json()['id']}/cancel")
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert not path.exists()
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404
    assert client.delete("/v1/datasets/builtin-digits").status_code == 404
