"""TPE + ASHA against a 64-point grid: the best 5-fold CV score each finds, and the trial-epochs
each trains, through the worker's own code paths (worker/search.py's ask/tell with the study in
a SQLite store, the engine's stacked trials) without Celery.

The problem: digits, an MLP 64-32-10 with adam, 5-fold CV, `--epochs` epochs, objective the
folds' mean val_accuracy. The grid is l2 × lr (4 values each) × dropout × l1 (2 each); the search
space spans the same ranges (log scales for l1, l2 and lr), `--trials` trials asked 8 at a
time, ASHA with a grace period of 2 epochs and a reduction factor of 3. A trial-epoch is one
epoch of one trial on one fold.

Usage: python -m bench.search [--epochs 10] [--trials 32] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

GRID = {
    "regularization.l2": [0.0, 1e-5, 1e-4, 1e-3],
    "optimizer.lr": [3e-4, 1e-3, 3e-3, 1e-2],
    "model.dropout": [0.0, 0.3],
    "regularization.l1": [0.0, 1e-5],
}
SPACE = {
    "regularization.l2": {"log_uniform": [1e-6, 1e-3]},
    "optimizer.lr": {"log_uniform": [3e-4, 1e-2]},
    "model.dropout": {"uniform": [0.0, 0.3]},
    "regularization.l1": {"log_uniform": [1e-7, 1e-5]},
}


def _base(epochs: int, device: str) -> dict[str, Any]:
    return {
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden": [32]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "training": {"epochs": epochs, "batch_size": 64, "seed": 0, "device": device},
    }


def _run(sweep_doc: dict[str, Any], store_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    from service.contract.sweep_spec import SweepSpec, expand
    from service.store import open_store
    from worker.training.sweep import SweepCallbacks, run_sweep

    sweep = SweepSpec.model_validate(sweep_doc)
    url = f"sqlite:///{store_dir / 'regtrain.db'}"
    store = open_store(url)
    row = store.create_sweep(tenant="bench", spec=sweep.model_dump(mode="json"), queue="cpu", trials=[])
    assert store.claim_sweep(row["id"], "bench", 3600, 3) is not None
    t0 = time.perf_counter()
    if sweep.space is not None:
        from worker.search import run_search

        run_search(sweep, row["id"], "bench", store, url, lambda: False, None)
        trials = store.trials([row["id"]])[row["id"]]
    else:
        out = run_sweep(sweep, expand(sweep, None, 10**9), callbacks=SweepCallbacks())
        trials = [
            {"status": o.status, "score": o.score, "epochs_trained": o.epochs_trained, "params": o.params}
            for o in out.trials
        ]
    seconds = time.perf_counter() - t0
    return row, trials, seconds


def run(epochs: int, trials: int, device: str) -> dict[str, Any]:
    objective = {"metric": "val_accuracy", "mode": "max"}
    with tempfile.TemporaryDirectory() as tmp:
        _, grid_trials, grid_s = _run(
            {"base": _base(epochs, device), "grid": GRID, "objective": objective, "cv_folds": 5}, Path(tmp)
        )
    with tempfile.TemporaryDirectory() as tmp:
        _, search_trials, search_s = _run(
            {
                "base": _base(epochs, device),
                "space": SPACE,
                "sampler": "tpe",
                "trials": trials,
                "parallel": 8,
                "pruner": {"type": "asha", "grace_epochs": 2, "reduction_factor": 3, "min_trials": 4},
                "objective": objective,
                "cv_folds": 5,
            },
            Path(tmp),
        )

    def best(ts: list[dict[str, Any]]) -> dict[str, Any]:
        return max((t for t in ts if t["status"] == "succeeded"), key=lambda t: t["score"])

    grid_epochs = sum(t["epochs_trained"] for t in grid_trials)
    search_epochs = sum(t["epochs_trained"] or 0 for t in search_trials)
    gb, sb = best(grid_trials), best(search_trials)
    return {
        "device": device,
        "epochs": epochs,
        "grid_trials": len(grid_trials),
        "grid_best_cv_accuracy": gb["score"],
        "grid_best_params": gb["params"],
        "grid_trial_epochs": grid_epochs,
        "grid_seconds": grid_s,
        "search_trials": len(search_trials),
        "search_pruned": sum(t["status"] == "pruned" for t in search_trials),
        "search_best_cv_accuracy": sb["score"],
        "search_best_params": sb["params"],
        "search_trial_epochs": search_epochs,
        "search_seconds": search_s,
        "difference_points": 100 * (sb["score"] - gb["score"]),
        "trial_epochs_ratio": search_epochs / grid_epochs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    r = run(args.epochs, args.trials, args.device)
    print(f"{'':22} {'best 5-fold CV acc':>18} {'trial-epochs':>12} {'seconds':>8}")
    print(
        f"{'grid (' + str(r['grid_trials']) + ' points)':22} {r['grid_best_cv_accuracy']:18.4f} "
        f"{r['grid_trial_epochs']:12d} {r['grid_seconds']:8.1f}"
    )
    print(
        f"{'TPE + ASHA (' + str(r['search_trials']) + ' trials)':22} {r['search_best_cv_accuracy']:18.4f} "
        f"{r['search_trial_epochs']:12d} {r['search_seconds']:8.1f}"
    )
    print(
        f"difference {r['difference_points']:+.2f} points; trial-epochs ratio {r['trial_epochs_ratio']:.2f}; "
        f"{r['search_pruned']} of {r['search_trials']} trials pruned"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == "__main__":
    main()
