"""The Sweeps endpoints on the real app and a real SQLite store (no worker: sweeps stay queued),
and the store's sweep queries (claim, lease, trials, reaper) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.store import Repository, open_store
from service.store.engine import make_engine
from service.store.tables import metadata

BASE: dict[str, Any] = {
    "dataset": {"name": "digits"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 2},
}
SWEEP: dict[str, Any] = {
    "name": "l2-grid",
    "base": BASE,
    "grid": {"regularization.l2": [0, 0.001], "model.dropout": [0, 0.5]},
    "objective": {"metric": "val_accuracy", "mode": "max"},
    "cv_folds": 2,
}
SWEEP_FIELDS = {
    "id", "name", "status", "created_at", "started_at", "finished_at", "trials", "leaderboard",
    "best", "best_known_at", "objective", "spec", "error",
}  # fmt: skip
TRIAL_FIELDS = {"index", "params", "status", "metrics", "score", "fold_scores", "vectorized", "error"}


def _submit(client: TestClient, sweep: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    r = client.post("/v1/sweeps", json=sweep or SWEEP, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def _loc_of(r: Any) -> list[Any]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]


def test_submit_answers_202_with_location_and_every_trial(client: TestClient) -> None:
    r = client.post("/v1/sweeps", json=SWEEP)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert r.headers["location"] == f"/v1/sweeps/{sweep['id']}"
    assert set(sweep) >= SWEEP_FIELDS
    assert sweep["status"] == "queued" and sweep["name"] == "l2-grid" and sweep["error"] is None
    assert sweep["leaderboard"] == [] and sweep["best"] is None
    assert sweep["objective"] == {"metric": "val_accuracy", "mode": "max"}
    assert [t["index"] for t in sweep["trials"]] == [0, 1, 2, 3]
    assert all(set(t) >= TRIAL_FIELDS and t["status"] == "queued" for t in sweep["trials"])
    assert [t["params"] for t in sweep["trials"]] == [
        {"regularization.l2": 0, "model.dropout": 0},
        {"regularization.l2": 0, "model.dropout": 0.5},
        {"regularization.l2": 0.001, "model.dropout": 0},
        {"regularization.l2": 0.001, "model.dropout": 0.5},
    ]
    # Every default is filled in.
    assert sweep["spec"]["vectorize"] == "auto" and sweep["spec"]["cv_folds"] == 2
    assert sweep["spec"]["base"]["optimizer"]["name"] == "adam"
    assert client.get(r.headers["location"]).json() == sweep


def test_random_search_and_path_expand_into_their_trials(client: TestClient) -> None:
    random = {"base": BASE, "random": {"regularization.l2": {"log_uniform": [1e-6, 0.1]}}, "trials": 5}
    first = _submit(client, random)
    assert len(first["trials"]) == 5
    values = [t["params"]["regularization.l2"] for t in first["trials"]]
    assert all(1e-6 <= v <= 0.1 for v in values) and len(set(values)) == 5
    # The seed decides the samples: the same sweep draws the same trials.
    assert [t["params"] for t in _submit(client, random)["trials"]] == [t["params"] for t in first["trials"]]
    path = _submit(client, {"base": BASE, "path": {"regularization.l2": [0.1, 0.01, 0.001]}})
    assert [t["params"] for t in path["trials"]] == [{"regularization.l2": v} for v in (0.1, 0.01, 0.001)]


def test_422_names_the_field(make_client: Any) -> None:
    client = make_client(max_parameters=10_000)
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        # the SweepSpec's own schema (pydantic)
        ({k: v for k, v in SWEEP.items() if k != "base"}, ["body", "base"]),
        ({**SWEEP, "base": {**BASE, "training": {"epochs": 0}}}, ["body", "base", "training", "epochs"]),
        ({**SWEEP, "cv_folds": 11}, ["body", "cv_folds"]),
        ({**SWEEP, "grid": None, "random": {"regularization.l2": {"log_uniform": [0, 1]}}},
         ["body", "random", "regularization.l2"]),
        ({**SWEEP, "vectorize": "sometimes"}, ["body", "vectorize"]),
        # the trials, expanded against the data
        ({**SWEEP, "grid": {"regularization.l3": [0.1]}}, ["body", "grid", "regularization.l3"]),
        ({**SWEEP, "grid": {"regularization.l2": [-1.0]}}, ["body", "grid", "regularization.l2"]),
        ({**SWEEP, "grid": {"regularization.l2": [i / 1000 for i in range(300)]}}, ["body", "grid"]),
        ({**SWEEP, "grid": {"model.hidden": [[8], [4096]]}}, ["body", "grid", "model"]),
        ({**SWEEP, "objective": {"metric": "val_r2"}}, ["body", "objective", "metric"]),
        ({**SWEEP, "base": {**BASE, "dataset": {"id": "ds-missing"}}}, ["body", "base", "dataset", "id"]),
        ({**SWEEP, "vectorize": True, "base": {**BASE, "model": {"type": "mlp", "hidden": [8],
                                                                   "batch_norm": True}}},
         ["body", "vectorize"]),
    ]  # fmt: skip
    for sweep, loc in cases:
        r = client.post("/v1/sweeps", json=sweep)
        # the path, or a path inside it (a union names its member: ["body", "vectorize", "bool"])
        assert any(found[: len(loc)] == loc for found in _loc_of(r)), (loc, r.text)
    # Model-level rules name the problem in the message.
    for sweep, words in (
        ({**SWEEP, "grid": {"regularization.l2": []}}, "grid"),
        ({**SWEEP, "random": {"regularization.l2": {"uniform": [0, 1]}}}, "exactly one of grid"),
        ({**SWEEP, "cv_folds": 1}, "cv_folds"),
    ):
        r = client.post("/v1/sweeps", json=sweep)
        assert r.status_code == 422 and words in r.text, r.text
    r = client.post(
        "/v1/sweeps", json={**SWEEP, "grid": {"regularization.l2": [i / 1000 for i in range(300)]}}
    )
    assert "maximum of 256 trials" in r.json()["detail"][0]["msg"]
    r = client.post(
        "/v1/sweeps",
        json={
            **SWEEP,
            "vectorize": True,
            "base": {**BASE, "model": {"type": "cnn", "channels": [2], "hidden": [4]}},
        },
    )
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "vectorize"] and "cnn" in err["msg"] and err["type"] == "value_error"
    assert client.get("/v1/sweeps").json()["sweeps"] == []  # nothing was queued


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/v1/sweeps/nope").status_code == 404
    r = client.post("/v1/sweeps/nope/cancel")
    assert r.status_code == 404 and "detail" in r.json()


def test_list_is_newest_first_and_paginates_with_a_cursor(client: TestClient) -> None:
    ids = [_submit(client, {**SWEEP, "name": f"s-{i}"})["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/sweeps", params=params).json()
        seen += [s["id"] for s in page["sweeps"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    client.post(f"/v1/sweeps/{ids[0]}/cancel")
    cancelled = client.get("/v1/sweeps", params={"status": "cancelled"}).json()["sweeps"]
    assert [s["id"] for s in cancelled] == [ids[0]]
    assert client.get("/v1/sweeps", params={"cursor": "garbage!"}).status_code == 422
    assert client.get("/v1/sweeps", params={"limit": 0}).status_code == 422
    assert client.get("/v1/sweeps", params={"status": "lost"}).status_code == 422
    assert client.get("/v1/jobs").json()["jobs"] == []  # a sweep is not a job


def test_cancel_a_queued_sweep_at_once_and_409_after(client: TestClient) -> None:
    sweep = _submit(client)
    r = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "cancelled" and body["finished_at"] and body["cancel_requested"]
    assert {t["status"] for t in body["trials"]} == {"cancelled"}
    again = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_idempotency_key_returns_the_same_sweep(client: TestClient) -> None:
    first = _submit(client, SWEEP, **{"Idempotency-Key": "k-1"})
    assert _submit(client, SWEEP, **{"Idempotency-Key": "k-1"})["id"] == first["id"]
    filled = {**SWEEP, "vectorize": "auto"}  # defaults written out are the same body
    assert _submit(client, filled, **{"Idempotency-Key": "k-1"})["id"] == first["id"]
    other = client.post("/v1/sweeps", json={**SWEEP, "name": "other"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert _submit(client, SWEEP, **{"Idempotency-Key": "k-2"})["id"] != first["id"]
    assert len(client.get("/v1/sweeps").json()["sweeps"]) == 2


def test_api_keys_separate_tenants(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    assert client.get("/v1/sweeps").status_code == 401
    assert client.post("/v1/sweeps", json=SWEEP).status_code == 401
    sweep = _submit(client, SWEEP, **a)
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=a).status_code == 200
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=b).status_code == 404
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=b).status_code == 404
    assert client.get("/v1/sweeps", headers=b).json()["sweeps"] == []
    assert len(client.get("/v1/sweeps", headers=a).json()["sweeps"]) == 1
    assert client.get(f"/v1/sweeps/{sweep['id']}", headers=a).json()["status"] == "queued"


def test_openapi_documents_sweeps(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/sweeps"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert any("grid" in ex["value"] for ex in examples.values())
    assert {"/v1/sweeps/{sweep_id}", "/v1/sweeps/{sweep_id}/cancel"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["SweepSpec"]["properties"]["cv_folds"]["default"] == 0


# --- the store's sweep queries -----------------------------------------------------------------

TRIALS = [{"regularization.l2": v} for v in (0.0, 0.01, 0.1)]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    repo = open_store(url)
    yield repo
    repo.engine.dispose()
    if request.param == "postgresql":  # a clean schema for the next test on this database
        engine = make_engine(url)
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
            conn.execute(sa.text("DROP TABLE IF EXISTS regtrain_alembic_version"))
        engine.dispose()


def test_one_of_many_workers_claims_a_sweep_and_only_it_writes(store: Repository) -> None:
    sweep_id = store.create_sweep(tenant="t", spec={"name": "s"}, queue="cpu", trials=TRIALS)["id"]
    wins: list[str] = []

    def claim(owner: str) -> None:
        if store.claim_sweep(sweep_id, owner, 30, 3) is not None:
            wins.append(owner)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    owner, other = wins[0], next(f"w{i}" for i in range(6) if f"w{i}" != wins[0])
    assert {t["status"] for t in store.trials([sweep_id])[sweep_id]} == {"running"}
    assert store.sweep_heartbeat(sweep_id, owner, 30) is False
    assert store.sweep_heartbeat(sweep_id, other, 30) is None
    assert store.record_trial(sweep_id, owner, 1, status="succeeded", score=0.5, metrics={"val_loss": 0.5})
    assert not store.record_trial(sweep_id, other, 2, status="succeeded", score=0.1)
    assert store.cancel_sweep(sweep_id, "t") == "requested"
    assert store.sweep_heartbeat(sweep_id, owner, 30) is True
    assert not store.finish_sweep(sweep_id, other, "cancelled")
    assert store.finish_sweep(sweep_id, owner, "cancelled", best_index=1)
    assert store.cancel_sweep(sweep_id, "t") == "finished"
    assert store.cancel_sweep(sweep_id, "other-tenant") == "missing"
    trials = store.trials([sweep_id])[sweep_id]
    assert [t["status"] for t in trials] == ["cancelled", "succeeded", "cancelled"]
    assert trials[1]["score"] == 0.5 and trials[1]["metrics"] == {"val_loss": 0.5}
    sweep = store.get_sweep(sweep_id, "t")
    assert (
        sweep and sweep["status"] == "cancelled" and sweep["best_index"] == 1 and sweep["lease_owner"] is None
    )


def test_reaper_requeues_a_lost_sweep_keeping_finished_trials_then_fails_it(store: Repository) -> None:
    sweep_id = store.create_sweep(tenant="t", spec={}, queue="gpu", trials=TRIALS)["id"]
    # 1 s leases: long enough that a loaded machine still reaps nothing while one is live.
    first = store.claim_sweep(sweep_id, "w1", 1.0, 2)
    assert first and first.attempt == 1 and first.tenant == "t"
    assert store.record_trial(sweep_id, "w1", 0, status="succeeded", score=1.0)
    assert store.reap_sweeps(2, 3600).resend == []  # lease still live
    time.sleep(1.1)
    assert store.reap_sweeps(2, 3600).resend == [(sweep_id, "gpu")]
    assert [t["status"] for t in store.trials([sweep_id])[sweep_id]] == ["succeeded", "queued", "queued"]
    assert store.sweep_heartbeat(sweep_id, "w1", 5) is None  # the old owner is refused
    second = store.claim_sweep(sweep_id, "w2", 1.0, 2)
    assert second and second.attempt == 2
    assert [t["status"] for t in store.trials([sweep_id])[sweep_id]] == ["succeeded", "running", "running"]
    time.sleep(1.1)
    reaped = store.reap_sweeps(2, 3600)
    assert reaped.resend == [] and reaped.ended == [(sweep_id, "failed")]  # out of attempts: not re-queued
    sweep = store.get_sweep(sweep_id)
    assert sweep and sweep["status"] == "failed" and sweep["error"]["type"] == "worker_lost"
    assert [t["status"] for t in store.trials([sweep_id])[sweep_id]] == [
        "succeeded",
        "cancelled",
        "cancelled",
    ]


def test_a_released_sweep_is_queued_again_and_a_stale_message_resent(store: Repository) -> None:
    sweep_id = store.create_sweep(tenant="t", spec={}, queue="cpu", trials=TRIALS)["id"]
    assert store.claim_sweep(sweep_id, "w1", 30, 3)
    assert store.release_sweep(sweep_id, "w1") == "cpu"
    assert store.get_sweep(sweep_id)["status"] == "queued"  # type: ignore[index]
    assert {t["status"] for t in store.trials([sweep_id])[sweep_id]} == {"queued"}
    time.sleep(1.2)  # seconds, not tenths: a loaded machine must not let the resend lapse twice
    assert store.reap_sweeps(3, 1.0).resend == [(sweep_id, "cpu")]
    assert store.reap_sweeps(3, 1.0).resend == []  # sent again just now


def test_best_known_at_is_when_the_leaders_score_was_written(store: Repository) -> None:
    """The time to the winner: the best trial's finished_at (the leader's while it runs)."""
    from service.contract.documents import sweep_document

    spec = {"name": "s", "base": BASE, "grid": {"regularization.l2": [0.0, 0.01, 0.1]}}
    spec["objective"] = {"metric": "val_accuracy", "mode": "max"}
    sweep_id = store.create_sweep(tenant="t", spec=spec, queue="cpu", trials=TRIALS)["id"]
    assert store.claim_sweep(sweep_id, "w1", 30, 3) is not None

    def doc() -> dict[str, Any]:
        return sweep_document(store.get_sweep(sweep_id), store.trials([sweep_id])[sweep_id], None)  # type: ignore[arg-type]

    assert doc()["best_known_at"] is None  # nothing scored yet
    assert store.record_trial(sweep_id, "w1", 2, status="succeeded", score=0.9, metrics={"val_accuracy": 0.9})
    first = doc()
    assert first["best_known_at"] == first["trials"][2]["finished_at"] is not None
    assert store.record_trial(sweep_id, "w1", 0, status="succeeded", score=0.5, metrics={"val_accuracy": 0.5})
    assert doc()["best_known_at"] == first["best_known_at"]  # a worse trial changes nothing
    assert store.finish_sweep(sweep_id, "w1", "cancelled", best_index=0)  # the sweep's choice wins
    assert doc()["best_known_at"] == doc()["trials"][0]["finished_at"]
