"""The other targets of issue 21, which `python -m bench.peers --all` measures in the same run.

- A pruned search against a 64-point grid on the same space, over HTTP on `regtrain up`:
  bench/search.py's problem (digits, MLP 64-32-10, Adam, 5-fold CV, its GRID and SPACE), TPE +
  ASHA (grace 2, factor 3), 32 trials; each timed from the sweep's created_at to its last trial's
  end (the search alone: the retrain, the same one job for both, is left out).
- An 8-trial, 4-fold CV grid on two workers against one (bench/fleet.py's real worker processes,
  1 torch thread each on 2 cores against one worker with 2, and against one worker with 1), the
  sweep's `parallel` left to regtrain so that it may split the work over the workers it sees;
  the three interleaved 3 times, each ratio the median of the turns' own ratios.
- The CPU engine against the hand-written DataLoader loop per epoch (bench/engine.py: MLP
  784-128-10, batch 64, each in a process of its own), interleaved 5 times, the speedup the
  median of the turns' own ratios.
"""

from __future__ import annotations

import os
import statistics
from datetime import datetime
from typing import Any

from bench import engine, fleet, search
from bench.peers_regtrain import service, wait_sweep

GRID_EPOCHS = 10


def _search_base(epochs: int) -> dict[str, Any]:
    return {
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden": [32]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": epochs, "batch_size": 64, "seed": 0, "device": "cpu"},
    }


def _search_seconds(doc: dict[str, Any]) -> float:
    """created_at → the last trial's end, by the server's clock."""
    t0 = datetime.fromisoformat(doc["created_at"])
    return max((datetime.fromisoformat(t["finished_at"]) - t0).total_seconds() for t in doc["trials"])


def pruned_vs_grid(epochs: int = GRID_EPOCHS, trials: int = 32) -> dict[str, Any]:
    objective = {"metric": "val_accuracy", "mode": "max"}
    grid = {"base": _search_base(epochs), "grid": search.GRID, "objective": objective, "cv_folds": 5}
    pruned = {
        "base": _search_base(epochs),
        "space": search.SPACE,
        "sampler": "tpe",
        "trials": trials,
        "pruner": {"type": "asha", "grace_epochs": 2, "reduction_factor": 3},
        "objective": objective,
        "cv_folds": 5,
    }
    out: dict[str, Any] = {}
    for name, doc in (("grid", grid), ("search", pruned)):
        with service() as http:
            r = http.post("/v1/sweeps", json=doc)
            r.raise_for_status()
            done = wait_sweep(http, r.json()["id"])
        if done["status"] != "succeeded":
            raise RuntimeError(f"the {name} sweep ended {done['status']}: {done.get('error')}")
        out[name] = {
            "seconds": _search_seconds(done),
            "best_cv": float(done["best"]["score"]),
            "trial_epochs": sum(t.get("epochs_trained") or 0 for t in done["trials"]),
            "trials": len(done["trials"]),
        }
    out["ratio"] = out["search"]["seconds"] / out["grid"]["seconds"]
    out["difference_points"] = 100 * (out["search"]["best_cv"] - out["grid"]["best_cv"])
    return out


def fleet_two_vs_one(epochs: int = GRID_EPOCHS, repeat: int = 3) -> dict[str, Any]:
    # bench/fleet.py's sweep, less its `parallel`: regtrain decides how to split the work
    doc = {
        "name": "bench-peers-fleet",
        "base": {
            "dataset": {"name": "digits"},
            "model": {"type": "mlp", "hidden": [128, 128]},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "training": {"epochs": epochs, "batch_size": 32, "seed": 0, "device": "cpu"},
        },
        "grid": {"regularization.l2": [round(10 ** (-6 + 5 * i / 7), 8) for i in range(8)]},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "cv_folds": 4,
    }
    cores = len(os.sched_getaffinity(0))
    half = max(1, cores // 2)
    # one worker on every core; one with the threads each of the two gets (what the fleet alone
    # buys, apart from how torch scales with threads: bench/fleet.py's second ratio); two.
    # Interleaved `repeat` times, each its median: single runs of one worker moved by 30%
    # between minutes on the 2-core VM (3.3 to 4.9 s with one thread)
    setups = {"one": (1, cores), "one_half_threads": (1, half), "two": (2, half)}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in setups}
    for _ in range(repeat):
        for key, (workers, threads) in setups.items():
            runs[key].append(fleet.run(workers, threads, doc))
    out: dict[str, Any] = {key: _median_run(rs) for key, rs in runs.items()}
    out["ratio"] = _pair_median(runs["two"], runs["one"])
    out["ratio_same_threads"] = _pair_median(runs["two"], runs["one_half_threads"])
    # what one worker gains from its second thread: two workers of one thread each can at best
    # halve one-thread time, so the first ratio cannot go below half of this
    out["thread_speedup"] = _pair_median(runs["one_half_threads"], runs["one"])
    out["ratio_of_medians"] = out["two"]["seconds"] / out["one"]["seconds"]
    return out


def _pair_median(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """The median of a[i] / b[i] over runs made in the same turn: the VM's speed drifts by tens
    of percent from minute to minute, and runs a minute apart share it where medians taken
    apart do not."""
    return statistics.median(x["seconds"] / y["seconds"] for x, y in zip(a, b, strict=True))


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (its own numbers, timeline included), with every run's
    seconds beside it."""
    ranked = sorted(runs, key=lambda r: r["seconds"])
    return {**ranked[len(ranked) // 2], "each_seconds": [round(r["seconds"], 2) for r in runs]}


def engine_vs_hand(batch: int = 64, repeat: int = 5) -> dict[str, Any]:
    """Hand loop then engine, `repeat` times; the speedup is the median of each turn's ratio
    (the hand loop alone read 1.64 to 2.28 s for the same epoch within two minutes: a ratio of
    two runs a few seconds apart shares the machine's speed, one of medians does not)."""
    hand, eng = [], []
    for _ in range(repeat):
        hand.append(engine.measure("hand", "cpu", batch)["seconds"])
        eng.append(engine.measure("engine", "cpu", batch)["seconds"])
    return {
        "hand_s": statistics.median(hand),
        "engine_s": statistics.median(eng),
        "speedup": statistics.median(h / e for h, e in zip(hand, eng, strict=True)),
        "speedup_of_medians": statistics.median(hand) / statistics.median(eng),
        "hand_each_s": [round(v, 3) for v in hand],
        "engine_each_s": [round(v, 3) for v in eng],
    }
