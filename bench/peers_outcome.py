"""What each contestant of bench/peers.py reports, and how a child process hands it back."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import peers_data


@dataclass
class Outcome:
    contestant: str
    problem: str
    wall_s: float  # start of the search → the best trial's retrain tested
    best_at_s: float  # start of the search → the best trial's score first known
    best_val: float  # the best trial's validation accuracy (last epoch), trials that ran every epoch
    test: float  # the best trial retrained on train + validation, tested
    trial_epochs: int  # epochs trained, summed over trials (and folds)
    trials: int
    pruned: int
    search_s: float | None = None  # start → the search's last trial ended (before the retrain)
    notes: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        d = json.loads(text)
        d["load_before"], d["load_after"] = tuple(d["load_before"]), tuple(d["load_after"])
        return cls(**d)


def run_child(module: str, args: list[str], timeout_s: float = 1800) -> Outcome:
    """Run `python -m module args` (a contestant in a process of its own, as a user runs a
    script); its last stdout line is the Outcome's JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGTRAIN_")}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return Outcome.from_json(done.stdout.strip().splitlines()[-1])


def contestant_main(
    run: Callable[[str, int, int], Outcome], doc: str | None, argv: list[str] | None
) -> Outcome:
    """A contestant's command line (what run_child starts): one search, its Outcome as JSON."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", choices=peers_data.PROBLEMS, default="digits")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args(argv)
    out = run(args.problem, args.trials, args.epochs)
    print(out.to_json(), flush=True)
    return out
