"""The Jobs endpoints on the real app and a real SQLite store (no worker: jobs stay queued)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2},
}
JOB_FIELDS = {
    "id", "name", "status", "created_at", "started_at", "finished_at", "attempts", "history",
    "progress", "latest_metrics", "result", "error", "spec",
}  # fmt: skip


def _submit(client: TestClient, spec: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    r = client.post("/v1/jobs", json=spec or SPEC, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def test_submit_answers_202_with_location_and_the_filled_job(client: TestClient) -> None:
    r = client.post("/v1/jobs", json=SPEC)
    assert r.status_code == 202
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert set(job) >= JOB_FIELDS
    assert job["status"] == "queued" and job["attempts"] == 0 and job["name"] == "tiny"
    assert job["history"][0]["status"] == "queued" and job["history"][0]["at"]
    assert job["progress"] == {"epoch": 0, "epochs": 2, "fraction": 0.0}
    assert job["latest_metrics"] is None and job["result"] is None and job["error"] is None
    # Every default is filled in.
    spec = job["spec"]
    assert spec["optimizer"]["name"] == "adam" and spec["optimizer"]["lr"] == 0.001
    assert spec["regularization"] == {
        "l1": 0.0, "l2": 0.0, "apply_to": "weights", "l1_mode": "subgradient",
        "max_norm": None, "label_smoothing": 0.0,
    }  # fmt: skip
    assert spec["split"] == {"validation": 0.2, "test": 0.2, "seed": 0}
    assert client.get(r.headers["location"]).json() == job


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/metrics", "/v1/jobs/nope/checkpoints",
                 "/v1/jobs/nope/checkpoints/best"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404, path
        assert "detail" in r.json()
    assert client.post("/v1/jobs/nope/cancel").status_code == 404
    job = _submit(client)
    assert client.get(f"/v1/jobs/{job['id']}/checkpoints/best").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/checkpoints/..%2F..%2Fregtrain.db").status_code == 404


def test_422_names_the_field_path(client: TestClient) -> None:
    bad = {**SPEC, "model": {"type": "mlp", "hidden": [8], "dropout": 1.5}}
    r = client.post("/v1/jobs", json=bad)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    # As the request wrote it: no union tag (pydantic's loc is body.model.mlp.dropout).
    assert ["body", "model", "dropout"] in locs
    r = client.post("/v1/jobs", json={"model": {"type": "mlp"}})
    assert ["body", "dataset"] in [e["loc"] for e in r.json()["detail"]]
    r = client.post("/v1/jobs", json={**SPEC, "training": {"epochs": "3"}})  # strict: no strings
    assert r.status_code == 422
    assert ["body", "training", "epochs"] in [e["loc"] for e in r.json()["detail"]]
    r = client.post("/v1/jobs", json={**SPEC, "optimizer": {"nmae": "sgd"}})  # unknown field
    assert ["body", "optimizer", "nmae"] in [e["loc"] for e in r.json()["detail"]]


def test_infeasible_specs_are_422_naming_the_field(make_client: Any) -> None:
    client = make_client(max_parameters=10_000)
    cases = [
        ({"dataset": {"name": "iris"}, "model": {"type": "cnn"}}, ["body", "model", "type"]),
        ({"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [4096]}}, ["body", "model"]),
        ({"dataset": {"id": "ds-missing"}, "model": {"type": "mlp"}}, ["body", "dataset", "id"]),
        (
            {"dataset": {"name": "diabetes"}, "model": {"type": "mlp"},
             "regularization": {"label_smoothing": 0.1}},
            ["body", "regularization", "label_smoothing"],
        ),
        (
            {"dataset": {"name": "digits"},
             "model": {"type": "sequential", "layers": [{"type": "linear", "out_features": 3}]}},
            ["body", "model", "layers", 0, "out_features"],
        ),
    ]  # fmt: skip
    for spec, loc in cases:
        r = client.post("/v1/jobs", json=spec)
        assert r.status_code == 422, (spec, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == loc and err["type"] == "value_error" and err["msg"]
        assert client.post("/v1/jobs:validate", json=spec).status_code == 422
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_validate_is_a_dry_run_with_parameter_count_and_memory(client: TestClient) -> None:
    r = client.post("/v1/jobs:validate", json=SPEC)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert body["memory_bytes_per_batch"] > 4 * body["parameters"]
    assert body["task"] == "classification" and body["n_outputs"] == 10
    assert body["spec"]["training"]["batch_size"] == 64
    assert body["queue"] == "cpu"
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing queued
    cuda = {**SPEC, "training": {"device": "cuda"}}
    assert client.post("/v1/jobs:validate", json=cuda).json()["queue"] == "gpu"


def test_time_limit_is_capped_at_the_server_limit(make_client: Any) -> None:
    client = make_client(max_time_limit_s=60)
    job = _submit(client, {**SPEC, "training": {"epochs": 2, "time_limit_s": 3600.0}})
    assert job["spec"]["training"]["time_limit_s"] == 60


def test_list_is_newest_first_and_paginates_with_a_cursor(client: TestClient) -> None:
    ids = [_submit(client, {**SPEC, "name": f"job-{i}"})["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert client.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/jobs", params={"status": "lost"}).status_code == 422


def test_cancel_a_queued_job_at_once_and_409_after(client: TestClient) -> None:
    job = _submit(client)
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert [h["status"] for h in r.json()["history"]] == ["queued", "cancelled"]
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    first = _submit(client, SPEC, **{"Idempotency-Key": "k-1"})
    second = _submit(client, SPEC, **{"Idempotency-Key": "k-1"})
    assert second["id"] == first["id"]
    # Defaults written out are the same body.
    filled = {**SPEC, "optimizer": {"name": "adam"}}
    assert _submit(client, filled, **{"Idempotency-Key": "k-1"})["id"] == first["id"]
    other = client.post("/v1/jobs", json={**SPEC, "name": "other"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert _submit(client, SPEC, **{"Idempotency-Key": "k-2"})["id"] != first["id"]
    assert len(client.get("/v1/jobs").json()["jobs"]) == 2


def test_openapi_documents_the_spec_with_an_example_and_defaults(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/jobs"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert any(ex["value"]["dataset"] == {"name": "digits"} for ex in examples.values())
    components = schema["components"]["schemas"]
    assert components["TrainingSpec"]["properties"]["epochs"]["default"] == 20
    assert components["RegularizationSpec"]["properties"]["l2"]["default"] == 0.0
    assert "/v1/jobs:validate" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_api_keys_separate_tenants(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # probes need no key
    job = client.post("/v1/jobs", json=SPEC, headers=a).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=a).status_code == 200
    assert client.get(f"/v1/jobs/{job['id']}", headers=b).status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=b).status_code == 404
    assert client.get("/v1/jobs", headers=b).json()["jobs"] == []
    assert len(client.get("/v1/jobs", headers=a).json()["jobs"]) == 1


def test_health_and_readiness(client: TestClient, make_client: Any) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": "ok", "broker": "ok"}
    down = make_client(broker_url="redis://127.0.0.1:1/0").get("/readyz")
    assert down.status_code == 503
    assert down.json()["checks"]["store"] == "ok" and down.json()["checks"]["broker"] != "ok"


def test_job_documents_sent_without_the_response_model_still_match_it(client: TestClient) -> None:
    from service.api.schemas import Job, JobList

    job = _submit(client)
    one = client.get(f"/v1/jobs/{job['id']}")
    assert one.headers["content-type"] == "application/json"
    assert Job.model_validate(one.json()).model_dump(mode="json") == one.json()
    # the 202 is rendered from the row the insert returned, not read back: the same document
    assert Job.model_validate(job).model_dump(mode="json") == job == one.json()
    page = client.get("/v1/jobs").json()
    assert JobList.model_validate(page).model_dump(mode="json") == page


def test_job_reads_on_postgresql_on_the_event_loop(make_client: Any, tmp_path: Any) -> None:
    # On PostgreSQL the async GET routes read on the event loop (store/event_loop_reads.py);
    # the job and a page come back as on SQLite, one statement each, the tenant's rows only.
    import os
    import uuid

    import psycopg

    admin_url = os.environ.get("REGTRAIN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"regtrain_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        client = make_client(
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
            api_keys="alpha:key-a,beta:key-b",
        )
        alpha, beta = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
        with client:  # the lifespan opens the async pool of the hot reads
            first = _submit(client, **alpha)
            second = _submit(client, **alpha)
            r = client.get(f"/v1/jobs/{first['id']}", headers=alpha)
            assert r.status_code == 200 and set(r.json()) >= JOB_FIELDS
            assert [h["status"] for h in r.json()["history"]] == ["queued"]
            assert client.get(f"/v1/jobs/{first['id']}", headers=beta).status_code == 404
            page = client.get("/v1/jobs?limit=1", headers=alpha).json()
            assert [j["id"] for j in page["jobs"]] == [second["id"]] and page["next_cursor"]
            rest = client.get(f"/v1/jobs?limit=1&cursor={page['next_cursor']}", headers=alpha).json()
            assert [j["id"] for j in rest["jobs"]] == [first["id"]]
            assert client.get("/v1/jobs", headers=beta).json()["jobs"] == []
        client.app.state.store.engine.dispose()  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_each_request_writes_an_access_line_with_its_latency(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # regtrain api turns uvicorn's access log off and writes these instead (service.api.telemetry)
    import re

    with caplog.at_level(logging.INFO, logger="regtrain.access"):
        client.get("/v1/jobs/nope?x=1")
        _submit(client)
    lines = [r.getMessage() for r in caplog.records if r.name == "regtrain.access"]
    assert re.fullmatch(r'\S+ - "GET /v1/jobs/nope\?x=1 HTTP/1\.1" 404 \d+\.\dms', lines[0]), lines
    assert re.fullmatch(r'\S+ - "POST /v1/jobs HTTP/1\.1" 202 \d+\.\dms', lines[1]), lines


def test_regtrain_api_writes_the_access_lines_where_uvicorn_wrote_its_own() -> None:
    from service.cli.main import _log_config

    config = _log_config()
    assert config["loggers"]["regtrain.access"]["handlers"] == ["regtrain_access"]
    assert config["handlers"]["regtrain_access"]["stream"] == "ext://sys.stdout"
