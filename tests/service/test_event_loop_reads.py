"""The hot job reads that async routes await (store/event_loop_reads.py) return what the sync
store returns, on SQLite (the store itself, inline) and on PostgreSQL (psycopg's async pool), and
a pooled connection the database dropped is replaced, not failed."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.store.event_loop_reads import InlineJobReads, PostgresJobReads

SPEC = {
    "name": "tiny",
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [4]},
    "training": {"epochs": 2},
}
ALPHA, BETA = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}


def _submit(client: TestClient, **headers: str) -> str:
    r = client.post("/v1/jobs", json=SPEC, headers=headers)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _jobs_in_every_state(client: TestClient) -> list[str]:
    """Jobs queued, running with an epoch recorded, succeeded with a result, failed with an
    error and cancelled: every column of the document set on one of them."""
    store = client.app.state.store  # type: ignore[attr-defined]
    ids = [_submit(client, **ALPHA) for _ in range(5)]
    for job_id in ids[1:4]:
        assert store.claim(job_id, "w1", 60.0, 3) is not None
        assert store.record_epoch(job_id, "w1", {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.75})
    assert store.finish(ids[2], "w1", "succeeded", result={"best_epoch": 1, "metrics": {"test_loss": 0.4}})
    assert store.finish(ids[3], "w1", "failed", error={"type": "diverged", "message": "loss is nan"})
    store.cancel(ids[4], "alpha")
    _submit(client, **BETA)
    return ids


def test_the_event_loop_reads_return_what_the_sync_store_returns(make_client: Any, store_url: str) -> None:
    client = make_client(database_url=store_url, api_keys="alpha:key-a,beta:key-b")
    with client:
        store, reads = client.app.state.store, client.app.state.job_reads  # type: ignore[attr-defined]
        expected = PostgresJobReads if store_url.startswith("postgresql") else InlineJobReads
        assert isinstance(reads, expected)
        ids = _jobs_in_every_state(client)
        for job_id in ids:
            for tenant in ("alpha", None):
                got = client.portal.call(reads.job_with_history, job_id, tenant)  # type: ignore[union-attr]
                assert got == store.job_with_history(job_id, tenant)
                job, history = got
                assert job["created_at"].tzinfo is not None and history[0]["at"].tzinfo is not None
            assert client.portal.call(reads.job_with_history, job_id, "beta") is None  # type: ignore[union-attr]
        assert client.portal.call(reads.job_with_history, "no-such-job", None) is None  # type: ignore[union-attr]

        def page(**kw: Any) -> list[dict[str, Any]]:
            async def read() -> list[dict[str, Any]]:
                return await reads.list_jobs("alpha", **kw)

            got = client.portal.call(read)  # type: ignore[union-attr]
            assert got == store.list_jobs("alpha", **kw)
            return got

        newest = page(status=None, limit=3, before_seq=None)
        assert [j["id"] for j in newest] == ids[::-1][:3]
        older = page(status=None, limit=10, before_seq=newest[-1]["seq"])
        assert [j["id"] for j in older] == ids[1::-1]
        assert [j["id"] for j in page(status="succeeded", limit=10, before_seq=None)] == [ids[2]]
        assert page(status="running", limit=10, before_seq=newest[0]["seq"]) == page(
            status="running", limit=10, before_seq=None
        )
        # the routes on top of them: the same documents as before
        doc = client.get(f"/v1/jobs/{ids[2]}", headers=ALPHA).json()
        assert doc["status"] == "succeeded" and doc["result"]["best_epoch"] == 1
        assert [h["status"] for h in doc["history"]] == ["queued", "running", "succeeded"]
    store.engine.dispose()


def test_a_connection_the_database_dropped_is_replaced(make_client: Any, pg_url: str) -> None:
    client = make_client(database_url=pg_url, api_keys="alpha:key-a,beta:key-b")
    with client:
        store, reads = client.app.state.store, client.app.state.job_reads  # type: ignore[attr-defined]
        job_id = _submit(client, **ALPHA)
        assert client.get(f"/v1/jobs/{job_id}", headers=ALPHA).status_code == 200
        # what a database restart does to every connection the pool holds
        database = sa.make_url(pg_url).database
        with psycopg.connect(
            sa.make_url(pg_url).set(drivername="postgresql").render_as_string(), autocommit=True
        ) as admin:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()
        assert dropped is not None and dropped[0] >= 1
        got = client.portal.call(reads.job_with_history, job_id, "alpha")  # type: ignore[union-attr]
        assert got is not None and got[0]["id"] == job_id
        r = client.get("/v1/jobs?limit=5", headers=ALPHA)
        assert r.status_code == 200 and job_id in [j["id"] for j in r.json()["jobs"]]
    store.engine.dispose()
