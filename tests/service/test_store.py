"""The store's races and its migrations, on SQLite and on a fresh PostgreSQL database."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from service.store import Repository, open_store
from service.store import migrate as migrations
from service.store.engine import make_engine
from service.store.tables import metadata

SPEC = {"name": "s", "dataset": {"name": "digits"}, "training": {"epochs": 3}}


def _head() -> str | None:
    """The newest revision in migrations/versions (each new one moves it on)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations.MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": migrations.VERSION_TABLE}
        ).get_current_revision()


def _shared_revision(engine: sa.Engine) -> str | None:
    """What `alembic_version` records: where regtrain kept its revision before 0005, and where
    Optuna keeps its own."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_only_one_of_many_workers_claims_a_job(store: Repository) -> None:
    job = store.create_job(tenant="t", spec=SPEC, queue="cpu")
    wins: list[str] = []

    def claim(owner: str) -> None:
        if store.claim(job["id"], owner, 30, 3) is not None:
            wins.append(owner)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    row = store.get_job(job["id"])
    assert row and row["status"] == "running" and row["lease_owner"] == wins[0] and row["attempts"] == 1


def test_lease_expiry_reaper_and_worker_lost(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="gpu")["id"]
    for attempt in (1, 2):
        # A 1 s lease: long enough that a loaded machine still reaps nothing while it is live.
        claim = store.claim(job_id, f"w{attempt}", 1.0, 2)
        assert claim and claim.attempt == attempt
        assert store.record_epoch(job_id, f"w{attempt}", {"epoch": attempt, "train_loss": 1.0})
        assert store.reap(2, 3600) == []  # lease still live
        time.sleep(1.1)
        if attempt == 1:
            assert store.reap(2, 3600) == [(job_id, "gpu")]
            assert store.get_job(job_id)["status"] == "queued"  # type: ignore[index]
            # The old owner's late writes and final state are refused.
            assert store.heartbeat(job_id, "w1", 5) is None
            assert not store.record_epoch(job_id, "w1", {"epoch": 9})
            assert not store.finish(job_id, "w1", "succeeded", result={})
    assert store.reap(2, 3600) == []  # out of attempts: failed, not re-queued
    job = store.get_job(job_id)
    assert job and job["status"] == "failed" and job["error"]["type"] == "worker_lost"
    statuses = [h["status"] for h in store.histories([job_id])[job_id]]
    assert statuses == ["queued", "running", "queued", "running", "failed"]


def test_an_expired_lease_can_be_claimed_directly(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    # A 1 s lease: long enough that a loaded machine reaches the second claim while it is live.
    assert store.claim(job_id, "w1", 1.0, 3)
    assert store.claim(job_id, "w2", 5, 3) is None
    time.sleep(1.1)
    claim = store.claim(job_id, "w2", 5, 3)
    assert claim and claim.attempt == 2


def test_resume_point_drops_metrics_rows_past_the_last_epoch_checkpoint(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.claim(job_id, "w1", 0.1, 3)
    for epoch in (1, 2, 3):
        store.record_epoch(job_id, "w1", {"epoch": epoch, "train_loss": 1.0 / epoch})
    ckpt = {"path": "checkpoints/x.safetensors", "size_bytes": 1, "sha256": "0" * 64, "metrics": {}}
    store.record_checkpoint(job_id, "w1", name="epoch-2", epoch=2, **ckpt)
    store.record_checkpoint(job_id, "w1", name="best", epoch=3, **ckpt)
    time.sleep(0.2)
    claim = store.claim(job_id, "w2", 5, 3)
    assert claim and claim.resumed_from_epoch == 2
    assert [r["epoch"] for r in store.metrics(job_id)] == [1, 2]
    assert store.histories([job_id])[job_id][-1]["resumed_from_epoch"] == 2


def test_cancel_flag_and_final_state_written_once(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.claim(job_id, "w1", 30, 3)
    assert store.heartbeat(job_id, "w1", 30) is False
    assert store.cancel(job_id, "other-tenant") == "missing"
    assert store.cancel(job_id, "t") == "requested"
    assert store.heartbeat(job_id, "w1", 30) is True
    assert store.finish(job_id, "w1", "cancelled", result={"epochs_completed": 1})
    assert not store.finish(job_id, "w1", "succeeded", result={})
    assert store.cancel(job_id, "t") == "finished"
    queued = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.cancel(queued) == "cancelled"
    assert store.claim(queued, "w1", 30, 3) is None  # a cancelled job never starts


def test_the_migrations_build_the_schema_tables_py_describes(store_url: str) -> None:
    """Every column, index and constraint of tables.py is made by a migration, with the same
    type (a column added to tables.py without its revision fails here, not in production)."""
    from alembic.autogenerate import compare_metadata

    store = open_store(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    store.engine.dispose()
    # regtrain's own version table is alembic's, not in tables.py.
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)] == []


def test_first_migration_upgrades_to_head_keeping_every_job(store_url: str) -> None:
    engine = make_engine(store_url)
    migrations.upgrade(engine, "0001")
    assert _revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, tenant, name, spec, queue, status, created_at, attempts,"
                " cancel_requested, progress_epoch, result)"
                " VALUES ('old-job', 'default', 'kept', :spec, 'cpu', 'succeeded',"
                " '2025-01-02 03:04:05', 1, false, 3, :result)"
            ),
            {"spec": json.dumps(SPEC), "result": json.dumps({"best_epoch": 3})},
        )
        conn.execute(
            sa.text(
                "INSERT INTO job_history (job_id, status, at) VALUES ('old-job', 'queued',"
                " '2025-01-02 03:04:05')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO job_metrics (job_id, epoch, row, at) VALUES ('old-job', 1, :row,"
                " '2025-01-02 03:04:06')"
            ),
            {"row": json.dumps({"epoch": 1, "train_loss": 0.5})},
        )
    engine.dispose()
    store = open_store(store_url)  # what the API and the workers do at start
    assert _revision(store.engine) == _head()
    job = store.get_job("old-job", "default")
    assert job and job["name"] == "kept" and job["spec"] == SPEC and job["result"] == {"best_epoch": 3}
    assert job["created_at"].isoformat() == "2025-01-02T03:04:05+00:00"
    assert store.metrics("old-job") == [{"epoch": 1, "train_loss": 0.5}]
    assert [h["status"] for h in store.histories(["old-job"])["old-job"]] == ["queued"]
    # The new revision's feature works on the upgraded database.
    new = store.create_job(tenant="default", spec=SPEC, queue="cpu", idempotency_key="k", request_sha256="h")
    assert store.job_by_idempotency_key("default", "k")["id"] == new["id"]  # type: ignore[index]
    store.engine.dispose()


def test_a_database_made_before_keeps_its_jobs_and_opens_an_optuna_study(store_url: str) -> None:
    """Before 0005 regtrain recorded its revision in `alembic_version`, the table Optuna's RDB
    storage uses for its own: the upgrade moves it to regtrain_alembic_version, and Optuna
    then sets up its tables in the same database."""
    import optuna

    engine = make_engine(store_url)
    migrations.upgrade(engine, "0004")
    with engine.begin() as conn:  # the state a regtrain of before 0005 left
        conn.execute(sa.text(f"DROP TABLE {migrations.VERSION_TABLE}"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0004')"))
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, tenant, name, spec, queue, status, created_at, attempts,"
                " cancel_requested) VALUES ('old-job', 'default', 'kept', :spec, 'cpu', 'queued',"
                " '2025-01-02 03:04:05', 0, false)"
            ),
            {"spec": json.dumps(SPEC)},
        )
    engine.dispose()
    store = open_store(store_url)
    assert _revision(store.engine) == _head()
    assert not sa.inspect(store.engine).has_table("alembic_version")
    assert store.get_job("old-job")["name"] == "kept"  # type: ignore[index]
    study = optuna.create_study(storage=store_url, study_name="s", direction="maximize")
    study.tell(study.ask(), 0.5)
    assert _shared_revision(store.engine) not in (None, "0004", _head())  # Optuna's own revision
    store.engine.dispose()
    store = open_store(store_url)  # a restart after Optuna's tables exist: nothing to move
    assert _revision(store.engine) == _head()
    assert optuna.load_study(study_name="s", storage=store_url).best_value == 0.5
    assert store.get_job("old-job")["name"] == "kept"  # type: ignore[index]
    store.engine.dispose()
    if store_url.startswith("postgresql"):  # the next test on this database starts clean
        eng = make_engine(store_url)
        with eng.begin() as conn:
            names = sa.inspect(conn).get_table_names()
            for name in set(names) - {t.name for t in metadata.sorted_tables}:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
        eng.dispose()


def test_migrations_build_the_schema_of_tables_py(store: Repository) -> None:
    inspector = sa.inspect(store.engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name


def test_reaper_resends_the_message_of_a_long_queued_job(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.reap(3, 3600) == []
    time.sleep(0.3)
    assert store.reap(3, 0.2) == [(job_id, "cpu")]
    assert store.reap(3, 0.2) == []  # sent again just now: one reaper pass sends it once
    assert store.get_job(job_id)["status"] == "queued"  # type: ignore[index]


def test_the_api_reads_carry_each_job_history_in_order(store: Repository) -> None:
    # GET /v1/jobs/{id} and GET /v1/jobs read a job's transitions inside its row (a JSON array
    # aggregated in SQL): the same entries, in the same order and types, as the history table.
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.claim(job_id, "w1", 30, 3)
    assert store.finish(job_id, "w1", "succeeded", result={"ok": True})
    expected = [{k: v for k, v in h.items() if k != "job_id"} for h in store.histories([job_id])[job_id]]
    assert [h["status"] for h in expected] == ["queued", "running", "succeeded"]
    found = store.job_with_history(job_id, "t")
    assert found is not None
    job, history = found
    assert job["status"] == "succeeded" and job["result"] == {"ok": True} and job["spec"] == SPEC
    assert history == expected and history[0]["at"].tzinfo is not None
    assert store.job_with_history(job_id, "other-tenant") is None
    other = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    page = store.list_jobs("t", status=None, limit=10, before_seq=None)
    assert [r["id"] for r in page] == [other, job_id]
    assert page[1]["history"] == expected and [h["status"] for h in page[0]["history"]] == ["queued"]


def test_a_dead_pooled_postgresql_connection_is_replaced_not_failed(pg_url: str) -> None:
    # No pool_pre_ping on every checkout (a round trip per read): a connection idle past
    # PING_AFTER_IDLE_S is pinged, and one the server dropped (a restart) is replaced.
    import psycopg

    from service.store.engine import PING_AFTER_IDLE_S

    store = open_store(pg_url)
    try:
        job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
        db = sa.make_url(pg_url).database
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (db,),
            ).fetchone()[0]  # type: ignore[index]
        assert killed, "the pooled connection should have been there to drop"
        time.sleep(PING_AFTER_IDLE_S + 0.2)
        found = store.job_with_history(job_id, "t")
        assert found is not None and found[0]["id"] == job_id
        # Leave the session's database as the other tests expect it: without this job.
        assert store.cancel(job_id) == "cancelled" and store.delete_job(job_id, "t") == "deleted"
    finally:
        store.engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    # WAL: the worker writes metrics while the API reads, neither waiting on the other.
    store = open_store(f"sqlite:///{tmp_path / 'wal.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.engine.dispose()


def test_the_duration_histogram_is_kept_as_jobs_finish(store: Repository) -> None:
    # /metrics reads job_durations (a row per status and bucket), which the transaction that
    # finishes a job updates: a worker's finish and the reaper's worker_lost alike. A job that
    # never started has no duration; a deleted job stays counted (a histogram only grows).
    from datetime import timedelta

    from service.store.repository import now
    from service.store.tables import jobs

    def started_ago(job_id: str, seconds: float) -> None:
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(started_at=now() - timedelta(seconds=seconds))
            )

    for seconds, status in ((2, "succeeded"), (40, "succeeded"), (4000, "failed")):
        job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
        assert store.claim(job_id, "w1", 30, 3)
        started_ago(job_id, seconds)
        assert store.finish(job_id, "w1", status)  # type: ignore[arg-type]
    lost = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.claim(lost, "w1", 0.1, 1)
    started_ago(lost, 3)
    time.sleep(0.2)
    store.reap(1, 3600)  # out of attempts: failed worker_lost, after ~3 s of running
    store.cancel(store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"])  # never started
    store.create_job(tenant="t", spec=SPEC, queue="cpu")  # queued: not counted
    assert store.delete_job(job_id, "t") == "deleted"
    histogram = store.job_duration_histogram((1, 5, 60, 3600, 4 * 3600))
    assert histogram["succeeded"][0] == [0, 1, 2, 2, 2] and histogram["succeeded"][1] == 2
    assert abs(histogram["succeeded"][2] - 42) < 1
    assert histogram["failed"][:2] == ([0, 1, 1, 1, 2], 2)
    assert "cancelled" not in histogram
    # Jobs by status: the deleted one (the 4000 s failure) is gone, the cancelled-while-queued
    # one counted.
    counts = store.job_status_counts()
    assert counts[("succeeded", "")] == 2 and counts[("failed", "")] == 1
    assert counts[("cancelled", "")] == 1 and counts[("queued", "cpu")] == 1, counts
    assert store.fail_queued(store.create_job(tenant="t", spec=SPEC, queue="gpu")["id"], {}) is None
    assert store.job_status_counts()[("failed", "")] == 2


def test_the_epoch_counter_counts_each_metrics_row_written(store: Repository) -> None:
    from datetime import timedelta

    from service.store.repository import now

    before = store.epochs_recorded()
    job_id = store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"]
    assert store.claim(job_id, "w1", 30, 3)
    for epoch in (1, 2, 3):
        assert store.record_epoch(job_id, "w1", {"epoch": epoch, "train_loss": 1.0})
    assert store.epochs_recorded() == before + 3
    assert store.epochs_recorded(since=now() - timedelta(seconds=60)) == 3
    assert store.epochs_recorded(since=now() + timedelta(seconds=1)) == 0


def test_delete_and_retention_on_both_backends(store: Repository) -> None:
    job_id = store.create_job(tenant="t", spec={"dataset": {"id": "ds-1"}}, queue="cpu")["id"]
    store.create_dataset(dataset_id="ds-1", tenant="t", name="d", task="classification", n_samples=10,
                         n_features=2, n_classes=2, image_shape=None, sha256="0" * 64, size_bytes=1)  # fmt: skip
    assert store.delete_job(job_id, "t") == "active" and store.delete_job(job_id, "other") == "missing"
    assert (
        store.delete_dataset("ds-1", "t") == "active" and store.delete_dataset("ds-1", "other") == "missing"
    )
    assert store.claim(job_id, "w1", 30, 3) is not None
    for epoch in range(1, 6):
        store.record_epoch(job_id, "w1", {"epoch": epoch})
        store.record_checkpoint(job_id, "w1", name=f"epoch-{epoch}", epoch=epoch, path=f"e{epoch}",
                                size_bytes=1, sha256="0" * 64, metrics={})  # fmt: skip
    store.record_checkpoint(
        job_id, "w1", name="best", epoch=2, path="b", size_bytes=1, sha256="0" * 64, metrics={}
    )
    assert store.prune_epoch_checkpoints(job_id, 2) == []  # still running: nothing goes
    assert store.delete_job(job_id, "t") == "active"
    store.finish(job_id, "w1", "succeeded", result={})
    assert store.prune_epoch_checkpoints(job_id, 2) == ["epoch-1", "epoch-2", "epoch-3"]
    assert [c["name"] for c in store.checkpoints(job_id)] == ["best", "epoch-4", "epoch-5"]
    assert store.delete_dataset("ds-1", "t") == "deleted" and store.get_dataset("ds-1") is None
    assert store.delete_job(job_id, "t") == "deleted"
    assert store.get_job(job_id) is None and store.metrics(job_id) == [] and store.checkpoints(job_id) == []
    assert store.delete_job(job_id, "t") == "missing"


def test_json_columns_decode_what_pythons_encoder_wrote() -> None:
    # orjson decodes the JSON columns; the NaN and Infinity that json.dumps writes (a diverged
    # epoch's loss, on SQLite) still read back, through the stdlib's decoder.
    import math

    from service.store.engine import json_loads

    assert json_loads(b'{"spec": {"epochs": 3}}') == {"spec": {"epochs": 3}}
    row = json_loads(json.dumps({"val_loss": float("nan"), "train_loss": float("inf")}))
    assert math.isnan(row["val_loss"]) and row["train_loss"] == math.inf


def test_a_submit_reads_its_key_and_the_tenants_active_work_in_one_statement(store: Repository) -> None:
    assert store.job_submit_state("t", None) == (None, 0)
    assert store.job_submit_state("t", "k") == (None, 0)
    keyed = store.create_job(tenant="t", spec=SPEC, queue="cpu", idempotency_key="k", request_sha256="h")
    assert [h["status"] for h in keyed.pop("history")] == ["queued"]
    store.create_job(tenant="t", spec=SPEC, queue="cpu")
    store.cancel(store.create_job(tenant="t", spec=SPEC, queue="cpu")["id"])  # not active
    store.create_job(tenant="other", spec=SPEC, queue="cpu", idempotency_key="k")  # another tenant's
    existing, active = store.job_submit_state("t", "k")
    assert existing == store.get_job(keyed["id"]) and active == 2
    # the count is the tenant's, not correlated to the keyed row: the same with no row under the key
    assert store.job_submit_state("t", "other-key") == (None, 2)
    assert store.job_submit_state("t", None) == (None, 2) and store.active_work("t") == 2
