"""What the API reads to render a document: the rows behind it, fetched in one query per kind for
a whole page (histories, trials, units, retrain jobs), then rendered by service.contract.documents."""

from __future__ import annotations

from typing import Any

from service.contract.documents import Row, job_document, sweep_document
from service.store import Repository
from service.store.sweep_units import SweepUnits


def job_documents(store: Repository, rows: list[Row]) -> list[dict[str, Any]]:
    """Rows that hold their `history` already (a job just created, a page of jobs) are rendered
    without reading it again."""
    histories = store.histories([r["id"] for r in rows if "history" not in r])
    return [job_document(r, r["history"] if "history" in r else histories[r["id"]]) for r in rows]


def sweep_documents(
    store: Repository, rows: list[Row], storage_url: str | None = None
) -> list[dict[str, Any]]:
    """The sweeps' documents; a sweep waiting for its retrain job is settled first (the job may
    have ended where no one told the sweep: failed by the reaper, cancelled)."""
    rows = [_settled(store, r) for r in rows]
    trials = store.trials([r["id"] for r in rows])
    units = SweepUnits(store.engine).of([r["id"] for r in rows])
    jobs = {r["id"]: store.get_job(r["best_job_id"]) if r["best_job_id"] else None for r in rows}
    return [sweep_document(r, trials[r["id"]], jobs[r["id"]], storage_url, units[r["id"]]) for r in rows]


def _settled(store: Repository, row: Row) -> Row:
    waiting = row["status"] == "running" and row["lease_owner"] is None and row["best_job_id"]
    if waiting and store.settle_sweep(row["id"]) is not None:
        return store.get_sweep(row["id"]) or row
    return row
