"""Limits on what a client controls: the per-tenant cap (429), body sizes (413), epochs × samples,
non-finite numbers (422); and tenant isolation on every /v1 route, checkpoints included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings
from service.store.artifacts import predictions_key
from service.store.batch_predictions import BatchPredictions

SPEC: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [4]},
    "training": {"epochs": 2},
}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


def test_a_tenant_over_its_cap_gets_429_with_retry_after(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b", max_active_jobs=2)
    first = client.post("/v1/jobs", json=SPEC, headers={**A, "Idempotency-Key": "one"})
    assert first.status_code == 202
    assert client.post("/v1/jobs", json=SPEC, headers=A).status_code == 202
    over = client.post("/v1/jobs", json=SPEC, headers=A)
    assert over.status_code == 429, over.text
    assert int(over.headers["Retry-After"]) > 0 and "detail" in over.json()
    # A retry of a job the tenant already has is no new job: it still answers.
    again = client.post("/v1/jobs", json=SPEC, headers={**A, "Idempotency-Key": "one"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    # The cap is per tenant.
    assert client.post("/v1/jobs", json=SPEC, headers=B).status_code == 202
    # A finished (here: cancelled) job frees its place.
    assert client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=A).status_code == 202
    assert client.post("/v1/jobs", json=SPEC, headers=A).status_code == 202
    assert client.post("/v1/jobs", json=SPEC, headers=A).status_code == 429


def test_json_bodies_over_the_limit_answer_413(make_client: Any) -> None:
    client = make_client(max_request_bytes=4096)
    big = {**SPEC, "name": "x" * 5000}
    r = client.post("/v1/jobs", json=big)
    assert r.status_code == 413 and "detail" in r.json()

    # Without a Content-Length (chunked), the body is counted as it arrives.
    def chunks() -> Any:
        body = json.dumps(big).encode()
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/v1/jobs", json=SPEC).status_code == 202
    # A multipart body to a JSON route gets the JSON limit, not the upload one.
    r = client.post("/v1/jobs", files={"file": ("d.csv", b"x" * 5000)})
    assert r.status_code == 413
    # Uploads have their own, larger limit.
    csv = b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 400
    r = client.post("/v1/datasets", files={"file": ("d.csv", csv)}, data={"target": "y"})
    assert r.status_code == 201, r.text


def test_epochs_times_samples_is_capped(make_client: Any) -> None:
    client = make_client(max_epoch_samples=150 * 100)
    assert client.post("/v1/jobs", json={**SPEC, "training": {"epochs": 100}}).status_code == 202
    r = client.post("/v1/jobs", json={**SPEC, "training": {"epochs": 101}})
    assert r.status_code == 422
    assert ["body", "training", "epochs"] in [e["loc"] for e in r.json()["detail"]]
    assert client.post("/v1/jobs:validate", json={**SPEC, "training": {"epochs": 101}}).status_code == 422


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_anywhere_answer_422(client: TestClient, number: str) -> None:
    for template in (
        '{"dataset": {"name": "iris"}, "model": {"type": "mlp"}, "optimizer": {"lr": %s}}',
        '{"dataset": {"name": "iris"}, "model": {"type": "mlp"}, "regularization": {"l2": %s}}',
        '{"dataset": {"name": "iris"}, "model": {"type": "mlp", "dropout": %s}}',
    ):
        r = client.post("/v1/jobs", content=template % number, headers={"content-type": "application/json"})
        assert r.status_code == 422, (template % number, r.text)


def test_tenant_isolation_on_every_route(tmp_path: Any) -> None:
    """Every /v1 route that takes an id (taken from the OpenAPI schema, so a new route is
    covered too): tenant beta gets 404 for alpha's job, checkpoint, dataset and sweep, exactly
    as for an id that does not exist, and no key at all gets 401; alpha reads its own."""
    settings = Settings(data_dir=tmp_path / "data", api_keys="alpha:key-a,beta:key-b")
    app = create_app(settings)
    with TestClient(app) as client:
        csv = b"a,b,y\n" + b"1,2,0\n3,4,1\n" * 10
        ds = client.post("/v1/datasets", files={"file": ("d.csv", csv)}, data={"target": "y"}, headers=A)
        assert ds.status_code == 201, ds.text
        ds_id = ds.json()["id"]
        job_id = client.post("/v1/jobs", json={**SPEC, "dataset": {"id": ds_id}}, headers=A).json()["id"]
        # Give the job a metrics row and a checkpoint file, as a worker would, and finish it.
        store = app.state.store
        assert store.claim(job_id, "w", 60, 3) is not None
        store.record_epoch(job_id, "w", {"epoch": 1, "train_loss": 0.5})
        ckpt = settings.jobs_dir / job_id / "checkpoints" / "final.safetensors"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"weights")
        store.record_checkpoint(
            job_id, "w", name="final", epoch=1, path="checkpoints/final.safetensors", size_bytes=7,
            sha256="0" * 64, metrics={},
        )  # fmt: skip
        store.finish(job_id, "w", "succeeded", result={})
        paths = client.get("/openapi.json").json()["paths"]
        sweep_id = None
        if "/v1/sweeps" in paths:
            sweep = {"base": SPEC, "grid": {"regularization.l2": [0.0, 0.001]}}
            r = client.post("/v1/sweeps", json=sweep, headers=A)
            assert r.status_code == 202, r.text
            sweep_id = r.json()["id"]
        # A batch prediction of the job, scored and its file put, as a worker would.
        scoring = {"dataset": {"id": ds_id}, "checkpoint": "final"}
        r = client.post(f"/v1/jobs/{job_id}/predictions", json=scoring, headers=A)
        assert r.status_code == 202, r.text
        prediction_id = r.json()["id"]
        predictions = BatchPredictions(store.engine)
        assert predictions.claim(prediction_id, "w", 60, 3) is not None
        scored = app.state.artifacts.local_path(predictions_key(job_id, prediction_id, "csv"))
        scored.parent.mkdir(parents=True)
        scored.write_text("prediction,target\n0,0\n")
        assert predictions.finish(prediction_id, "w", "succeeded", rows=1, size_bytes=20)
        ids = {
            "job_id": job_id, "name": "final", "dataset_id": ds_id, "sweep_id": sweep_id, "prediction_id": prediction_id
        }  # fmt: skip
        bodies = {
            "/v1/jobs/{job_id}/predict": {"inputs": [[1.0, 2.0]]},
            "/v1/jobs/{job_id}/predictions": scoring,
        }
        checked = 0
        for template, methods in paths.items():
            if not template.startswith("/v1/") or "{" not in template:
                continue
            path = template.format(**ids)
            unknown = template.format(**{k: "0" * 32 for k in ids})
            for method in methods:
                kw = {"json": bodies[template]} if template in bodies else {}
                theirs = client.request(method, path, headers=B, **kw)
                assert theirs.status_code == 404, (method, template, theirs.text)
                missing = client.request(method, unknown, headers=B, **kw)
                assert missing.status_code == 404, (method, template)
                assert theirs.json().keys() == missing.json().keys()
                assert client.request(method, path, **kw).status_code == 401, (method, template)
                if method == "get" and not template.endswith(("/events", "/sidecar")):
                    assert client.request(method, path, headers=A).status_code == 200, template
                checked += 1
        assert checked >= 8
        # Another tenant's dataset in a spec: as if it did not exist.
        r = client.post("/v1/jobs", json={**SPEC, "dataset": {"id": ds_id}}, headers=B)
        assert r.status_code == 422 and ds_id in r.text
        r = client.post("/v1/jobs:validate", json={**SPEC, "dataset": {"id": ds_id}}, headers=B)
        assert r.status_code == 422
        # Lists show only one's own.
        assert client.get("/v1/jobs", headers=B).json()["jobs"] == []
        assert all(d["builtin"] for d in client.get("/v1/datasets", headers=B).json()["datasets"])
        assert [j["id"] for j in client.get("/v1/jobs", headers=A).json()["jobs"]] == [job_id]
        if sweep_id is not None:
            assert client.get("/v1/sweeps", headers=B).json()["sweeps"] == []
            assert client.get(f"/v1/sweeps/{sweep_id}", headers=A).status_code == 200
            # beta's cancel changed nothing.
            assert client.get(f"/v1/sweeps/{sweep_id}", headers=A).json()["status"] != "cancelled"


def test_predict_takes_bodies_up_to_its_own_limit_and_names_it_past_that(make_client: Any) -> None:
    """POST /predict's limit is its own (its rows, not a JobSpec's): a body past
    max_request_bytes reaches the route; one past the route's limit answers 413 naming the rows
    and bytes a request may hold."""
    from service.api.routes.predict import MAX_BODY_BYTES, MAX_ROWS

    client = make_client(max_request_bytes=4096)
    rows = [[0.5] * 784] * 20  # ~80 kB
    assert client.post("/v1/jobs/nope/predict", json={"inputs": rows}).status_code == 404
    huge = b'{"inputs": [' + b"0," * (MAX_BODY_BYTES // 2) + b"0]}"
    r = client.post("/v1/jobs/nope/predict", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert f"at most {MAX_ROWS} rows and {MAX_BODY_BYTES} bytes" in r.json()["detail"]
    # the schema says the same
    doc = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/predict"]["post"]
    assert f"{MAX_ROWS} rows and {MAX_BODY_BYTES} bytes" in doc["description"]


def test_body_limit_applies_to_requests_through_a_real_transport(tmp_path: Any) -> None:
    """The 413 of a chunked body arrives as a response, not a dropped connection."""
    app = create_app(Settings(data_dir=tmp_path / "d", max_request_bytes=1000))
    transport = httpx.ASGITransport(app=app)

    async def run() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post("/v1/jobs:validate", content=b"{" + b" " * 5000 + b"}",
                             headers={"content-type": "application/json"})  # fmt: skip
            return r.status_code

    import asyncio

    assert asyncio.run(run()) == 413


SWEEP: dict[str, Any] = {"base": SPEC, "grid": {"regularization.l2": [0, 0.001]}, "cv_folds": 2}


def test_sweeps_count_toward_the_tenants_cap(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b", max_active_jobs=1)
    assert client.post("/v1/sweeps", json=SWEEP, headers=A).status_code == 202
    over = client.post("/v1/sweeps", json=SWEEP, headers=A)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0, over.text
    assert client.post("/v1/jobs", json=SPEC, headers=A).status_code == 429  # the sweep holds the place
    assert client.post("/v1/sweeps", json=SWEEP, headers=B).status_code == 202  # per tenant


def test_a_sweeps_trainings_are_bounded_by_the_grids_lengths(make_client: Any) -> None:
    import time

    client = make_client(max_sweep_trainings=100)
    huge = {"base": SPEC, "grid": {f"regularization.l{k}": list(range(60)) for k in (1, 2)}}
    huge["grid"] |= {f"model.hidden.{k}": list(range(60)) for k in range(8)}  # 60^10 combinations
    started = time.perf_counter()
    r = client.post("/v1/sweeps", json=huge)
    elapsed = time.perf_counter() - started
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "grid"], r.text
    assert elapsed < 5  # counted, never built (building it would exhaust memory, not only time)
    r = client.post(
        "/v1/sweeps", json={**SWEEP, "grid": {"regularization.l2": list(range(20))}, "cv_folds": 10}
    )
    assert r.status_code == 422 and "200 trainings" in r.json()["detail"][0]["msg"], r.text


def test_a_spec_whose_worker_memory_passes_the_limit_is_refused(make_client: Any) -> None:
    client = make_client(max_worker_memory_bytes=2**30)
    big_data = {**SPEC, "dataset": {"name": "synthetic", "n_samples": 1_000_000, "n_features": 10_000}}
    r = client.post("/v1/jobs", json=big_data)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset"], r.text
    assert "GiB" in r.json()["detail"][0]["msg"]
    big_batch = {**SPEC, "model": {"type": "mlp", "hidden": [65_536] * 4}, "training": {"batch_size": 65_536}}
    r = client.post("/v1/jobs:validate", json=big_batch)
    assert r.status_code == 422, r.text
    assert client.post("/v1/jobs:validate", json=SPEC).status_code == 200


def test_text_no_store_can_keep_is_refused_with_422(make_client: Any) -> None:
    client = make_client()
    for raw in ('{"name": "\\ud800", "dataset": {"name": "iris"}, "model": {"type": "mlp"}}',
                '{"name": "a\\u0000b", "dataset": {"name": "iris"}, "model": {"type": "mlp"}}',
                '{"dataset": {"name": "iris", "x\\udfff": 1}, "model": {"type": "mlp"}}'):  # fmt: skip
        r = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][0] == "body"
    assert client.get("/v1/jobs/%00").status_code == 422
    assert client.get("/v1/jobs?cursor=a%00b").status_code == 422
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was stored


def test_a_422_names_fields_as_written_and_suggests_a_close_one(make_client: Any) -> None:
    client = make_client()
    r = client.post("/v1/jobs", json={**SPEC, "model": {"type": "mlp", "hiden": [4]}})
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "model", "hiden"] and "did you mean 'hidden'" in err["msg"]
    r = client.post("/v1/jobs", json={**SPEC, "dataset": {"name": "iris", "seeed": 1}})
    assert r.json()["detail"][0]["loc"] == ["body", "dataset", "seeed"]
    r = client.post("/v1/jobs", json={**SPEC, "trainig": {}})
    assert "did you mean 'training'" in r.json()["detail"][0]["msg"]
