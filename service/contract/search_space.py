"""Sweeps that search and prune: the search space, the sampler and the pruner of a SweepSpec
(`space`, `sampler`, `pruner`), with no torch and no Optuna. The worker (worker/search.py)
drives Optuna's ask/tell with them; the API checks a space's corners before queuing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from service.contract.spec import JobSpec, Strict
from service.contract.urls import redact_url

if TYPE_CHECKING:
    from service.contract.sweep_spec import SweepSpec

Sampler = Literal["tpe", "random", "grid", "cmaes", "nsga2"]
MAX_CHOICES = 256
# The grid sampler enumerates every combination of its space up front (Optuna's GridSampler
# lists them): a space of more is refused before a worker builds the list.
MAX_GRID_COMBINATIONS = 100_000


class Dimension(Strict):
    """One searched field: exactly one of log_uniform [lo, hi] (lo > 0), uniform [lo, hi], int
    [lo, hi] (inclusive) or choice [values...]; `when` makes it conditional: the field is
    searched only in trials where every named field has the given value (else the base
    spec's value stays)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True, serialize_by_alias=True
    )

    log_uniform: list[float] | None = Field(None, min_length=2, max_length=2)
    uniform: list[float] | None = Field(None, min_length=2, max_length=2)
    int_: list[int] | None = Field(None, alias="int", min_length=2, max_length=2)
    choice: list[Any] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    when: dict[str, Any] | None = Field(
        None, description='e.g. {"optimizer.name": "sgd"}: searched only in trials where it holds.'
    )

    @model_validator(mode="after")
    def _one(self) -> Dimension:
        given = [k for k in ("log_uniform", "uniform", "int_", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of log_uniform, uniform, int or choice")
        bounds = self.log_uniform or self.uniform or self.int_
        if bounds is not None:
            lo, hi = bounds
            if not lo <= hi:
                raise ValueError("low must not exceed high")
            if self.log_uniform is not None and lo <= 0:
                raise ValueError("log_uniform needs a low bound > 0")
        return self

    @property
    def kind(self) -> Literal["log_uniform", "uniform", "int", "choice"]:
        if self.log_uniform is not None:
            return "log_uniform"
        if self.uniform is not None:
            return "uniform"
        return "int" if self.int_ is not None else "choice"

    def corners(self) -> list[Any]:
        """The values whose trial specs the API checks: both ends of a range, every choice."""
        if self.choice is not None:
            return list(self.choice)
        bounds = self.log_uniform or self.uniform or self.int_
        assert bounds is not None
        return list(dict.fromkeys(bounds))

    def applies(self, params: dict[str, Any]) -> bool:
        return all(params.get(k) == v for k, v in (self.when or {}).items())


class Pruner(Strict):
    """Stops trials whose objective, reported each epoch, trails the others'. `median`: below
    the median of earlier trials at the same epoch; `asha` (asynchronous successive halving)
    and `hyperband`: outside the best 1/reduction_factor at each rung; `gap`: the
    generalization gap (val_loss − train_eval_loss) widened `patience` epochs in a row, the
    signature of overfitting that more regularization would have prevented."""

    type: Literal["none", "median", "asha", "hyperband", "gap"] = "none"
    grace_epochs: int = Field(
        1, ge=1, le=10_000, description="No trial is pruned before training this many epochs."
    )
    reduction_factor: int = Field(3, ge=2, le=100, description="asha, hyperband: keep 1 in this many.")
    min_trials: int = Field(
        4, ge=0, le=1024, description="Trials that must have reached an epoch before any is pruned at it."
    )
    patience: int = Field(3, ge=1, le=1000, description="gap: epochs of widening in a row.")


def grid_size(space: dict[str, Dimension]) -> int:
    """How many combinations the grid sampler enumerates: every choice, every int of a range."""
    import math

    sizes = []
    for d in space.values():
        if d.choice is not None:
            sizes.append(len(d.choice))
        else:
            assert d.int_ is not None, "validated: a grid sampler's space has only choice and int"
            sizes.append(d.int_[1] - d.int_[0] + 1)
    return math.prod(sizes)


def ordered(space: dict[str, Dimension]) -> list[str]:
    """The fields in an order where each conditional one comes after the fields it depends on;
    ValueError naming a field whose condition names a field outside the space or a cycle."""
    out: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in out:
            return
        if name in visiting:
            raise ValueError(f"space.{name}: its `when` conditions form a cycle")
        visiting.add(name)
        for dep in space[name].when or {}:
            if dep not in space:
                raise ValueError(f"space.{name}.when: {dep!r} is not a field of the space")
            visit(dep)
        visiting.discard(name)
        out.append(name)

    for name in space:
        visit(name)
    return out


def probe_params(space: dict[str, Dimension]) -> list[dict[str, Any]]:
    """Parameter sets that together take every dimension to each of its corners (the others
    at their first corner), conditional fields only where their condition can hold."""
    names = ordered(space)
    first = {n: space[n].corners()[0] for n in names}
    sets = []
    for name in names:
        for value in space[name].corners():
            params: dict[str, Any] = {}
            for n in names:
                # the probed field's condition is made true where the space allows it
                want = (space[name].when or {}).get(n)
                v = value if n == name else (want if want is not None else first[n])
                if space[n].applies(params):
                    params[n] = v
            sets.append(params)
    return sets


def edge_warnings(space: dict[str, Dimension], best: dict[str, Any]) -> list[str]:
    """A warning for each range whose best value lies within 5% of one end (on a log scale for
    log_uniform): the optimum may lie outside the range searched."""
    import math

    out = []
    for name, dim in space.items():
        bounds = dim.log_uniform or dim.uniform or dim.int_
        value = best.get(name)
        if bounds is None or not isinstance(value, int | float) or bounds[0] == bounds[1]:
            continue
        lo, hi = bounds
        f = (lambda x: math.log(x)) if dim.log_uniform is not None else (lambda x: float(x))
        where = (f(value) - f(lo)) / (f(hi) - f(lo))
        if where <= 0.05 or where >= 0.95:
            end = "low" if where <= 0.05 else "high"
            out.append(
                f"the best {name} ({value:.4g}) lies at the {end} end of its range [{lo}, {hi}]: "
                "widen the range to see whether a better value lies beyond"
            )
    return out


def study_storage(url: str) -> str:
    """The URL optuna.load_study takes for regtrain's database, without its password wherever
    the URL holds it (`u:secret@`, `?password=`): every tenant reads it."""
    return redact_url(url)


def study_name(sweep_id: str) -> str:
    return f"regtrain-sweep-{sweep_id}"


def trial_spec(sweep: SweepSpec, params: dict[str, Any]) -> JobSpec:
    """The base spec with the trial's params set (KeyError: a path not in the spec)."""
    from service.contract.sweep_spec import set_path

    doc = sweep.base.model_dump(mode="json")
    for path, value in params.items():
        set_path(doc, path, value)
    return JobSpec.model_validate(doc)
