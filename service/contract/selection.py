"""Which trial a sweep retrains: the best score (`select: "best"`), or glmnet's lambda.1se
(`select: "one_se"`): the most regularized trial whose score lies within one standard error of
the best; and the warnings a statistician would want next to the answer."""

from __future__ import annotations

import math
import statistics
from typing import Any

from service.contract.search_space import Dimension, edge_warnings

Row = dict[str, Any]


def objectives(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored spec's objectives: one dict, or a list of them."""
    o = spec.get("objective") or {"metric": "val_loss", "mode": "min"}
    return list(o) if isinstance(o, list) else [o]


def primary(spec: dict[str, Any]) -> dict[str, Any]:
    return objectives(spec)[0]


def pareto(spec: dict[str, Any], trials: list[Row]) -> list[int]:
    """The indexes of the succeeded trials that no other trial dominates (at least as good on
    every objective, better on one), in index order."""
    objs = objectives(spec)

    def point(t: Row) -> list[float] | None:
        m = t["metrics"] or {}
        vals = [m.get(o["metric"]) for o in objs]
        finite = [float(v) for v in vals if isinstance(v, int | float) and math.isfinite(v)]
        if len(finite) < len(vals):
            return None
        return [v if o.get("mode") == "max" else -v for v, o in zip(finite, objs, strict=True)]

    points = {
        t["trial_index"]: p for t in trials if t["status"] == "succeeded" and (p := point(t)) is not None
    }

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for b in points.values())

    return sorted(i for i, p in points.items() if not dominated(p))


def standard_error(scores: list[float]) -> float:
    """The standard error of a mean over folds (and seeds): sample sd / √n, as glmnet's cvsd."""
    return statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0


def choose(spec: dict[str, Any], ranked: list[Row]) -> int | None:
    """The trial to retrain, from the scored trials best first (None when there are none)."""
    if not ranked:
        return None
    best = ranked[0]
    if spec.get("select") != "one_se":
        return int(best["trial_index"])
    maximize = primary(spec).get("mode") == "max"
    se = standard_error([float(s) for s in best["fold_scores"] or []])
    limit = best["score"] - se if maximize else best["score"] + se
    within = [r for r in ranked if (r["score"] >= limit if maximize else r["score"] <= limit)]
    if spec.get("path") is not None:  # a path runs from the strongest λ to the weakest
        return int(min(r["trial_index"] for r in within))
    keys = list(spec.get("grid") or {})

    def strength(r: Row) -> tuple[float, ...]:
        # the largest value of the first swept field (then the next) is the most regularized
        return tuple(
            float(v) if isinstance(v, int | float) else 0.0 for v in (r["params"].get(k) for k in keys)
        )

    return int(max(within, key=lambda r: (strength(r), -r["trial_index"]))["trial_index"])


def warnings(spec: dict[str, Any], chosen: Row) -> list[str]:
    """The best value of a swept range lies on its edge: the optimum may lie beyond it."""
    params = chosen["params"]
    if spec.get("space"):
        space = {k: Dimension.model_validate(v) for k, v in spec["space"].items()}
        return edge_warnings(space, params)
    out = []
    for name, values in (spec.get("grid") or spec.get("path") or {}).items():
        numbers = sorted({v for v in values if isinstance(v, int | float) and not isinstance(v, bool)})
        value = params.get(name)
        if len(numbers) >= 3 and value in (numbers[0], numbers[-1]):
            end = "smallest" if value == numbers[0] else "largest"
            out.append(
                f"the best {name} ({value:g}) is the {end} value tried: extend the grid beyond it "
                "to see whether a better value lies there"
            )
    return out


def leaderboard(spec: dict[str, Any], trials: list[Row]) -> list[int]:
    """Indices of the scored trials, best first (ties: the lower index, as the engine breaks them)."""
    sign = -1.0 if primary(spec).get("mode") == "max" else 1.0
    scored = [t for t in trials if t["status"] == "succeeded" and t["score"] is not None]
    return [t["trial_index"] for t in sorted(scored, key=lambda t: (sign * t["score"], t["trial_index"]))]
