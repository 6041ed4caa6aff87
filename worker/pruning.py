"""Pruning rules that stacking needs in a form of their own (plain Python, no torch, no Optuna).

The trials of a unit train in lockstep: every one reaches epoch e at the same moment. Optuna's
successive-halving pruner decides for each trial as it reports, against the trials that reported
before it, and its `bootstrap_count` prunes the first trials at each rung outright; so ASHA and
Hyperband here first take every value of the epoch, then decide each trial against all the
trials (of this unit and the earlier ones) that reached that step.
"""

from __future__ import annotations

import math
from typing import Any

from service.contract.search_space import Pruner


class RungRule:
    """Successive halving (asha) or Hyperband (several brackets of successive halving).

    Rungs lie at steps grace·rf^k; a trial at a rung goes on only if it is among the best
    ⌊n/rf⌋ of the n trials that reached it (the best one while fewer than rf have), and
    never before `min_trials` trials have reached it. Hyperband spreads the trials round-robin
    over brackets whose first rung lies at grace·rf^b, each bracket halving on its own."""

    def __init__(self, p: Pruner, maximize: bool, max_steps: int) -> None:
        self.p = p
        self.maximize = maximize
        self.max_steps = max_steps
        self.values: dict[int, dict[int, float]] = {}  # step → trial → value
        brackets = 1
        if p.type == "hyperband":
            ratio = max(max_steps / p.grace_epochs, 1.0)
            brackets = math.floor(math.log(ratio, p.reduction_factor) + 1e-9) + 1
        self.brackets = max(brackets, 1)

    def bracket(self, index: int) -> int:
        return index % self.brackets

    def report(self, index: int, step: int, value: float) -> None:
        self.values.setdefault(step, {})[index] = value

    def _is_rung(self, index: int, step: int) -> bool:
        first = self.p.grace_epochs * self.p.reduction_factor ** self.bracket(index)
        if step < first or step >= self.max_steps:
            return False
        k = math.log(step / first, self.p.reduction_factor)
        return abs(k - round(k)) < 1e-9

    def check(self, index: int, step: int) -> str | None:
        if not self._is_rung(index, step):
            return None
        here = {i: v for i, v in self.values.get(step, {}).items() if self.bracket(i) == self.bracket(index)}
        n = len(here)
        if index not in here or n < max(self.p.min_trials, 1):
            return None
        value = here[index]
        better = sum(1 for i, v in here.items() if i != index and (v > value if self.maximize else v < value))
        keep = max(1, n // self.p.reduction_factor)
        if better < keep:
            return None
        where = f" of bracket {self.bracket(index)}" if self.brackets > 1 else ""
        return (
            f"{self.p.type}: {value:.4g} at epoch {step} ranked {better + 1} of the {n} trials at that "
            f"rung{where}; only the best {keep} go on"
        )


class GapRule:
    """Prune a trial whose generalization gap (val_loss − train_eval_loss) widened `patience`
    epochs in a row once past the grace period: it is overfitting, and more of the same
    regularization will not mend it."""

    def __init__(self, p: Pruner) -> None:
        self.p = p
        self.last: dict[tuple[int, int], float] = {}
        self.widening: dict[int, int] = {}

    def check(self, index: int, fold: int, step: int, row: dict[str, Any]) -> str | None:
        gap = row.get("generalization_gap")
        if not isinstance(gap, int | float) or not math.isfinite(gap):
            return None
        before = self.last.get((index, fold))
        self.last[(index, fold)] = gap
        widened = before is not None and gap > before
        self.widening[index] = self.widening.get(index, 0) + 1 if widened else 0
        if step >= self.p.grace_epochs and self.widening[index] >= self.p.patience:
            return (
                f"gap: the generalization gap widened {self.widening[index]} epochs in a row "
                f"(to {gap:.4g} at epoch {step}): overfitting"
            )
        return None
