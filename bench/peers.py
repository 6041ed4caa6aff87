"""regtrain's search against its peers, on the same split, space and budget (issue 21, item 5).

Contestants, interleaved (A B C A B C … for --repeat), each in a process of its own:
- regtrain: `regtrain up` on the embedded default, POST /v1/sweeps (TPE over l1, l2, lr on log
  scales and dropout; ASHA grace 2, factor 3; objective val_accuracy), until `succeeded`: the best
  trial retrained on train + validation and tested (bench/peers_regtrain.py);
- a plain in-process Optuna script: TPE + SuccessiveHalvingPruner over a hand-written PyTorch loop
  (DataLoader over a TensorDataset, nn.Sequential MLP, Adam, L1/L2 added to the loss, dropout),
  one process, then its best retrained and tested (bench/peers_optuna.py, bench/peers_loop.py);
- Ray Tune: ASHA + OptunaSearch, one trial per core, the same loop in the trainable, then its best
  retrained (bench/peers_ray.py; skipped, saying so, where Ray is not installed:
  `pip install -e '.[peers]'`).

Problems (bench/peers_data.py): `digits` (MLP 64-128-10) and `mnist784` (5,000 rows of 784
features in 10 classes, generated like MNIST; MLP 784-128-10); batch 64, `--epochs` epochs.

Per contestant: wall time to the sweep's end and to the best trial (when its score was first
known), best validation accuracy, retrained test accuracy, trial-epochs (epochs trained, summed
over trials). The compute floor: this machine's matmul rate, measured in the same run right
before and after regtrain's turn, their mean (a 64×784 @ 784×128 product, the better of 1 thread
and torch's default; the floor at the rate of the run's start is printed too), turned into the
seconds regtrain's search trial-epochs need at that rate (forward + backward ≈ 3× the forward matmuls
over the train rows; the retrain left out). Every ratio is printed beside its issue-21
target, with the load average before and after each turn; a turn that began with the 1-minute
load above the core count is flagged void. --all adds the other targets (bench/peers_all.py), each
started, like every contestant's turn, once the 1-minute load has settled below 1 (at most
3 minutes' wait):
a pruned search against a 64-point grid, two workers against one, the engine against the hand loop.

Usage: python -m bench.peers [--problem digits|mnist784|both] [--trials 32] [--epochs 20]
                             [--repeat N] [--skip-ray] [--all [--grid-epochs 10]] [--timeline]
                             [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import peers_data, peers_ray, peers_regtrain
from bench.peers_outcome import Outcome, run_child

CORES = len(os.sched_getaffinity(0))  # the cores this process may run on (taskset counts)


@dataclass(frozen=True)
class Row:
    """One line of the closing table: a measured figure beside its target."""

    what: str
    case: str
    measured: float
    target: str
    ok: bool | None  # None: no target, shown for reference


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


SETTLE_LOAD = 1.0  # the 1-minute load an --all turn waits for (a core's worth of others' work)
SETTLE_S = 180.0


def _settled(label: str) -> tuple[float, float, float]:
    """The load once it has settled below SETTLE_LOAD, or after SETTLE_S: the --all turns follow
    Ray Tune's, whose processes leave the 1-minute load at 1.5-2 for a minute or two, and the
    engine and two-worker ratios moved by 0.3-0.4 between such runs."""
    t0 = time.monotonic()
    load = _load()
    while load[0] > SETTLE_LOAD and time.monotonic() - t0 < SETTLE_S:
        time.sleep(5)
        load = _load()
    if time.monotonic() - t0 >= 5:
        print(f"  waited {time.monotonic() - t0:.0f} s for the load to settle before {label}", flush=True)
    return load


def _warn_load(label: str, load: tuple[float, float, float]) -> None:
    if load[0] > CORES:
        print(f"  !! load {load[0]:.2f} > {CORES} cores at {label}: its figures are void")


def _turn(name: str, problem: str, trials: int, epochs: int) -> Outcome:
    args = ["--problem", problem, "--trials", str(trials), "--epochs", str(epochs)]
    # every turn starts on a settled machine: a turn right after Ray Tune's began at load 1.9
    # and read 10% slower than one begun at 0.7
    before = _settled(f"{name}'s turn")
    _warn_load(f"the start of {name}'s turn", before)
    if name == "regtrain":
        # the floor's matmul rate, measured around the turn it is the floor of: the VM's speed
        # drifts (118.5 GFLOPS at one run's start, 138.5 at the next's, 15 minutes apart)
        rate_before = best_gflops()[0]
        out = peers_regtrain.run(problem, trials, epochs)
        out.notes["gflops_around"] = (rate_before, best_gflops()[0])
    else:
        out = run_child("bench.peers_optuna" if name == "optuna script" else "bench.peers_ray", args)
    out.load_before, out.load_after = before, _load()
    aside = f"  (ray.init {out.notes['init_s']:.1f} s, not counted)" if "init_s" in out.notes else ""
    if "gflops_around" in out.notes:
        aside += "  (matmul {:.1f} → {:.1f} GFLOPS around it)".format(*out.notes["gflops_around"])
    print(
        f"  {name:14} wall {out.wall_s:7.2f} s  best at {out.best_at_s:7.2f} s  best val {out.best_val:.4f}  "
        f"test {out.test:.4f}  trial-epochs {out.trial_epochs:4d}  pruned {out.pruned}/{out.trials}  "
        f"load {out.load_before[0]:.2f} → {out.load_after[0]:.2f}{aside}",
        flush=True,
    )
    return out


def matmul_gflops(seconds: float = 1.0, threads: int | None = None) -> float:
    """This machine's rate on one 64×784 @ 784×128 product with `threads` torch threads
    (default: torch's own), in GFLOPS."""
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    try:
        x, w = torch.randn(64, 784), torch.randn(784, 128)
        out = torch.empty(64, 128)
        for _ in range(50):
            torch.mm(x, w, out=out)
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for _ in range(200):
                torch.mm(x, w, out=out)
            n += 200
        return 2 * 64 * 784 * 128 * n / (time.perf_counter() - t) / 1e9
    finally:
        torch.set_num_threads(default)


def best_gflops() -> tuple[float, dict[int, float]]:
    """The best of one thread and torch's default: the floor is a lower bound, and on a busy
    machine every extra thread can cost more than it brings (measured 3-9× slower with 2)."""
    import torch

    rates = {n: matmul_gflops(threads=n) for n in sorted({1, torch.get_num_threads()})}
    return max(rates.values()), rates


def floor_s(problem: str, trial_epochs: int, gflops: float) -> float:
    """The seconds `trial_epochs` epochs of the problem's MLP take at `gflops`."""
    p = peers_data.problem(problem)
    train_rows = len(peers_data.indices(p.y)[0])
    return trial_epochs * peers_data.train_flops_per_epoch(p, train_rows) / (gflops * 1e9)


def _median(outs: list[Outcome], field: Callable[[Outcome], float]) -> float:
    return statistics.median(field(o) for o in outs)


def peer_rows(problem: str, runs: dict[str, list[Outcome]], gflops: float) -> list[Row]:
    """The problem's ratios (medians over the repeats) beside their targets."""
    rt = runs["regtrain"]
    rows: list[Row] = []
    strict = problem == "mnist784"
    wall = {name: _median(outs, lambda o: o.wall_s) for name, outs in runs.items()}
    val = {name: _median(outs, lambda o: o.best_val) for name, outs in runs.items()}
    for peer, limit in (("optuna script", 0.5 if strict else 1.0), ("ray tune", 0.1)):
        if peer not in runs:
            continue
        ratio = wall["regtrain"] / wall[peer]
        has_target = strict or peer == "optuna script"
        rows.append(Row(f"regtrain / {peer}, wall time", problem, ratio, f"≤ {limit}" if has_target else "—",
                        ratio <= limit if has_target else None))  # fmt: skip
        diff = 100 * (val["regtrain"] - val[peer])
        rows.append(Row(f"regtrain − {peer}, best val (points)", problem, diff, "≥ −0.5" if strict else "—",
                        diff >= -0.5 if strict else None))  # fmt: skip
    around = [statistics.mean(o.notes["gflops_around"]) for o in rt if "gflops_around" in o.notes]
    epochs = round(_median(rt, lambda o: o.trial_epochs))
    floor = floor_s(problem, epochs, statistics.median(around) if around else gflops)
    ratio = wall["regtrain"] / floor
    rows.append(Row(f"regtrain / compute floor ({floor:.2f} s)", problem, ratio, "≤ 3" if strict else "—",
                    ratio <= 3 if strict else None))  # fmt: skip
    if around:  # beside it, the floor at the rate the run began with
        start = floor_s(problem, epochs, gflops)
        rows.append(
            Row(f"  … at the run's first rate ({start:.2f} s)", problem, wall["regtrain"] / start, "—", None)
        )
    # the floor counts the search's trial-epochs only: beside the wall (the target's reading),
    # the search alone, to its last trial's end, against the same arithmetic
    if all(o.search_s for o in rt):
        search = _median(rt, lambda o: o.search_s or 0.0) / floor
        rows.append(Row("regtrain's search alone (no retrain) / floor", problem, search, "—", None))
    return rows


def all_rows(extra: dict[str, Any]) -> list[Row]:
    g, f, e = extra["pruned_vs_grid"], extra["fleet"], extra["engine"]
    return [
        Row(
            "pruned search / 64-point grid, wall", "digits, 5-fold", g["ratio"], "≤ 0.35", g["ratio"] <= 0.35
        ),
        Row(
            "pruned − grid, best CV (points)",
            "digits, 5-fold",
            g["difference_points"],
            "≥ −0.5",
            g["difference_points"] >= -0.5,
        ),
        Row(
            "two workers / one, 8-trial 4-fold grid",
            f"{CORES} cores",
            f["ratio"],
            "≤ 0.65",
            f["ratio"] <= 0.65,
        ),
        Row(
            "two workers / one with each one's threads", f"{CORES} cores", f["ratio_same_threads"], "—", None
        ),
        # the first ratio's bound: two one-thread workers at best halve one thread's time
        Row(
            "one worker, 2 threads' speedup over 1 (÷2: the bound)",
            f"{CORES} cores",
            f["thread_speedup"],
            "—",
            None,
        ),
        Row(
            "engine / hand loop per epoch, cpu", "784-128-10, b64", e["speedup"], "≥ 1.2", e["speedup"] >= 1.2
        ),
    ]


def run_extra(grid_epochs: int) -> dict[str, Any]:
    from bench import peers_all

    out: dict[str, Any] = {}
    measures: tuple[tuple[str, Callable[[], dict[str, Any]]], ...] = (
        ("pruned_vs_grid", lambda: peers_all.pruned_vs_grid(grid_epochs)),
        ("fleet", lambda: peers_all.fleet_two_vs_one(grid_epochs)),
        ("engine", peers_all.engine_vs_hand),
    )
    for key, measure in measures:
        before = _settled(key)
        print(f"\n== {key}  (load {before[0]:.2f})", flush=True)
        _warn_load(key, before)
        out[key] = {**measure(), "load_before": before, "load_after": _load()}
        print(f"  {_flat(out[key])}", flush=True)
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> str:
    """A measurement's numbers on one line: `one.seconds 26.20  two.seconds 3.50  ratio 0.13`."""
    parts = []
    for k, v in d.items():
        if isinstance(v, dict):
            parts.append(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, float):
            parts.append(f"{prefix}{k} {v:.3f}")
        elif isinstance(v, int | str) or (isinstance(v, list) and all(isinstance(x, int | float) for x in v)):
            parts.append(f"{prefix}{k} {v}")
    return "  ".join(p for p in parts if p)


def print_timeline(out: Outcome) -> None:
    """One regtrain search per trial: its unit, started and ended (s after the POST), status."""
    print(f"\n  time line of regtrain's search ({out.problem}, sweep {out.notes.get('sweep_id')}):")
    print(f"  {'trial':>5} {'unit':>4} {'started':>8} {'ended':>8} {'epochs':>6}  status")
    for t in sorted(out.notes.get("timeline", []), key=lambda t: (t["started"] or 0, t["index"])):
        print(f"  {t['index']:5d} {t['unit'] if t['unit'] is not None else '-':>4} {t['started'] or 0:8.2f} "
              f"{t['finished'] or 0:8.2f} {t['epochs'] or 0:6d}  {t['status']}")  # fmt: skip


def print_rows(rows: list[Row]) -> None:
    print(f"\n{'ratio':52} {'case':18} {'measured':>9}  {'target':8} met")
    for r in rows:
        met = "—" if r.ok is None else ("yes" if r.ok else "NO")
        print(f"{r.what:52} {r.case:18} {r.measured:9.2f}  {r.target:8} {met}")


def contestants(skip_ray: bool) -> list[str]:
    names = ["regtrain", "optuna script"]
    if skip_ray:
        print("Ray Tune: skipped (--skip-ray)")
    elif not peers_ray.available():
        print("Ray Tune: skipped: ray[tune] is not importable here (pip install -e '.[peers]')")
    else:
        names.append("ray tune")
    return names


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", choices=[*peers_data.PROBLEMS, "both"], default="both")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--all", action="store_true", help="also the grid, fleet and engine targets")
    ap.add_argument("--grid-epochs", type=int, default=10, help="--all: epochs of the grid and fleet sweeps")
    ap.add_argument("--timeline", action="store_true", help="print regtrain's first search per trial")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = contestants(args.skip_ray)
    problems = list(peers_data.PROBLEMS) if args.problem == "both" else [args.problem]
    load = _load()
    gflops, rates = best_gflops()
    shown = ", ".join(f"{r:.1f} GFLOPS on {n} thread{'s' if n > 1 else ''}" for n, r in rates.items())
    print(f"{CORES} cores; matmul 64×784 @ 784×128: {shown}; load {load[0]:.2f}", flush=True)
    _warn_load("the matmul rate (the floor is void with it)", load)
    rows: list[Row] = []
    report: dict[str, Any] = {"cores": CORES, "gflops": gflops, "gflops_by_threads": rates, "runs": {}}
    for problem in problems:
        print(
            f"\n== {problem}: {args.trials} trials, {args.epochs} epochs, {args.repeat}× interleaved",
            flush=True,
        )
        runs: dict[str, list[Outcome]] = {n: [] for n in names}
        for _ in range(args.repeat):
            for name in names:
                runs[name].append(_turn(name, problem, args.trials, args.epochs))
        if args.timeline:
            print_timeline(runs["regtrain"][0])
        rows += peer_rows(problem, runs, gflops)
        report["runs"][problem] = {n: [asdict(o) for o in outs] for n, outs in runs.items()}
    if args.all:
        report["all"] = run_extra(args.grid_epochs)
        rows += all_rows(report["all"])
    print_rows(rows)
    report["rows"] = [asdict(r) for r in rows]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
