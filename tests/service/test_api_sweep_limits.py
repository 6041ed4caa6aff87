"""A sweep admitted only within the caps and as it will run, on the real app and a real SQLite
store (no worker): a space whose corners fit but whose joint worst case does not answers 422
naming the space's field, on POST /v1/sweeps and POST /v1/sweeps:validate alike; the dry run
gives the worst case's figures; a grid over a field the trials cannot vary is refused; a grid
sampler asked for more trials than combinations is clamped, with a warning in the document."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

BASE: dict[str, Any] = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [8]}}
# On digits each corner needs at most 7.0 MB of worker memory, both widest together 92.8 MB
# (tests/engine/test_sweep_limits.py).
JOINT: dict[str, Any] = {
    "base": BASE,
    "space": {"model.hidden": {"choice": [[8], [3000]]}, "training.batch_size": {"int": [32, 1797]}},
    "trials": 4,
}


def _locs(r: Any) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


def test_a_space_over_the_memory_cap_only_jointly_is_refused_by_submit_and_validate(make_client: Any) -> None:
    client: TestClient = make_client(max_worker_memory_bytes=10_000_000)
    for route in ("/v1/sweeps", "/v1/sweeps:validate"):
        r = client.post(route, json=JOINT)
        assert _locs(r) == [["body", "space", "training.batch_size"]], route
        assert "'model.hidden': [3000]" in r.text and "'training.batch_size': 1797" in r.text
    assert client.get("/v1/sweeps").json()["sweeps"] == []  # nothing was queued
    # each corner alone, as a job, is admitted: only the combination is over
    for model, batch in (({"type": "mlp", "hidden": [3000]}, 32), ({"type": "mlp", "hidden": [8]}, 1797)):
        job = {**BASE, "model": model, "training": {"batch_size": batch}}
        assert client.post("/v1/jobs:validate", json=job).status_code == 200


def test_validate_gives_the_worst_case_and_queues_nothing(make_client: Any) -> None:
    client: TestClient = make_client(max_worker_memory_bytes=100_000_000)
    r = client.post("/v1/sweeps:validate", json={**JOINT, "cv_folds": 2})
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["memory_bytes"] == 92_788_864  # hidden [3000] at batch 1797
    assert v["parameters"] == 64 * 3000 + 3000 + 3000 * 10 + 10
    assert (v["trials"], v["trainings"], v["task"], v["n_features"], v["n_outputs"]) == (
        4, 8, "classification", 64, 10
    )  # fmt: skip
    assert v["queue"] and v["warnings"] == [] and v["spec"]["trials"] == 4
    assert client.get("/v1/sweeps").json()["sweeps"] == []


def test_a_grid_sampler_with_more_trials_than_combinations_is_clamped_with_a_warning(
    client: TestClient,
) -> None:
    doc = {
        "base": BASE,
        "space": {"optimizer.name": {"choice": ["adam", "sgd"]}},
        "sampler": "grid",
        "trials": 8,
    }
    v = client.post("/v1/sweeps:validate", json=doc).json()
    assert v["trials"] == 2 and v["spec"]["trials"] == 2 and len(v["warnings"]) == 1
    r = client.post("/v1/sweeps", json=doc)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["spec"]["trials"] == 2
    assert sweep["warnings"] == v["warnings"] and "2 combinations" in sweep["warnings"][0]
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["warnings"] == sweep["warnings"]
    # a retry under the same key is the same sweep (the clamped spec is what was stored)
    again = client.post("/v1/sweeps", json=doc, headers={"Idempotency-Key": "k"})
    assert (
        client.post("/v1/sweeps", json=doc, headers={"Idempotency-Key": "k"}).json()["id"]
        == again.json()["id"]
    )


def test_a_grid_over_the_dataset_is_refused_naming_it(client: TestClient) -> None:
    r = client.post("/v1/sweeps", json={"base": BASE, "grid": {"dataset.name": ["digits", "iris"]}})
    assert _locs(r) == [["body", "grid", "dataset.name"]]
    assert "cannot vary per trial" in r.text
