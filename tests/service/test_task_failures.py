"""Which failures the worker retries: only a lost worker and infrastructure errors; a user's
error (the TrainingError types) and a bug (`internal`) are final, and the worker lives on."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from service.settings import Settings
from service.store import open_store
from service.store.artifacts import Artifacts
from worker.presence import Presence

SPEC = {"dataset": {"name": "iris"}, "model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}


@pytest.fixture
def rt(tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path, lease_seconds=30, heartbeat_seconds=0.05)
    store = open_store(settings.store_url)
    return SimpleNamespace(
        settings=settings,
        store=store,
        artifacts=Artifacts(settings),
        name="w1",
        shutdown=threading.Event(),
        presence=Presence("w1", "test", interval_s=60),  # never started: no row in the store
    )


def _job(rt: Any) -> str:
    from service.contract.spec import JobSpec

    spec = JobSpec.model_validate(SPEC).model_dump(mode="json")
    return str(rt.store.create_job(tenant="t", spec=spec, queue="cpu")["id"])


def _raising(exc: BaseException) -> Any:
    def run_job(*_: Any, **__: Any) -> Any:
        raise exc

    return run_job


def test_failure_classes_and_what_is_retried(rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.training.runner as runner
    from worker.tasks import execute
    from worker.training.errors import TrainingError

    cases: list[tuple[BaseException, str | None]] = [
        (TrainingError("bad_data", "no rows"), "bad_data"),
        (TrainingError("diverged", "loss is nan", epoch=2, step=7), "diverged"),
        (TrainingError("out_of_memory", "CUDA out of memory"), "out_of_memory"),
        (TrainingError("time_limit", "over 1 s"), "time_limit"),
        (ZeroDivisionError("a bug"), "internal"),
        # Infrastructure: nothing is written; the job stays leased, for the reaper to retry.
        (sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused")), None),
    ]
    for exc, expected in cases:
        job_id = _job(rt)
        monkeypatch.setattr(runner, "run_job", _raising(exc))
        execute(job_id, rt)  # never raises: the worker process lives on
        job = rt.store.get_job(job_id)
        if expected is None:
            assert job["status"] == "running" and job["error"] is None
            continue
        assert job["status"] == "failed" and job["error"]["type"] == expected, job["error"]
        assert job["error"]["message"]
        if expected == "diverged":
            assert job["error"]["epoch"] == 2 and job["error"]["step"] == 7
        # A failed job is never claimed again, whatever message arrives for it.
        assert rt.store.claim(job_id, "w2", 30, 3) is None
        assert rt.store.reap(3, 3600) == []


def test_an_infrastructure_error_is_retried_by_the_reaper(rt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.training.runner as runner
    from worker.tasks import execute

    job_id = _job(rt)
    monkeypatch.setattr(
        runner, "run_job", _raising(sa.exc.OperationalError("x", {}, Exception("db restarting")))
    )
    rt.settings = rt.settings.model_copy(update={"lease_seconds": 0.01})
    execute(job_id, rt)
    import time

    time.sleep(0.05)
    assert rt.store.reap(3, 3600) == [(job_id, "cpu")]
    job = rt.store.get_job(job_id)
    assert job["status"] == "queued" and job["attempts"] == 1
    claim = rt.store.claim(job_id, "w2", 30, 3)
    assert claim is not None and claim.attempt == 2


def test_a_resumed_attempt_shows_the_progress_of_its_checkpoint(rt: Any) -> None:
    store = rt.store
    job_id = _job(rt)
    assert store.claim(job_id, "w1", 0.01, 3) is not None
    for epoch in (1, 2, 3):
        store.record_epoch(job_id, "w1", {"epoch": epoch, "train_loss": 1.0 / epoch})
    store.record_checkpoint(job_id, "w1", name="epoch-2", epoch=2, path="checkpoints/epoch-2.safetensors",
                            size_bytes=1, sha256="0" * 64, metrics={})  # fmt: skip
    import time

    time.sleep(0.05)  # the lease lapses: w1 died after epoch 3, before its checkpoint
    claim = store.claim(job_id, "w2", 30, 3)
    assert claim is not None and claim.attempt == 2 and claim.resumed_from_epoch == 2
    job = store.get_job(job_id)
    assert job["progress_epoch"] == 2 and job["latest_metrics"]["epoch"] == 2
    assert [r["epoch"] for r in store.metrics(job_id)] == [1, 2]
