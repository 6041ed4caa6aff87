"""The other targets of issue 21, which `python -m bench.peers --all` measures in the same run.

- A pruned search against a 64-point grid on the same space, over HTTP on `regtrain up`:
  bench/search.py's problem (digits, MLP 64-32-10, Adam, 5-fold CV, its GRID and SPACE), TPE +
  ASHA (grace 2, factor 3), 32 trials; each timed from the sweep's created_at to its last trial's
  end (the search alone: the retrain, the same one job for both, is left out).
- An 8-trial, 4-fold CV grid on two workers against one (bench/fleet.py's real worker processes,
  1 torch thread each on 2 cores against one worker with 2, and against one worker with 1), the
  sweep's `parallel` left to regtrain so that it may split the work over the workers it sees.
- The CPU engine against the hand-written DataLoader loop per epoch (bench/engine.py: MLP
  784-128-10, batch 64, each in a process of its own).
"""

from __future__ import annotations

import os
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


def fleet_two_vs_one(epochs: int = GRID_EPOCHS) -> dict[str, Any]:
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
    one = fleet.run(1, cores, doc)
    # one worker with the threads each of the two gets: what the fleet alone buys, apart from how
    # torch scales with threads (bench/fleet.py's second ratio)
    one_half = fleet.run(1, half, doc)
    two = fleet.run(2, half, doc)
    return {
        "one": one,
        "one_half_threads": one_half,
        "two": two,
        "ratio": two["seconds"] / one["seconds"],
        "ratio_same_threads": two["seconds"] / one_half["seconds"],
    }


def engine_vs_hand(batch: int = 64) -> dict[str, Any]:
    hand = engine.measure("hand", "cpu", batch)
    eng = engine.measure("engine", "cpu", batch)
    return {
        "hand_s": hand["seconds"],
        "engine_s": eng["seconds"],
        "speedup": hand["seconds"] / eng["seconds"],
    }
