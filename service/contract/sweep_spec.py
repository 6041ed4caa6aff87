"""The SweepSpec: which λ (or dropout, or lr) is best, by grid or random search, k-fold cross
validation, or a warm-started regularization path. No torch: the API expands a sweep into its
trials and validates every trial's JobSpec before anything is queued.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from service.contract.architecture import Caps, DataShape, check_caps, load, metric_names
from service.contract.errors import SpecError
from service.contract.search_space import (
    MAX_GRID_COMBINATIONS,
    Dimension,
    Pruner,
    Sampler,
    grid_size,
    ordered,
    probe_params,
    trial_spec,
)
from service.contract.spec import JobSpec, Strict

MAX_TRIALS = 256
MAX_PATH_STEPS = 64
# A space's size fields whose corners the API tries together, every combination, before it
# falls back to each field's own worst corner (see worst_case_params).
MAX_JOINT_CORNERS = 1024

# Fields every trial of a sweep shares with its base, so a grid, range or space over them is
# refused (422 naming the field) rather than silently ignored: the trials train on the base's
# data (the API checks the base's shape, each worker holds the base's upload), on the queue of
# the base's device, and a trial has no webhook and no name of its own.
FIXED_FIELDS = ("dataset", "training.device", "notify", "name")
# Fields that change what a trial costs: the model's plan, a batch's activations, the epochs.
SIZE_FIELDS = ("model", "training.batch_size", "training.epochs")


class Distribution(Strict):
    """One of uniform [lo, hi], log_uniform [lo, hi] (lo > 0), or choice [values...]."""

    uniform: list[float] | None = Field(None, min_length=2, max_length=2)
    log_uniform: list[float] | None = Field(None, min_length=2, max_length=2)
    choice: list[Any] | None = Field(None, min_length=1, max_length=MAX_TRIALS)

    @model_validator(mode="after")
    def _one(self) -> Distribution:
        given = [k for k in ("uniform", "log_uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, log_uniform or choice")
        for k in ("uniform", "log_uniform"):
            lo_hi = getattr(self, k)
            if lo_hi is not None:
                lo, hi = lo_hi
                if not lo <= hi:
                    raise ValueError(f"{k}: low must not exceed high")
                if k == "log_uniform" and lo <= 0:
                    raise ValueError("log_uniform needs a low bound > 0")
        return self

    def sample(self, rng: np.random.Generator) -> Any:
        if self.uniform is not None:
            low, high = self.uniform
            return float(rng.uniform(low, high))
        if self.log_uniform is not None:
            lo, hi = self.log_uniform
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        assert self.choice is not None
        return self.choice[int(rng.integers(len(self.choice)))]


class Objective(Strict):
    metric: str = Field("val_loss", description="A per-epoch metric, e.g. val_loss, val_accuracy, val_r2.")
    mode: Literal["min", "max"] = "min"


class Budget(Strict):
    """Bounds on the work a sweep may do: whichever is reached first ends the search (the
    sweep's `stopped_by` names it), as SageMaker's stopping conditions and Ray Tune's
    `time_budget_s` do. The sweep then goes on as usual: it retrains the best of the trials
    that finished. Give at least one field (contract/sweep_budget.py judges them)."""

    max_trials: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="Trials started at most. A space asks no more than this many of its sampler "
        "(it lowers `trials`); a grid or random search starts its first `max_trials` trials and "
        "ends the others cancelled, untrained.",
    )
    max_failed_trials: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="Once this many trials have failed (diverged, over the limits, bad params; "
        "pruned ones are not failed), no trial starts: the running ones finish, the queued ones "
        "end cancelled.",
    )
    time_s: float | None = Field(
        None,
        gt=0,
        le=30 * 86400,
        description="Wall seconds since the sweep started (its `started_at`): then no trial "
        "starts, and the running ones stop at their next epoch, ending `pruned` with what they "
        "trained so far.",
    )
    trial_epochs: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="Epochs trained, summed over the trials, folds and seeds (each trial's "
        "`epochs_trained`): then no trial starts and the running ones stop at their next epoch, "
        "ending `pruned`. Units on other workers learn it at their next heartbeat, so the sum "
        "may pass it by an epoch or so of each running unit.",
    )

    @model_validator(mode="after")
    def _some(self) -> Budget:
        if all(getattr(self, k) is None for k in type(self).model_fields):
            raise ValueError("give at least one of max_trials, max_failed_trials, time_s, trial_epochs")
        return self


class SweepSpec(Strict):
    """A search over JobSpec fields. Give exactly one of grid, random (with trials) or path."""

    name: str | None = Field(None, max_length=200)
    base: JobSpec
    grid: dict[str, list[Any]] | None = Field(
        None,
        description='Field path → values, e.g. {"regularization.l2": [0, 1e-4, 1e-3]}; all combinations.',
    )
    random: dict[str, Distribution] | None = Field(None, description="Field path → distribution.")
    trials: int = Field(
        16,
        ge=1,
        le=MAX_TRIALS,
        description="Random search or a space: how many trials. With sampler grid, at most one "
        "per combination of the space: more are clamped to the number of combinations (each "
        "trained once), and the sweep's `warnings` say so.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random search: the sampling seed.")
    path: dict[str, list[float]] | None = Field(
        None,
        description="One field → values from strong to weak; each step warm-starts from the last "
        "one's weights, as glmnet does.",
    )
    objective: Objective | list[Objective] = Field(
        default_factory=Objective,
        description="One metric and mode, or a list of them (several objectives: the sweep reports "
        "the Pareto front; the first one ranks the leaderboard).",
    )
    cv_folds: int = Field(
        0, ge=0, le=10, description="k-fold cross validation (stratified); 0 uses base.split.validation."
    )
    # --- search and prune (service/contract/search_space.py) ---
    space: dict[str, Dimension] | None = Field(
        None, description="Field path → dimension, searched by `sampler` (Optuna) for `trials` trials."
    )
    sampler: Sampler | None = Field(
        None, description="tpe (the default with a space), random, grid, cmaes, nsga2."
    )
    pruner: Pruner = Field(default_factory=Pruner)
    seeds: int = Field(
        1, ge=1, le=10, description="Train each configuration with this many seeds (mean ± std)."
    )
    select: Literal["best", "one_se"] = Field(
        "best",
        description="one_se (grids and paths): the most regularized trial within one standard error "
        "of the best, glmnet's lambda.1se.",
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Trials per unit of work, trained together on one worker (any worker on the "
        "sweep's queue takes a unit); for a space, also how many are asked at once. Default 8; "
        "a grid or random sweep on the gpu queue is one unit unless this is set.",
    )
    budget: Budget | None = Field(
        None,
        description="Bounds on the search (trials, failed trials, wall seconds, trial-epochs): "
        "the first reached ends it, and the sweep's `stopped_by` says which.",
    )
    vectorize: Literal["auto"] | bool = Field(
        "auto",
        description="Train trials that share architecture, data and batch size as one stacked "
        "model: auto where possible, true (refuse otherwise), false (trial by trial).",
    )

    @model_validator(mode="after")
    def _one_search(self) -> SweepSpec:
        given = [k for k in ("grid", "random", "path", "space") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, random or path, or a space to search")
        self._check_search(given[0])
        if self.grid is not None and (not self.grid or any(not v for v in self.grid.values())):
            raise ValueError("grid: give at least one field with at least one value")
        if self.random is not None and not self.random:
            raise ValueError("random: give at least one field")
        if self.path is not None:
            if len(self.path) != 1:
                raise ValueError("path: give exactly one field")
            (values,) = self.path.values()
            if not 2 <= len(values) <= MAX_PATH_STEPS:
                raise ValueError(f"path: give between 2 and {MAX_PATH_STEPS} values")
        if self.budget is not None and self.path is not None:
            raise ValueError(
                "budget: a path is one chain of warm starts on one worker; give a budget to a "
                "grid, a random search or a space"
            )
        if self.cv_folds == 1:
            raise ValueError("cv_folds: use 0 (a single validation split) or at least 2 folds")
        if self.cv_folds == 0 and self.base.split.validation == 0:
            raise ValueError("a sweep needs validation data: set base.split.validation > 0 or cv_folds ≥ 2")
        return self

    def _check_search(self, kind: str) -> None:
        if isinstance(self.objective, list):
            if not 1 <= len(self.objective) <= 4:
                raise ValueError("objective: give between 1 and 4 objectives")
            if self.pruner.type != "none" and len(self.objective) > 1:
                raise ValueError(
                    "pruner: a pruner judges one objective; several objectives train every trial"
                )
        if self.select == "one_se":
            if kind not in ("grid", "path"):
                raise ValueError("select: one_se chooses among a grid's or a path's trials")
            if self.cv_folds < 2 and self.seeds < 2:
                raise ValueError("select: one_se needs a standard error: cv_folds ≥ 2 or seeds ≥ 2")
        if kind != "space":
            if self.sampler is not None or self.pruner.type != "none":
                raise ValueError("sampler and pruner go with a space")
            return
        assert self.space is not None
        if not self.space:
            raise ValueError("space: give at least one field")
        ordered(self.space)  # conditions name fields of the space, no cycles
        if self.sampler == "grid":
            for name, dim in self.space.items():
                if dim.kind not in ("choice", "int"):
                    raise ValueError(f"space.{name}: the grid sampler needs choice or int dimensions")
            if grid_size(self.space) > MAX_GRID_COMBINATIONS:
                raise ValueError(
                    f"space: the grid sampler would enumerate {grid_size(self.space):,} combinations, "
                    f"more than {MAX_GRID_COMBINATIONS:,}; give fewer values"
                )

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @property
    def primary(self) -> Objective:
        """The objective that ranks the leaderboard and chooses the trial to retrain."""
        return self.objectives[0]

    @property
    def kind(self) -> Literal["grid", "random", "path", "space"]:
        if self.grid is not None:
            return "grid"
        if self.random is not None:
            return "random"
        if self.path is not None:
            return "path"
        return "space"


@dataclass
class Trial:
    index: int
    params: dict[str, Any]
    spec: JobSpec


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set doc["a"]["b"] for "a.b"; the field must already exist in the filled spec."""
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise KeyError(path)
        node = node[part]
    if leaf not in node:
        raise KeyError(path)
    node[leaf] = value


def trial_count(sweep: SweepSpec) -> int:
    """How many trials the sweep makes, from the grid's lengths alone: a grid of 10 keys × 60
    values is refused in microseconds instead of being built (60^10 dicts) to be counted."""
    if sweep.space is not None:
        if sweep.sampler == "grid":  # each combination once (see `clamped`)
            return min(sweep.trials, grid_size(sweep.space))
        return sweep.trials
    if sweep.grid is not None:
        return math.prod(len(v) for v in sweep.grid.values())
    if sweep.random is not None:
        return sweep.trials
    assert sweep.path is not None
    return sum(len(v) for v in sweep.path.values())


def planned_trials(sweep: SweepSpec) -> int:
    """The trials the sweep may start: `trial_count`, at most its budget's max_trials."""
    n = trial_count(sweep)
    if sweep.budget is not None and sweep.budget.max_trials is not None:
        return min(n, sweep.budget.max_trials)
    return n


def clamped(sweep: SweepSpec) -> tuple[SweepSpec, list[str]]:
    """The sweep as it runs, with the warnings that say how it differs from the one asked for:
    a grid sampler asked for more trials than its space has combinations runs each combination
    once (Optuna's grid sampler would train some twice, then stop the study)."""
    if sweep.space is None or sweep.sampler != "grid" or sweep.trials <= trial_count(sweep):
        return sweep, []
    n = trial_count(sweep)
    warning = (
        f"trials: the grid sampler's space has {n} combinations, so {n} trials run (each "
        f"combination once), not the {sweep.trials} asked for"
    )
    return sweep.model_copy(update={"trials": n}), [warning]


def fixed_field(path: str) -> str | None:
    """The field of FIXED_FIELDS that a swept path would change (itself, within or above it)."""
    for fixed in FIXED_FIELDS:
        if path == fixed or path.startswith(fixed + ".") or fixed.startswith(path + "."):
            return fixed
    return None


def searched_fields(sweep: SweepSpec) -> tuple[str, list[str]]:
    """The search's kind and the field paths it varies."""
    fields = sweep.grid or sweep.random or sweep.path or sweep.space or {}
    return sweep.kind, list(fields)


def refuse_fixed_fields(sweep: SweepSpec) -> None:
    """SpecError naming a swept field that every trial shares with the base (FIXED_FIELDS)."""
    kind, paths = searched_fields(sweep)
    for path in paths:
        fixed = fixed_field(path)
        if fixed is not None:
            raise SpecError(
                (kind, path),
                f"every trial of a sweep keeps the base's {fixed}: it cannot vary per trial "
                "(submit one sweep per value instead)",
            )


def trainings(sweep: SweepSpec) -> int:
    """The trainings the sweep costs: every trial it may start once per fold and seed (the
    retrained best aside); pruning and the budget may stop some early, never add any."""
    return planned_trials(sweep) * max(sweep.cv_folds, 1) * sweep.seeds


def _param_sets(sweep: SweepSpec) -> tuple[str, list[dict[str, Any]]]:
    if sweep.space is not None:  # asked one by one from the sampler; `expand` checks its corners
        return "space", probe_params(sweep.space)
    if sweep.grid is not None:
        n = trial_count(sweep)
        if n > MAX_TRIALS:
            raise SpecError(("grid",), f"{n:,} combinations exceed the maximum of {MAX_TRIALS} trials")
        keys = list(sweep.grid)
        combos = itertools.product(*(sweep.grid[k] for k in keys))
        return "grid", [dict(zip(keys, c, strict=True)) for c in combos]
    if sweep.random is not None:
        rng = np.random.default_rng(sweep.seed)
        return "random", [{k: d.sample(rng) for k, d in sweep.random.items()} for _ in range(sweep.trials)]
    assert sweep.path is not None
    ((key, values),) = sweep.path.items()
    return "path", [{key: v} for v in values]


def expand(
    sweep: SweepSpec,
    shape: DataShape | None,
    max_parameters: int,
    *,
    max_memory_bytes: int | None = None,
    max_epoch_samples: int | None = None,
) -> list[Trial]:
    """Every trial's validated JobSpec, each within the caps on data of `shape`; SpecError
    naming the field path and value that fails. A space's trials are asked as it runs: its
    "trials" here are the specs the API checks, each field at each of its corners and, last,
    the space's joint worst case (worst_case_params), so no trial the sampler may ask for is
    over the caps though each field alone is within them."""
    refuse_fixed_fields(sweep)
    caps = Caps(max_parameters, max_memory_bytes, max_epoch_samples)
    kind, sets = _param_sets(sweep)
    trials = [_trial(sweep, kind, i, params, shape, caps) for i, params in enumerate(sets)]
    if sweep.space is not None and shape is not None:
        worst = worst_case_params(sweep, shape, caps)
        if worst is not None:
            spec = trial_spec(sweep, worst)
            try:
                check_caps(spec, shape, caps)
            except SpecError as e:
                sized = {k: v for k, v in worst.items() if _sizes(k)}
                raise SpecError(
                    ("space", _swept_field(sized, e.loc) or next(iter(sized))),
                    f"the space's worst case, {sized} together, is over the limits: {e.message}",
                ) from None
            trials.append(Trial(len(trials), worst, spec))
    if shape is not None:
        # a row's weight statistics and gap may be objectives too (say accuracy and sparsity)
        known = [*metric_names(shape.task, True), "generalization_gap", "weight_l2_norm", "weight_sparsity"]
        for i, o in enumerate(sweep.objectives):
            if o.metric not in known:
                loc = ("objective", "metric") if len(sweep.objectives) == 1 else ("objective", i, "metric")
                raise SpecError(loc, f"{o.metric!r} is not reported; choose one of {', '.join(known)}")
    return trials


def _trial(
    sweep: SweepSpec, kind: str, i: int, params: dict[str, Any], shape: DataShape | None, caps: Caps
) -> Trial:
    doc = _deep_copy(sweep.base.model_dump(mode="json"))
    for path, value in params.items():
        try:
            set_path(doc, path, value)
        except KeyError:
            raise SpecError((kind, path), f"unknown field path {path!r} for this base spec") from None
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise SpecError(
            (kind, _failed_param(params, err["loc"])), f"trial {i} ({params}): {where}: {err['msg']}"
        ) from None
    if shape is not None:
        try:
            check_caps(spec, shape, caps)
        except SpecError as e:
            # a space names the field of its own (the key of `space`) when it can
            field = _swept_field(params, e.loc) if kind == "space" else None
            loc = (kind, *e.loc) if field is None else (kind, field)
            raise SpecError(loc, f"trial {i} ({params}): {e.message}") from None
    return Trial(i, params, spec)


def _sizes(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") or f.startswith(path + ".") for f in SIZE_FIELDS)


def worst_case_params(sweep: SweepSpec, shape: DataShape, caps: Caps) -> dict[str, Any] | None:
    """The params of the space's worst trial: its size fields (SIZE_FIELDS) taken together at
    the corners that bring a trial closest to its tightest cap (architecture.load), the other
    fields at their first corner, conditions that a size field depends on made true. Every
    combination of the size fields' corners is tried where they are at most MAX_JOINT_CORNERS;
    past that, each field's own worst corner (the others at their first), together. None when
    the space has no size field.

    Corners suffice: a trial's parameters, memory and work grow with each size field's value
    (a width, a batch, an epoch count), so a range's worst value is one of its ends."""
    assert sweep.space is not None
    space = sweep.space
    names = ordered(space)
    sized = [n for n in names if _sizes(n)]
    if not sized:
        return None
    wanted: dict[str, Any] = {}  # what the size fields' conditions ask of the other fields
    for n in sized:
        for dep, value in (space[n].when or {}).items():
            wanted.setdefault(dep, value)
    first = {n: space[n].corners()[0] for n in names}

    def params_of(chosen: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for n in names:
            if space[n].applies(params):
                params[n] = chosen[n] if n in chosen else wanted.get(n, first[n])
        return params

    def ratios(params: dict[str, Any]) -> list[float] | None:
        try:
            return load(trial_spec(sweep, params), shape, caps)
        except (KeyError, ValidationError):  # an invalid combination: asked, it fails bad_params
            return None

    def tightest(params: dict[str, Any]) -> float:  # over the caps iff > 1
        r = ratios(params)
        return -1.0 if r is None else max(r)

    def total(params: dict[str, Any]) -> float:  # grows with every field, whichever cap it takes
        r = ratios(params)
        return -1.0 if r is None else sum(r)

    corners = {n: space[n].corners() for n in sized}
    if math.prod(len(c) for c in corners.values()) <= MAX_JOINT_CORNERS:
        combos = (params_of(dict(zip(sized, c, strict=True))) for c in itertools.product(*corners.values()))
        worst = max(combos, key=tightest)
    else:
        own: dict[str, Any] = {}
        for n in sized:
            own[n] = max(corners[n], key=lambda v: total(params_of({n: v})))
        worst = params_of(own)
    return worst if ratios(worst) is not None else None


def _swept_field(params: dict[str, Any], loc: tuple[Any, ...]) -> str | None:
    """The swept field a cap's error is about: the one at, under or above the error's location
    (an estimate the model drives names a model field); None when none is."""
    where = ".".join(map(str, loc))
    for path in params:
        if path == where or path.startswith(where + ".") or where.startswith(path + "."):
            return path
    return None


def _failed_param(params: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """The swept field a validation error is about: its path's parts appear in order in the
    error's location (which may hold union tags too, e.g. model.mlp.dropout)."""
    for path in params:
        it = iter(map(str, loc))
        if all(part in it for part in path.split(".")):
            return path
    return next(iter(params))


def _deep_copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _deep_copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_deep_copy(v) for v in doc]
    return doc


def best_job_spec(
    sweep: SweepSpec, trial: Trial, best_epoch: float | None, notify_secret: str | None = None
) -> JobSpec:
    """The winning trial retrained on train + validation data and tested on the held-out test
    split (the same test rows: the split takes the test set first, with the same seed). Early
    stopping needs validation data, so it gives way to the trial's mean best epoch.

    `notify_secret` is the base spec's notify.secret, which the stored spec leaves out (it is
    write-only): the job's deliveries are signed with the secret the user gave the sweep."""
    doc = trial.spec.model_dump(mode="json")
    if doc.get("notify") and notify_secret:
        doc["notify"]["secret"] = notify_secret
    doc["name"] = f"{sweep.name or 'sweep'}-best"
    doc["split"]["validation"] = 0.0
    if doc["training"].get("early_stopping"):
        doc["training"]["early_stopping"] = None
        if best_epoch:
            doc["training"]["epochs"] = max(1, round(best_epoch))
    return JobSpec.model_validate(doc)
