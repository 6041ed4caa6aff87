"""A vectorized sweep against the same trials trained one by one, through the engine.

The tutorial's workload (MLP 784-128-10, dropout 0.5, SGD lr 0.01, 60,000 synthetic samples,
batch 64) with N values of L2 from 1e-5 to 1e-1: one epoch of every trial, trained one after
another with the engine's fit() (its fastest single-model path on the device: CUDA graphs on a
GPU), against one epoch of the stacked group. Both include the engine's per-epoch evaluation.

Usage: python -m bench.sweep [--device cpu|cuda] [--trials 16] [--batch 64] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench import workload


def _specs(n_trials: int, batch: int, device: str, epochs: int) -> list[Any]:
    return [
        workload.spec(batch, device, epochs, l1=0.0, l2=float(l2)) for l2 in np.logspace(-5, -1, n_trials)
    ]


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run(device: str, n_trials: int, batch: int) -> dict[str, Any]:
    from worker.training.loop import fit
    from worker.training.stacked import StackedTrainer

    data = workload.prepared()
    specs = _specs(n_trials, batch, device, 1)
    fit(specs[0], data, None)  # warm-up: allocator, kernels, CUDA graph pools
    _sync(device)
    t = time.perf_counter()
    for spec in specs:
        fit(spec, data, None)
    _sync(device)
    one_by_one = time.perf_counter() - t

    StackedTrainer(specs[:2], data).fit()  # warm-up
    _sync(device)
    t = time.perf_counter()
    StackedTrainer(specs, data).fit()
    _sync(device)
    stacked = time.perf_counter() - t
    samples = 60_000 * n_trials
    return {
        "device": device,
        "trials": n_trials,
        "batch": batch,
        "one_by_one_s": one_by_one,
        "stacked_s": stacked,
        "one_by_one_trial_samples_per_s": samples / one_by_one,
        "stacked_trial_samples_per_s": samples / stacked,
        "speedup": one_by_one / stacked,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trials", default="16", help="comma-separated trial counts")
    ap.add_argument("--batch", default="64", help="comma-separated batch sizes")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    print(
        f"{'device':6} {'trials':>6} {'batch':>5} {'one by one s':>12} {'stacked s':>9} {'trial-samples/s':>15} {'speedup':>8}"
    )
    results = []
    for batch in (int(b) for b in args.batch.split(",")):
        for n in (int(t) for t in args.trials.split(",")):
            r = run(args.device, n, batch)
            results.append(r)
            print(
                f"{r['device']:6} {n:6d} {batch:5d} {r['one_by_one_s']:12.2f} {r['stacked_s']:9.2f} "
                f"{r['stacked_trial_samples_per_s']:15,.0f} {r['speedup']:7.2f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
