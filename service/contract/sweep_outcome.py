"""How a sweep's units decide its end, in one place: the coordinator (worker/coordinator.py)
asks it while the units run and once they have all ended.

A trial that fails for its own values (diverged, over its limits, bad params) is a result: the
sweep ranks the others and retrains the best. A unit that fails `internal` is a bug in regtrain,
not a result: the trials it left unfinished were never judged, so a leaderboard without them is
not the search the user asked for, and the sweep fails `internal` naming the unit rather than
reading `succeeded`.
"""

from __future__ import annotations

from typing import Any

from service.contract.errors import ErrorType

Row = dict[str, Any]


def internal_failure(units: list[Row], trials: list[Row] | None = None) -> dict[str, Any] | None:
    """The error that fails the sweep when one of its units (or, where given, trials) failed
    `internal`; None when none did."""
    for u in units:
        error = u.get("error") or {}
        if u["status"] == "failed" and error.get("type") == ErrorType.INTERNAL:
            return {
                "type": ErrorType.INTERNAL,
                "message": f"unit {u['unit_index']} failed internally: {error.get('message')}"[:2000],
            }
    for t in trials or []:
        error = t.get("error") or {}
        if t["status"] == "failed" and error.get("type") == ErrorType.INTERNAL:
            return {
                "type": ErrorType.INTERNAL,
                "message": f"trial {t['trial_index']} (unit {t.get('unit')}) failed internally: "
                f"{error.get('message')}"[:2000],
            }
    return None
