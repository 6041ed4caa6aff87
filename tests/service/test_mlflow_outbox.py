"""MLflow's outbox in the store (store/mlflow_runs.py), on both backends: a tracked job's row is
written with its claim and marked by each epoch and its end in their own transactions; a sender
holds a row under a lease, and a change made while it sends leaves the row due again; a
resumed job sends its metrics again from where it resumed; ended rows are purged after the
history."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from service.store import Repository
from service.store.base import now
from service.store.mlflow_runs import MlflowRuns
from service.store.tables import mlflow_runs


def _row(store: Repository, subject: str) -> dict[str, object] | None:
    with store.engine.connect() as conn:
        row = conn.execute(mlflow_runs.select().where(mlflow_runs.c.subject == subject)).mappings().first()
    return dict(row) if row else None


def _running_job(store: Repository, owner: str = "w1") -> str:
    job = store.create_job(tenant="t", spec={"name": "x"}, queue="cpu")
    assert store.claim(job["id"], owner, 60, 3) is not None
    return str(job["id"])


def test_nothing_is_written_unless_tracking_is_on(store: Repository) -> None:
    job_id = _running_job(store)
    store.record_epoch(job_id, "w1", {"epoch": 1, "train_loss": 0.5})
    assert _row(store, job_id) is None


def test_a_claim_tracks_the_job_and_its_epochs_and_end_make_it_due(store: Repository) -> None:
    store.mlflow_tracking = True
    runs = MlflowRuns(store.engine)
    job_id = _running_job(store)
    (held,) = runs.claim_due(10, 60)
    assert (held.subject, held.kind, held.run_id, held.sent_epoch) == (job_id, "job", None, 0)
    assert runs.claim_due(10, 60) == []  # held: no second sender gets it
    assert runs.set_run(held, "run-1")
    # An epoch lands while the sender sends: once it is done, the row is due again at once.
    store.record_epoch(job_id, "w1", {"epoch": 1, "train_loss": 0.5})
    assert runs.sent(held, 0)
    runs.synced(held)
    assert _row(store, job_id)["status"] == "pending"  # type: ignore[index]
    (again,) = runs.claim_due(10, 60)
    assert (again.run_id, [e for e, _, _ in runs.metrics_after(job_id, again.sent_epoch)]) == ("run-1", [1])
    assert runs.sent(again, 1)
    runs.synced(again)
    assert _row(store, job_id)["status"] == "synced"  # type: ignore[index]
    assert runs.claim_due(10, 60) == []
    store.finish(job_id, "w1", "succeeded", result={})
    (last,) = runs.claim_due(10, 60)
    runs.ended(last)
    row = _row(store, job_id)
    assert row is not None and (row["status"], row["run_id"], row["sent_epoch"]) == ("ended", "run-1", 1)


def test_a_tracker_that_fails_is_asked_again_after_the_backoff_not_at_every_epoch(store: Repository) -> None:
    store.mlflow_tracking = True
    runs = MlflowRuns(store.engine)
    job_id = _running_job(store)
    (held,) = runs.claim_due(10, 60)
    runs.retry(held, now() + timedelta(seconds=300), "ConnectError")
    store.record_epoch(job_id, "w1", {"epoch": 1, "train_loss": 0.5})
    assert runs.claim_due(10, 60) == []  # the epoch did not cut the backoff short
    row = _row(store, job_id)
    assert row is not None and (row["attempts"], row["last_error"]) == (1, "ConnectError")


def test_a_sender_whose_lease_lapsed_cannot_write_over_the_next_one(store: Repository) -> None:
    store.mlflow_tracking = True
    runs = MlflowRuns(store.engine)
    job_id = _running_job(store)
    (first,) = runs.claim_due(10, -1)  # its lease is over at once
    (second,) = runs.claim_due(10, 60)
    assert runs.set_run(second, "run-2")
    assert not runs.set_run(first, "run-1")
    assert _row(store, job_id)["run_id"] == "run-2"  # type: ignore[index]


def test_a_job_claimed_again_sends_its_metrics_again_from_where_it_resumed(store: Repository) -> None:
    store.mlflow_tracking = True
    runs = MlflowRuns(store.engine)
    job_id = _running_job(store)
    for epoch in (1, 2, 3):
        store.record_epoch(job_id, "w1", {"epoch": epoch, "train_loss": 1.0 / epoch})
    (held,) = runs.claim_due(10, 60)
    runs.sent(held, 3)
    runs.synced(held)
    # The worker dies; the job resumes on another from its epoch-1 checkpoint.
    store.record_checkpoint(
        job_id, "w1", name="epoch-1", epoch=1, path="checkpoints/epoch-1.safetensors", size_bytes=1,
        sha256="0" * 64, metrics={},
    )  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE jobs SET lease_expires_at = :past"), {"past": now() - timedelta(hours=1)}
        )
    store.reap(3, 1800)
    assert store.claim(job_id, "w2", 60, 3) is not None
    (again,) = runs.claim_due(10, 60)
    assert again.sent_epoch == 1


def test_a_sweeps_trials_keep_their_runs_and_go_with_the_sweep(store: Repository) -> None:
    store.mlflow_tracking = True
    runs = MlflowRuns(store.engine)
    sweep = store.create_sweep(tenant="t", spec={"base": {}}, queue="cpu", trials=[{}, {}])
    assert store.claim_sweep(sweep["id"], "w1", 60, 3) is not None
    (held,) = runs.claim_due(10, 60)
    assert held.kind == "sweep"
    runs.set_run(held, "parent")
    runs.add_trial(sweep["id"], 0, "trial-0")
    runs.trial_logged(sweep["id"], 0)
    runs.add_trial(sweep["id"], 1, "trial-1")
    assert runs.trial_runs(sweep["id"]) == {0: ("trial-0", True), 1: ("trial-1", False)}
    assert runs.run_of(sweep["id"]) == ("parent", True)
    assert runs.run_of("nothing") == (None, False)
    runs.synced(held, again_in_s=0)  # a running sweep stays due
    (again,) = runs.claim_due(10, 60)
    runs.ended(again)
    assert runs.run_of(sweep["id"]) == ("parent", False)  # ended: no other run is coming
    assert runs.claim_due(10, 60) == []  # no trial row is ever claimed
    with store.engine.begin() as conn:
        conn.execute(mlflow_runs.update().values(finished_at=now() - timedelta(days=3)))
    assert runs.purge(older_than_s=2 * 86400) == 2  # the sweep and its logged trial
    assert [r for r in (_row(store, f"{sweep['id']}.1"),) if r] != []  # an open one stays


def test_an_unreachable_tracker_leaves_the_row_due_after_a_backoff(store: Repository, tmp_path: Path) -> None:
    """A sender's try at a port where nothing listens: the row waits out its first backoff with
    the error noted, and the job carries on (its epochs and end are written as ever)."""
    from service.notify.mlflow import BACKOFF_S, MlflowSender
    from service.settings import Settings

    with socket.socket() as s:  # a loopback port that was free a moment ago, now closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{port}")
    sender = MlflowSender(settings, store)  # not started: this test sends itself
    store.mlflow_tracking = True
    job_id = _running_job(store)
    (held,) = sender.runs.claim_due(10, 60)
    before = now()
    sender.send(held)
    row = _row(store, job_id)
    assert row is not None and (row["status"], row["attempts"], row["run_id"]) == ("pending", 1, None)
    assert "ConnectError" in str(row["last_error"])
    assert row["next_at"] >= before + timedelta(seconds=BACKOFF_S[0])  # type: ignore[operator]
    assert store.record_epoch(job_id, "w1", {"epoch": 1, "train_loss": 0.5})
    assert store.finish(job_id, "w1", "succeeded", result={})
