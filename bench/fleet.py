"""One worker against two on one CPU sweep: the sweep's units spread over real `regtrain worker`
processes (Celery, solo pool) on the embedded backend (SQLite and the file broker in a fresh data
dir per run), each worker computing with cores / workers torch threads
(REGTRAIN_TORCH_THREADS) so that the two share the cores rather than fight over them.

The sweep: digits, an MLP 64-128-128-10 with adam, a grid of `--trials` L2 values, `--folds`-fold
CV, `--epochs` epochs, `--unit` trials per unit. Timed from the sweep's submission until every
trial has ended (the best trial's retrain, one job on one worker either way, is left out), with
the workers started and ready before. Prints the ratio of two workers' time to one's (one on
every core), and to one worker's with the threads each of the two gets (what the fleet alone
buys, apart from how torch scales with threads).

Usage: python -m bench.fleet [--trials 16] [--unit 2] [--epochs 8] [--folds 2] [--cores N] [--fight]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 120
RUN_TIMEOUT_S = 900


def _sweep(trials: int, unit: int, epochs: int, folds: int) -> dict[str, Any]:
    return {
        "name": "bench-fleet",
        "base": {
            "dataset": {"name": "digits"},
            "model": {"type": "mlp", "hidden": [128, 128]},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": epochs, "batch_size": 32, "seed": 0, "device": "cpu"},
        },
        "grid": {
            "regularization.l2": [round(10 ** (-6 + 5 * i / max(trials - 1, 1)), 8) for i in range(trials)]
        },
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "cv_folds": folds,
        "parallel": unit,
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """End every worker this run started, with its process group: SIGTERM, then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run(workers: int, threads: int, doc: dict[str, Any]) -> dict[str, Any]:
    from service.contract.sweep_spec import SweepSpec
    from service.queue.broker import Broker
    from service.settings import Settings
    from service.store import open_store
    from service.store.repository import TRIAL_FINISHED
    from service.submission import sweeps

    with tempfile.TemporaryDirectory(prefix="regtrain-bench-fleet-") as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data)
        store = open_store(settings.store_url)  # migrated here, before the workers start
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
        env.update(
            REGTRAIN_DATA_DIR=str(data),
            REGTRAIN_TORCH_THREADS=str(threads),
            OMP_NUM_THREADS=str(threads),
            PYTHONUNBUFFERED="1",
        )
        procs: list[subprocess.Popen[bytes]] = []
        logs = [data / f"worker{i}.log" for i in range(workers)]
        try:
            for log in logs:
                with open(log, "wb") as out:
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "service.cli",
                                "worker",
                                "--queues",
                                "cpu",
                                "--loglevel",
                                "info",
                            ],
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not all(" ready." in log.read_text(errors="replace") for log in logs):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(
                        "a worker did not get ready:\n" + "\n".join(x.read_text()[-2000:] for x in logs)
                    )
                time.sleep(0.2)
            sweep = SweepSpec.model_validate(doc)
            checked = sweeps.check_sweep(sweep, store, "default", settings)
            cpu0 = _cpu_seconds({p.pid for p in procs})
            t0 = time.perf_counter()
            row = sweeps.submit(checked, store, Broker(settings), "default", settings)
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while True:
                rows = store.trials([row["id"]])[row["id"]]
                if all(r["status"] in TRIAL_FINISHED for r in rows):
                    seconds = time.perf_counter() - t0
                    cpu = _cpu_seconds({p.pid for p in procs}) - cpu0
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the sweep did not end in {RUN_TIMEOUT_S} s")
                time.sleep(0.1)
            statuses = sorted({r["status"] for r in rows})
            timeline = _timeline(store, row["id"], rows)
            # the units' workers: a trial whose folds were split over units names only the
            # worker of its last part
            workers_seen = {u["worker"] for u in timeline["units"] if u["worker"] is not None}
        finally:
            _stop(procs)
    return {
        "workers": workers,
        "torch_threads": threads,
        "seconds": seconds,
        # what the workers computed meanwhile, over all their processes: less noisy than the
        # wall time on a machine others use too (a split that trains fewer steps costs less)
        "cpu_seconds": cpu,
        "workers_that_trained": len(workers_seen),
        "trial_statuses": statuses,
        "timeline": timeline,
    }


def _cpu_seconds(groups: set[int]) -> float:
    """CPU seconds (user + system) of every process in these process groups, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _timeline(store: Any, sweep_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the time went, in seconds from the sweep's created_at (the server's clock): when
    its coordinator claimed it, and each unit's and trial's start and end, with its worker."""
    from service.store.sweep_units import SweepUnits

    sweep = store.get_sweep(sweep_id) or {}
    t0 = sweep["created_at"]

    def at(t: Any) -> float | None:
        return None if t is None else round((t - t0).total_seconds(), 3)

    units = SweepUnits(store.engine).of([sweep_id])[sweep_id]
    names = sorted({u["worker"] for u in units if u["worker"]} | {r["worker"] for r in rows if r["worker"]})
    return {
        "sweep_started": at(sweep.get("started_at")),
        "units": [
            {
                "unit": u["unit_index"],
                "worker": names.index(u["worker"]) if u["worker"] else None,
                "trials": u["trials"],
                "folds": u["folds"],
                "started": at(u["started_at"]),
                "ended": at(u["finished_at"]),
            }
            for u in units
        ],
        "trials": [
            {
                "trial": r["trial_index"],
                "unit": r["unit"],
                "started": at(r["started_at"]),
                "ended": at(r["finished_at"]),
            }
            for r in sorted(rows, key=lambda r: r["trial_index"])
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--unit", type=int, default=2, help="trials per unit (the sweep's `parallel`)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the workers share")
    ap.add_argument("--fight", action="store_true", help="also two workers with every core's threads each")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    doc = _sweep(args.trials, args.unit, args.epochs, args.folds)
    half = max(1, args.cores // 2)
    runs = {
        "one": run(1, args.cores, doc),  # the baseline: one worker on every core
        "one_half_threads": run(1, half, doc),  # one worker with the threads each of two gets
        "two": run(2, half, doc),
    }
    if args.fight:  # two workers that each take every core, as torch does when left alone
        runs["two_fighting"] = run(2, args.cores, doc)
    out = {
        "sweep": doc,
        "cores": args.cores,
        **runs,
        "ratio": runs["two"]["seconds"] / runs["one"]["seconds"],
        "ratio_same_threads": runs["two"]["seconds"] / runs["one_half_threads"]["seconds"],
    }
    print(f"{'':10} {'torch threads':>13} {'seconds':>8} {'workers that trained':>21}")
    for r in runs.values():
        print(f"{r['workers']} worker{'s' if r['workers'] > 1 else ' '}  {r['torch_threads']:>13} "
              f"{r['seconds']:>8.1f} {r['workers_that_trained']:>21}")  # fmt: skip
    print(f"two workers / one: {out['ratio']:.2f}× the time; against one worker with {half} threads: "
          f"{out['ratio_same_threads']:.2f}× ({args.trials} trials, {args.folds} folds, {args.epochs} epochs, "
          f"{args.unit} trials per unit, {args.cores} cores)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
