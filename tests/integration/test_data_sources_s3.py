"""REGTRAIN_DATA_SOURCES on real processes and a real S3-compatible server (moto_server): the
server's credentials reach its artifacts bucket (every tenant's uploads) and any bucket beside
it, yet a tenant trains on and registers only what a grant gives it, never the artifacts
location, and a parse error of an object it was granted never quotes the object's content.

Laid out as docker-compose.yml: API keys on the API only; the grants on every process (the
worker checks again before it reads: a grant it no longer has fails the job, unread). Both
backends (embedded: SQLite + file broker; fleet: PostgreSQL + Redis), artifacts in the bucket."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
from live_service import FINISHED, Service, base_env, fleet_backend
from s3_server import S3Server

from service.data.buckets import s3_store

pytestmark = pytest.mark.integration

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
MODEL = {"model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1, "device": "cpu"}}


def _csv(rows: int = 40, bad_line: int | None = None, gap_line: int | None = None) -> bytes:
    X = np.random.default_rng(0).standard_normal((rows, 3))
    lines = ["a,b,c,label", *(f"{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{int(x[0] > 0)}" for x in X)]
    if bad_line is not None:  # the file's line `bad_line` (the header is line 1) holds a word
        lines[bad_line - 1] = "1.0,salary-of-the-ceo,2.0,1"
    if gap_line is not None:  # ... or no label
        lines[gap_line - 1] = "1.0,2.0,3.0,"
    return ("\n".join(lines) + "\n").encode()


class Buckets:
    """The buckets of one run: the artifacts', a granted one, and one nobody is granted."""

    def __init__(self, s3: S3Server) -> None:
        self.artifacts, self.granted, self.other = s3.bucket(), s3.bucket(), s3.bucket()

    def put(self, bucket: str, key: str, data: bytes) -> str:
        obstore.put(s3_store(f"s3://{bucket}"), key, data)
        return f"s3://{bucket}/{key}"


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def granted(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Buckets]]:
    root: Path = tmp_path_factory.mktemp(f"sources-{request.param}")
    buckets = Buckets(s3_server)
    grants = ",".join(
        [
            f"tenant-b:s3://{buckets.granted}/team-b",
            # a grant over the artifacts location: it still admits nothing there
            f"tenant-b:s3://{buckets.artifacts}/regtrain",
        ]
    )
    env = base_env(root / "data")
    env.update(
        s3_server.env,
        REGTRAIN_ARTIFACTS_URL=f"s3://{buckets.artifacts}/regtrain",
        REGTRAIN_DATA_SOURCES=grants,
    )
    api = {
        "REGTRAIN_API_KEYS": "tenant-a:key-a,tenant-b:key-b",
        # the API admits one more prefix than the worker: a grant removed after admission
        "REGTRAIN_DATA_SOURCES": f"{grants},tenant-b:s3://{buckets.granted}/revoked",
    }
    with contextlib.ExitStack() as stack:
        if request.param == "fleet":
            env.update(stack.enter_context(fleet_backend()))
        svc = Service(request.param, env, root, own_env=lambda label: api if label == "api" else {})
        stack.callback(svc.close)
        yield svc, buckets


@pytest.fixture
def aws(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)


def _refused(svc: Service, uri: str) -> None:
    """Tenant B may neither register `uri` nor train on it, nor have it validated."""
    r = svc.http.post("/v1/datasets", json={"uri": uri, "target": "label"}, headers=B)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "uri"], r.text
    spec = {"dataset": {"uri": uri, "target": "label"}, **MODEL}
    for path in ("/v1/jobs", "/v1/jobs:validate"):
        r = svc.http.post(path, json=spec, headers=B)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "dataset", "uri"], r.text


def _wait(svc: Service, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := svc.http.get(f"/v1/jobs/{job_id}", headers=B).json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, f"job still {job['status']}\n{svc.log('worker0')}"
        time.sleep(0.2)
    return job


@pytest.mark.usefixtures("aws")
def test_tenant_b_cannot_read_tenant_as_upload_nor_a_bucket_it_was_not_granted(
    granted: tuple[Service, Buckets],
) -> None:
    svc, buckets = granted
    r = svc.http.post(
        "/v1/datasets", files={"file": ("mine.csv", _csv())}, data={"target": "label"}, headers=A
    )
    assert r.status_code == 201, r.text
    upload = f"s3://{buckets.artifacts}/regtrain/datasets/{r.json()['id']}.npz"
    assert obstore.head(s3_store(f"s3://{buckets.artifacts}"), f"regtrain/datasets/{r.json()['id']}.npz")
    _refused(svc, upload)  # tenant A's upload, under a grant of tenant B's that covers it
    _refused(svc, buckets.put(buckets.other, "secret/payroll.csv", _csv()))
    # a prefix is whole segments: team-b does not grant team-b-payroll
    _refused(svc, buckets.put(buckets.granted, "team-b-payroll/x.csv", _csv()))
    # and tenant A has no grant at all (unset for it: a server with keys opens nothing)
    uri = buckets.put(buckets.granted, "team-b/train.csv", _csv())
    r = svc.http.post("/v1/jobs", json={"dataset": {"uri": uri, "target": "label"}, **MODEL}, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "uri"], r.text


@pytest.mark.usefixtures("aws")
def test_a_granted_prefix_registers_and_trains(granted: tuple[Service, Buckets]) -> None:
    svc, buckets = granted
    uri = buckets.put(buckets.granted, "team-b/sub/train.csv", _csv())
    r = svc.http.post("/v1/datasets", json={"uri": uri, "target": "label"}, headers=B)
    assert r.status_code == 201, r.text
    r = svc.http.post("/v1/jobs", json={"dataset": {"uri": uri, "target": "label"}, **MODEL}, headers=B)
    assert r.status_code == 202, r.text
    job = _wait(svc, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]


@pytest.mark.usefixtures("aws")
def test_a_parse_error_of_a_granted_object_names_the_line_not_the_cell(
    granted: tuple[Service, Buckets],
) -> None:
    svc, buckets = granted
    # A word among numbers makes its column text (left out of training): the document says so,
    # and shows none of its values, since a dataset by URI may hold what its tenant cannot read.
    uri = buckets.put(buckets.granted, "team-b/payroll.csv", _csv(bad_line=7))
    r = svc.http.post("/v1/datasets", json={"uri": uri, "target": "label"}, headers=B)
    assert r.status_code == 201, r.text
    assert "salary" not in r.text and {c["name"]: c["type"] for c in r.json()["columns"]}["b"] == "text"
    # A file that cannot be read names the line, never what it holds.
    uri = buckets.put(buckets.granted, "team-b/unlabelled.csv", _csv(gap_line=7))
    r = svc.http.post("/v1/datasets", json={"uri": uri, "target": "label"}, headers=B)
    assert r.status_code == 400, r.text
    assert "line 7" in r.text and "'label'" in r.text
    r = svc.http.post("/v1/jobs", json={"dataset": {"uri": uri, "target": "label"}, **MODEL}, headers=B)
    assert r.status_code == 202, r.text
    job = _wait(svc, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["type"] == "bad_data", job
    assert "line 7" in job["error"]["message"], job


@pytest.mark.usefixtures("aws")
def test_a_grant_the_worker_no_longer_has_fails_the_job_unread(granted: tuple[Service, Buckets]) -> None:
    svc, buckets = granted
    uri = buckets.put(buckets.granted, "revoked/train.csv", _csv())
    r = svc.http.post("/v1/jobs", json={"dataset": {"uri": uri, "target": "label"}, **MODEL}, headers=B)
    assert r.status_code == 202, r.text  # the API still grants it
    job = _wait(svc, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["type"] == "bad_data", job
    assert "REGTRAIN_DATA_SOURCES" in job["error"]["message"], job
