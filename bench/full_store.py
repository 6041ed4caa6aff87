"""What a full store costs: the API's reads on a store with 100,000 finished jobs (and their
history and metrics rows) against the same reads on a nearly empty one, in the same run.

1. Start two APIs (no worker), each on a fresh store; in each, submit 60 jobs and finish them
   through the store as a worker would.
2. Bulk-insert --jobs finished jobs with SQL (not via the API) into the second store, each
   with three history rows and --epochs metrics rows.
3. Measure GET /v1/jobs/{id}, GET /v1/jobs?limit=50 and GET /metrics on both (requests per
   second with wrk -t1 -c8 where installed, else Python clients), the two stores taking turns,
   --rounds times; print each cost ratio full / empty (the medians' 1/rps) against its target,
   and the query plans (EXPLAIN) of the statements those routes run on the full store.

Usage: python -m bench.full_store [--fleet] [--jobs 100000] [--epochs 5] [--seconds 3] [--rounds 3]
       [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.live import Live, live
from bench.service import _rps

TARGETS = {"job": 1.5, "list": 1.5, "metrics": 2.0}
SPEC = {
    "name": "bulk",
    "dataset": {"name": "iris"},
    "model": {"type": "mlp", "hidden": [8]},
    "training": {"epochs": 5, "batch_size": 32, "seed": 0, "device": "cpu", "checkpoint_every": 0},
}


def _finish_some(store_url: str, n: int) -> str:
    """n jobs submitted and finished through the store's own lifecycle; the newest id."""
    from service.store import open_store

    store = open_store(store_url, migrate_schema=False)
    job_id = ""
    for i in range(n):
        job_id = store.create_job(tenant="default", spec=SPEC, queue="cpu")["id"]
        assert store.claim(job_id, "bench", 60, 3)
        for epoch in (1, 2):
            store.record_epoch(job_id, "bench", {"epoch": epoch, "train_loss": 1.0 / epoch})
        store.finish(job_id, "bench", "succeeded" if i % 5 else "failed", result={"metrics": {}})
    store.engine.dispose()
    return job_id


def bulk_insert(store_url: str, jobs_n: int, epochs: int, batch: int = 5000) -> float:
    """Insert jobs_n finished jobs (three history rows, `epochs` metrics rows each) with SQL,
    and count them as their finishes would have (job_counts); the seconds it took. Older than
    every job the API made, as a store's history is."""
    from service.store import job_counts
    from service.store.engine import make_engine
    from service.store.tables import job_history, job_metrics, jobs, store_counters

    engine = make_engine(store_url)
    t0 = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    # What the finishes would have counted (job_counts): by status, and each duration's bucket.
    by_status: Counter[str] = Counter()
    durations: Counter[tuple[str, float]] = Counter()
    seconds_in: Counter[tuple[str, float]] = Counter()
    with engine.begin() as conn:
        for start in range(0, jobs_n, batch):
            job_rows, hist_rows, metric_rows = [], [], []
            for i in range(start, min(start + batch, jobs_n)):
                job_id = uuid.uuid4().hex
                created = base + timedelta(seconds=i)
                started, finished = created + timedelta(seconds=1), created + timedelta(seconds=2 + i % 4000)
                status = ("succeeded", "failed", "cancelled")[i % 3]
                seconds = (finished - started).total_seconds()
                key = (status, job_counts.bucket(seconds))
                by_status[status] += 1
                durations[key] += 1
                seconds_in[key] += seconds
                job_rows.append(
                    {
                        "id": job_id,
                        "tenant": "default",
                        "name": "bulk",
                        "spec": SPEC,
                        "queue": "cpu",
                        "status": status,
                        "created_at": created,
                        "started_at": started,
                        "finished_at": finished,
                        "attempts": 1,
                        "cancel_requested": False,
                        "progress_epoch": epochs,
                        "latest_metrics": {"epoch": epochs, "train_loss": 0.5},
                        "result": {"metrics": {"test_accuracy": 0.9}},
                    }
                )
                for s, at in (("queued", created), ("running", started), (status, finished)):
                    hist_rows.append({"job_id": job_id, "status": s, "at": at, "attempt": 1})
                for epoch in range(1, epochs + 1):
                    metric_rows.append(
                        {
                            "job_id": job_id,
                            "epoch": epoch,
                            "row": {"epoch": epoch, "train_loss": 0.5},
                            "at": finished,
                        }
                    )
            conn.execute(jobs.insert(), job_rows)
            conn.execute(job_history.insert(), hist_rows)
            conn.execute(job_metrics.insert(), metric_rows)
        for (status, le), n in durations.items():
            job_counts.add_durations(conn, status, le, n, seconds_in[(status, le)])
        for status, n in by_status.items():
            conn.execute(
                store_counters.update()
                .where(store_counters.c.name == f"jobs:{status}")
                .values(value=store_counters.c.value + n)
            )
        conn.execute(
            store_counters.update()
            .where(store_counters.c.name == job_counts.EPOCHS)
            .values(value=store_counters.c.value + jobs_n * epochs)
        )
    _after_bulk_insert(engine)
    engine.dispose()
    return time.perf_counter() - t0


def _after_bulk_insert(engine: sa.Engine) -> None:
    """What a database does on its own after a large load (autovacuum's ANALYZE; SQLite's
    ANALYZE is what its planner reads), done at once so the plans are those of a settled store."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


PATHS = {"job": "/v1/jobs/{id}", "list": "/v1/jobs?limit=50", "metrics": "/metrics"}


def measure(stores: dict[str, tuple[Live, str]], seconds: float, rounds: int) -> dict[str, dict[str, float]]:
    """Median requests per second of each route on each store, the stores taking turns, so
    that a neighbour's load on the machine falls on both alike."""
    for svc, job_id in stores.values():
        with httpx.Client(base_url=svc.url, timeout=30) as http:
            for path in PATHS.values():  # warm: every statement compiled and cached
                http.get(path.format(id=job_id)).raise_for_status()
    runs: dict[str, dict[str, list[float]]] = {side: {name: [] for name in PATHS} for side in stores}
    for _ in range(rounds):
        for name, path in PATHS.items():
            for side, (svc, job_id) in stores.items():
                runs[side][name].append(_rps(svc.url, path.format(id=job_id), seconds, connections=8))
    return {side: {name: statistics.median(v) for name, v in by.items()} for side, by in runs.items()}


def plans(store_url: str) -> dict[str, list[str]]:
    """EXPLAIN of the statements behind the three routes, as the store compiles them."""
    from service.store import job_reads
    from service.store.engine import make_engine
    from service.store.job_counts import scrape_statements

    engine = make_engine(store_url)
    dialect = engine.dialect.name
    statements: dict[str, sa.Executable] = {
        "job": job_reads.by_id(dialect, tenant=True),
        "list": job_reads.page(dialect, "default", status=None, limit=51, before_seq=None),
        **{f"metrics: {name}": stmt for name, stmt in scrape_statements(dialect).items()},
    }
    out: dict[str, list[str]] = {}
    explain = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        for name, stmt in statements.items():
            compiled = stmt.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
            values = {"job_id": "x", "tenant": "default", "since": datetime.now(UTC).replace(tzinfo=None)}
            params = {**compiled.params, **{k: v for k, v in values.items() if k in compiled.params}}
            rows = conn.exec_driver_sql(explain + str(compiled), _driver_params(compiled, params)).all()
            out[name] = [" ".join(str(c) for c in r) for r in rows]
    engine.dispose()
    return out


def _driver_params(compiled: sa.engine.Compiled, params: dict[str, Any]) -> Any:
    """The compiled statement's parameters in the driver's style (positional on SQLite)."""
    if compiled.positiontup is not None:
        return tuple(params[name] for name in compiled.positiontup)
    return params


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet", action="store_true", help="PostgreSQL (+ Redis) instead of SQLite")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=5, help="metrics rows per bulk job")
    ap.add_argument("--seconds", type=float, default=3.0, help="per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="runs per route and store (the median counts)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"backend": "postgresql" if args.fleet else "sqlite", "jobs": args.jobs}
    with live(args.fleet, workers=0) as empty, live(args.fleet, workers=0) as full:
        stores = {}
        for side, svc in (("empty", empty), ("full", full)):
            url = svc.env.get("REGTRAIN_DATABASE_URL") or f"sqlite:///{svc.root / 'data' / 'regtrain.db'}"
            stores[side] = (svc, _finish_some(url, 60))
        full_url = full.env.get("REGTRAIN_DATABASE_URL") or f"sqlite:///{full.root / 'data' / 'regtrain.db'}"
        out["insert_s"] = round(bulk_insert(full_url, args.jobs, args.epochs), 1)
        rps = measure(stores, args.seconds, args.rounds)
        out["empty_rps"], out["full_rps"] = rps["empty"], rps["full"]
        out["plans"] = plans(full_url)
    out["cost_ratio"] = {k: out["empty_rps"][k] / out["full_rps"][k] for k in TARGETS}
    print(f"backend {out['backend']}: {args.jobs:,} finished jobs inserted in {out['insert_s']} s")
    for name, target in TARGETS.items():
        print(
            f"  {name:8} empty {out['empty_rps'][name]:7.0f} req/s   full {out['full_rps'][name]:7.0f} req/s"
            f"   cost full/empty {out['cost_ratio'][name]:.2f}  (target ≤ {target})"
        )
    for name, lines in out["plans"].items():
        print(f"  plan of {name}:")
        for line in lines:
            print(f"      {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
