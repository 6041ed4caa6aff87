"""When a sweep's budget (SweepSpec.budget) ends its search, and how the sweep says so.

One judge, pure: the coordinator (worker/coordinator.py) asks it between units with the
sweep's counts from the store, and writes the first budget reached as the sweep's `stopped_by`
(once: the first reached wins). A unit asks it after every epoch with what it knows itself (the
time; the epochs the sweep had trained when it took the unit, plus its own), so a unit of a
worker that is also the coordinator stops without waiting for anyone; a unit on another worker
learns the coordinator's verdict at its next heartbeat too.

What a budget does to the trials (docs/API.md, "Budgets"):
- none starts once a budget is reached: a queued one ends `cancelled`, untrained, its `reason`
  naming the budget;
- `time_s` and `trial_epochs` stop the running ones at their next epoch: each ends `pruned`
  (reason naming the budget) with its curve and last epoch's metrics, as a pruned trial does,
  and is not ranked: a trial stopped part way is not comparable with those trained to the end;
- `max_trials` and `max_failed_trials` let the running ones finish.
The sweep then retrains the best trial that finished and ends `succeeded`, `stopped_by` set;
when none finished, it fails `budget_exhausted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.contract.sweep_spec import Budget

# The budgets that stop running trials at their next epoch (the others only stop new ones).
STOPS_RUNNING = ("time_s", "trial_epochs")


@dataclass(frozen=True)
class Spent:
    """What a sweep has used of its budget so far."""

    seconds: float  # since the sweep started
    epochs: int  # epochs trained, summed over trials, folds and seeds
    failed: int  # trials that failed (pruned ones are not failed)


def reached(budget: Budget | None, spent: Spent) -> tuple[str, str] | None:
    """(the budget, a sentence saying how it was reached) for the first budget `spent` has
    reached, or None. max_trials is not judged here: it caps the trials planned or asked
    (sweep_spec.planned_trials), and the coordinator names it when it took effect."""
    if budget is None:
        return None
    if budget.time_s is not None and spent.seconds >= budget.time_s:
        return (
            "time_s",
            f"{spent.seconds:.1f} s since the sweep started, of a time_s budget of {budget.time_s:g} s",
        )
    if budget.trial_epochs is not None and spent.epochs >= budget.trial_epochs:
        return (
            "trial_epochs",
            f"{spent.epochs} epochs trained, of a trial_epochs budget of {budget.trial_epochs}",
        )
    if budget.max_failed_trials is not None and spent.failed >= budget.max_failed_trials:
        return (
            "max_failed_trials",
            f"{spent.failed} trials failed, of a max_failed_trials budget of {budget.max_failed_trials}",
        )
    return None


def max_trials_detail(budget: Budget, asked: int) -> str:
    return f"{budget.max_trials} trials started, of the {asked} asked for (max_trials)"


def stopped_by(budget: str, at: datetime, detail: str) -> dict[str, Any]:
    """The sweep's `stopped_by`: {"budget", "at", "detail"} (JSON-safe: `at` in ISO 8601)."""
    return {"budget": budget, "at": at.isoformat(), "detail": detail}


def trial_reason(budget: str) -> str:
    """A trial's `reason` when the budget stopped it, or kept it from starting."""
    return f"budget: the sweep's {budget} budget was reached"


def no_trial_finished(stop: dict[str, Any]) -> str:
    """The message of a sweep that fails `budget_exhausted`."""
    return f"the sweep's {stop['budget']} budget was reached before any trial finished: {stop['detail']}"
