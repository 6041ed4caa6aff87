"""Optuna's tables on a new database, made by several workers at the same moment: every one of
them gets its storage (worker/search.py storage, under store/migrate.py schema_lock). Optuna
creates its tables on first use with no lock of its own; without ours, two workers starting
together on a new PostgreSQL database raced to CREATE TYPE studydirection and one's warm-up
failed with a UniqueViolation (seen in a loaded run of the suite). Real processes, started
together behind a barrier, on a fresh PostgreSQL database and on a SQLite file."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import optuna

PROCESSES = 4


def _make_storage(url: str, barrier: Any, out: Any) -> None:
    from worker.search import storage

    barrier.wait(timeout=60)
    try:
        storage(url)
        out.put("ok")
    except Exception as e:  # reported to the test, which names it
        out.put(f"{type(e).__name__}: {e}")


def _race(url: str) -> list[str]:
    ctx = mp.get_context("spawn")  # a fresh interpreter each, as separate workers are
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_make_storage, args=(url, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        return sorted(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def test_workers_making_optunas_tables_together_on_postgresql_all_get_them(own_pg_url: str) -> None:
    assert _race(own_pg_url) == ["ok"] * PROCESSES
    optuna.create_study(storage=own_pg_url, study_name="after")  # and the schema is whole


def test_workers_making_optunas_tables_together_on_sqlite_all_get_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert _race(url) == ["ok"] * PROCESSES
    optuna.create_study(storage=url, study_name="after")
