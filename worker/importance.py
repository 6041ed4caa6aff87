"""Which swept parameters mattered: Optuna's parameter importances (fANOVA) of a finished
sweep's trials, computed once by the sweep's worker when its search ends and kept with the
sweep (`param_importances`), so the API serves them without Optuna's evaluators (they import
scikit-learn, which the API process never loads) and no read pays for a forest.

Built from regtrain's own trial rows (each finished trial's params and mean objective over its
folds), not from the Optuna study, so a grid or random sweep gets them too; at most
MAX_TRIALS of them (the first by index), which bounds the forest's cost whatever the sweep."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from service.contract.sweep_spec import MAX_TRIALS as SWEEP_MAX_TRIALS
from service.contract.sweep_spec import SweepSpec

log = logging.getLogger("regtrain.worker")
optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per in-memory study

# The trials the forest is fitted on: a sweep has at most this many (sweep_spec.MAX_TRIALS),
# and the bound holds here even if that one grows. fANOVA's trees on 256 trials of a few
# parameters take well under a second.
MAX_TRIALS = SWEEP_MAX_TRIALS
# fANOVA's forest: 32 trees, not Optuna's 64. Its cost is per tree (64 took 0.15 s for 8 trials
# and 0.4 s for 32 on a 2-core VM, time the sweep's retrain waited for), and on a search's few
# scored trials 32 rank the fields as 64 do (the largest moved by about 0.01).
FANOVA_TREES = 32
# A grid's numeric values spanning this ratio or more are taken on a log scale, as a space's
# log_uniform is (fANOVA weighs a split by the share of the axis it cuts).
LOG_RATIO = 100.0


def _encode(value: Any) -> Any:
    """Optuna's categorical values are scalars; a list or object travels as JSON text."""
    return value if value is None or isinstance(value, bool | int | float | str) else json.dumps(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def distributions(sweep: SweepSpec, params: list[dict[str, Any]]) -> dict[str, BaseDistribution]:
    """Each swept field's distribution, from the sweep's space (or random distributions), or
    from the values its trials took (a grid or path): numbers as a range, anything else as
    categories. Fields that took a single value say nothing about importance and are left out."""
    out: dict[str, BaseDistribution] = {}
    dims: dict[str, Any] = dict(sweep.space or sweep.random or {})
    names = list(dict.fromkeys(k for p in params for k in p))
    for name in names:
        seen = [p[name] for p in params if name in p]
        dim = dims.get(name)
        bounds = None if dim is None else (dim.log_uniform or dim.uniform)
        dist: BaseDistribution
        if dim is not None and bounds is not None:
            dist = FloatDistribution(bounds[0], bounds[1], log=dim.log_uniform is not None)
        elif dim is not None and getattr(dim, "int_", None) is not None:
            dist = IntDistribution(dim.int_[0], dim.int_[1])
        elif dim is not None and dim.choice is not None:
            dist = CategoricalDistribution(list(dict.fromkeys(_encode(c) for c in dim.choice)))
        elif seen and all(_is_number(v) for v in seen):
            lo, hi = float(min(seen)), float(max(seen))
            dist = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= LOG_RATIO)
        else:
            dist = CategoricalDistribution(list(dict.fromkeys(_encode(v) for v in seen)))
        if not dist.single():
            out[name] = dist
    return out


def param_importances(sweep: SweepSpec, rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """{field: importance} summing to 1, most important first, over the succeeded trials'
    scores; None when there is nothing to weigh (fewer than two scored trials, no field that
    varied, every score the same) or Optuna could not (logged: importances are a reading aid,
    never a reason for a sweep to fail)."""
    scored = sorted(
        (
            r
            for r in rows
            if r.get("status") == "succeeded" and _is_number(r.get("score")) and math.isfinite(r["score"])
        ),
        key=lambda r: r["trial_index"],
    )[:MAX_TRIALS]
    if len(scored) < 2 or len({r["score"] for r in scored}) < 2:
        return None
    dists = distributions(sweep, [r["params"] or {} for r in scored])
    if not dists:
        return None
    study = optuna.create_study(direction="minimize")  # in memory; the direction weighs nothing
    for r in scored:
        params = {k: _encode(v) for k, v in (r["params"] or {}).items() if k in dists}
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions={k: dists[k] for k in params},
                    value=float(r["score"]),
                )
            )
        except ValueError:  # a value outside its distribution (a spec edited by hand): skip it
            continue
    try:
        found = get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=0)
        )
    except Exception:  # a reading aid: the sweep goes on without it
        log.warning("parameter importances could not be computed", exc_info=True)
        return None
    return {k: float(v) for k, v in found.items() if math.isfinite(v)} or None
