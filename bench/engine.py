"""The engine against the loop a user writes by hand, on the tutorial's workload.

MLP 784-128-10, dropout 0.5, L1 1e-5 + L2 1e-4 over both weight matrices (L2 as a true sum of
squares), SGD lr 0.01, 60,000 synthetic samples, one epoch. The hand loop is the tutorial's
DataLoader loop; the engine runs its ordinary epoch (shuffle by index, penalties folded into the
gradient, metrics and the generalization-gap evaluation included). Each variant runs in its own
process so that its peak memory is its own.

Usage: python -m bench.engine [--device cpu|cuda] [--batch 64,512] [--samples N] [--repeat K]
                              [--json PATH]

--samples trains on the first N samples (a shorter run on a busy machine); --repeat runs the
variants K times, interleaved, and reports each one's median (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import workload
from bench.workload import L1, L2, LR, D, H, K, N


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_hand(device: str, batch: int) -> float:
    """The tutorial's loop, with L2 made a true sum of squares over every weight matrix."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    X, y = workload.tensors()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Dropout(0.5), nn.Linear(H, K)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    crit = nn.CrossEntropyLoss()
    dl = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True)

    def penalty() -> torch.Tensor:
        ws = [p for name, p in model.named_parameters() if name.endswith("weight")]
        return L1 * sum(w.abs().sum() for w in ws) + L2 * sum(w.pow(2).sum() for w in ws)

    def epoch() -> None:
        model.train()
        for xb, yb in dl:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad()
            loss = crit(model(xb), yb) + penalty()
            loss.backward()
            opt.step()

    epoch()  # warm-up
    _sync(device)
    t = time.perf_counter()
    epoch()
    _sync(device)
    return time.perf_counter() - t


def run_engine(device: str, batch: int) -> float:
    """Two epochs through worker.training.loop.fit; the second epoch's wall time."""
    from worker.training.loop import Callbacks, fit

    rows: list[dict[str, Any]] = []
    fit(workload.spec(batch, device, 2), workload.prepared(), None, Callbacks(on_epoch=rows.append))
    return float(rows[-1]["seconds"])


def _child(variant: str, device: str, batch: int, samples: int) -> None:
    import torch

    workload.N = samples

    if variant == "engine-eager":  # the engine without CUDA graphs, to show what they add
        os.environ["REGTRAIN_CUDA_GRAPHS"] = "0"

    seconds = (run_hand if variant == "hand" else run_engine)(device, batch)
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def measure(variant: str, device: str, batch: int, samples: int = N) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "bench.engine",
        "--child",
        variant,
        "--device",
        device,
        "--batch",
        str(batch),
        "--samples",
        str(samples),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _interleaved(
    variants: tuple[str, ...], device: str, batch: int, samples: int, repeat: int
) -> list[dict[str, float]]:
    """Each variant `repeat` times, in turns; per variant the median seconds and peak bytes."""
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(repeat):
        for v in variants:
            runs[v].append(measure(v, device, batch, samples))
    return [{k: statistics.median(r[k] for r in runs[v]) for k in runs[v][0]} for v in variants]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="64")
    ap.add_argument("--child", choices=["hand", "engine", "engine-eager"])
    ap.add_argument("--samples", type=int, default=N)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.device, int(args.batch), args.samples)
        return {}
    n = args.samples
    results: dict[str, Any] = {"device": args.device, "samples": n, "runs": []}
    print(
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {n} samples, median of {args.repeat}"
    )
    print(
        f"{'device':6} {'batch':>5} {'hand s/epoch':>12} {'engine s/epoch':>14} {'speedup':>8} {'hand MB':>8} {'engine MB':>9} {'mem ratio':>9}"
    )
    for batch in (int(b) for b in args.batch.split(",")):
        hand, eng = _interleaved(("hand", "engine"), args.device, batch, n, args.repeat)
        run = {
            "batch": batch,
            "hand_s": hand["seconds"],
            "engine_s": eng["seconds"],
            "hand_samples_per_s": n / hand["seconds"],
            "engine_samples_per_s": n / eng["seconds"],
            "speedup": hand["seconds"] / eng["seconds"],
            "hand_peak_bytes": hand["peak_bytes"],
            "engine_peak_bytes": eng["peak_bytes"],
            "memory_ratio": eng["peak_bytes"] / hand["peak_bytes"],
        }
        if args.device == "cuda":
            eager = measure("engine-eager", args.device, batch, n)
            run["engine_eager_s"] = eager["seconds"]
            run["engine_eager_speedup"] = hand["seconds"] / eager["seconds"]
        results["runs"].append(run)
        print(
            f"{args.device:6} {batch:5d} {run['hand_s']:12.3f} {run['engine_s']:14.3f} {run['speedup']:7.2f}x "
            f"{hand['peak_bytes'] / 2**20:8.0f} {eng['peak_bytes'] / 2**20:9.0f} {run['memory_ratio']:9.2f}"
            + (
                f" {run['engine_eager_s']:13.3f} {run['engine_eager_speedup']:12.2f}x"
                if "engine_eager_s" in run
                else ""
            )
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
