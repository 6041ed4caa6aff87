"""A sweep's `space`, searched with Optuna's ask/tell: ask a unit of trials (`parallel`, default
8) from the sampler, train them together with the engine (stacked where they allow), report each
trial's objective after every epoch to the pruner, tell the sampler how each ended, ask again
until `trials` trials have ended.

The study lives in regtrain's own database (Optuna's RDB storage on the same SQLite file or
PostgreSQL database), so `optuna.load_study(study_name=..., storage=...)` and optuna-dashboard
open it while it runs. A step is an epoch of a configuration counted across folds (fold k's
epoch e is step k·epochs + e), so every pruner compares trials at the same fold and epoch, and
a successive-halving rung at step r means r epochs of training.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import event as sa_event

from service.contract.errors import ErrorType, SpecError
from service.contract.search_space import Dimension, Pruner, ordered, study_name, trial_spec
from service.contract.sweep_spec import SweepSpec, Trial
from service.store import Repository
from worker.leased_task import finite, outcome_fields
from worker.pruning import GapRule, RungRule

log = logging.getLogger("regtrain.worker")
DEFAULT_PARALLEL = 8

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on regtrain's database. On SQLite every Optuna transaction takes
    the write lock up front (BEGIN IMMEDIATE, waiting up to 30 s), as regtrain's own writes
    do: a transaction that reads and then writes would otherwise fail at once with "database
    is locked" whenever this worker's heartbeat or the API wrote in between."""
    if not url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    st = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})

    @sa_event.listens_for(st.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa_event.listens_for(st.engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    st.engine.dispose()  # the connections of its set-up, opened before the hooks
    return st


def make_sampler(sweep: SweepSpec) -> optuna.samplers.BaseSampler:
    seed = sweep.seed
    assert sweep.space is not None
    match sweep.sampler or "tpe":
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "grid":
            grid = {
                n: d.choice if d.choice is not None else list(range(d.int_[0], d.int_[1] + 1))  # type: ignore[index]
                for n, d in sweep.space.items()
            }
            return optuna.samplers.GridSampler(
                {n: [_encode(v) for v in vs] for n, vs in grid.items()}, seed=seed
            )
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        case _:
            startup = min(10, max(2, sweep.trials // 4))
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(p: Pruner) -> optuna.pruners.BasePruner:
    match p.type:
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=p.min_trials,
                n_warmup_steps=p.grace_epochs,
                n_min_trials=max(1, p.min_trials),
            )
        case _:  # none; asha, hyperband and gap are rules of worker/pruning.py
            return optuna.pruners.NopPruner()


def _encode(value: Any) -> Any:
    """Optuna's categorical values are scalars; a list or object choice travels as JSON text."""
    return value if value is None or isinstance(value, bool | int | float | str) else json.dumps(value)


def _decode(dim: Dimension, value: Any) -> Any:
    if dim.choice is not None and isinstance(value, str) and value not in dim.choice:
        return json.loads(value)
    return value


def suggest(trial: optuna.Trial, space: dict[str, Dimension]) -> dict[str, Any]:
    """The trial's params; a conditional field only where its condition holds."""
    params: dict[str, Any] = {}
    for name in ordered(space):
        dim = space[name]
        if not dim.applies(params):
            continue
        if dim.log_uniform is not None or dim.uniform is not None:
            lo, hi = dim.log_uniform or dim.uniform  # type: ignore[misc]
            params[name] = trial.suggest_float(name, lo, hi, log=dim.log_uniform is not None)
        elif dim.int_ is not None:
            params[name] = trial.suggest_int(name, dim.int_[0], dim.int_[1])
        else:
            assert dim.choice is not None
            params[name] = _decode(dim, trial.suggest_categorical(name, [_encode(c) for c in dim.choice]))
    return params


def run_search(
    sweep: SweepSpec,
    sweep_id: str,
    owner: str,
    store: Repository,
    storage_url: str,
    should_stop: Callable[[], bool],
    datasets_dir: Any,
) -> str:
    """Ask, train and tell until `trials` trials have ended: "succeeded" or "cancelled"."""
    assert sweep.space is not None
    directions: list[Literal["minimize", "maximize"]] = [
        "maximize" if o.mode == "max" else "minimize" for o in sweep.objectives
    ]
    mode = sweep.primary.mode
    folds = max(sweep.cv_folds, 1)
    max_steps = folds * sweep.base.training.epochs
    study = optuna.create_study(
        storage=storage(storage_url),
        study_name=study_name(sweep_id),
        sampler=make_sampler(sweep),
        pruner=make_pruner(sweep.pruner),
        directions=directions,
        load_if_exists=True,
    )
    study.set_user_attr("regtrain_sweep", sweep_id)
    gap = GapRule(sweep.pruner) if sweep.pruner.type == "gap" else None
    rungs = None
    if sweep.pruner.type in ("asha", "hyperband"):
        rungs = RungRule(sweep.pruner, mode == "max", max_steps)
        for t in study.get_trials(deepcopy=False):  # what an earlier attempt reported
            for step, value in t.intermediate_values.items():
                rungs.report(t.number, step, value)
    # An earlier attempt's unfinished trials (its worker was lost): asked again, first.
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(t.params, skip_if_exists=False)
            store.record_trial(
                sweep_id, owner, t.number, status="cancelled", reason="its worker was lost; asked again"
            )
    ctx = _Search(sweep, sweep_id, owner, store, study, gap, rungs, should_stop, datasets_dir)
    unit = store.next_unit(sweep_id)
    while True:
        ended = store.trials_ended(sweep_id)
        if ended >= sweep.trials:
            return "succeeded"
        if should_stop():
            return "cancelled"
        asked: dict[int, optuna.Trial] = {}
        batch: list[Trial] = []
        for _ in range(min(sweep.parallel or DEFAULT_PARALLEL, sweep.trials - ended)):
            ot = study.ask()
            params = suggest(ot, sweep.space)
            asked[ot.number] = ot
            store.add_trial(sweep_id, owner, ot.number, params, unit=unit)
            try:
                batch.append(Trial(ot.number, params, trial_spec(sweep, params)))
            except (ValidationError, KeyError, SpecError) as e:
                study.tell(ot, state=TrialState.FAIL)
                error = {"type": ErrorType.BAD_PARAMS, "message": str(e)[:2000]}
                store.record_trial(sweep_id, owner, ot.number, status="failed", error=error)
        if batch and _train_unit(ctx, asked, batch) == "cancelled":
            return "cancelled"
        unit += 1


@dataclass
class _Search:
    sweep: SweepSpec
    sweep_id: str
    owner: str
    store: Repository
    study: optuna.Study
    gap: GapRule | None
    rungs: RungRule | None
    should_stop: Callable[[], bool]
    datasets_dir: Any
    folds_cache: dict[str, Any] = field(default_factory=dict)


def _train_unit(ctx: _Search, asked: dict[int, optuna.Trial], batch: list[Trial]) -> str:
    """Train one unit of asked trials, reporting every epoch and telling how each ended."""
    from worker.training.sweep import SweepCallbacks, TrialOutcome, run_sweep

    sweep, sweep_id, owner, store, study, gap = (
        ctx.sweep,
        ctx.sweep_id,
        ctx.owner,
        ctx.store,
        ctx.study,
        ctx.gap,
    )
    metric = sweep.primary.metric
    several = len(sweep.objectives) > 1
    progress: dict[int, dict[str, Any]] = {}

    def on_epoch(index: int, fold: int, step: int, row: dict[str, Any]) -> None:
        value = row.get(metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return
        if not several:  # Optuna keeps intermediate values of one objective only
            asked[index].report(float(value), step)
        if ctx.rungs is not None:
            ctx.rungs.report(index, step, float(value))
        progress[index] = {"fold": fold, "epoch": row.get("epoch"), "step": step, metric: value}

    def prune(index: int, fold: int, step: int, row: dict[str, Any]) -> str | None:
        value = row.get(metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"{metric} was not finite at epoch {step}"
        if gap is not None:
            return gap.check(index, fold, step, row)
        if ctx.rungs is not None:
            reason = ctx.rungs.check(index, step)
            return f"{reason} ({metric})" if reason else None
        if sweep.pruner.type == "median" and asked[index].should_prune():
            return (
                f"median: {metric} {value:.4g} at epoch {step} was worse than the median of the "
                "completed trials there"
            )
        return None

    def after_epoch() -> None:
        if progress:
            store.trial_progress(sweep_id, owner, {i: finite(p) for i, p in progress.items()})
            progress.clear()

    def on_trial(t: TrialOutcome) -> None:
        store.record_trial(sweep_id, owner, t.index, **outcome_fields(t))
        ot = asked[t.index]
        if t.status == "succeeded" and t.score is not None and math.isfinite(t.score):
            values = [t.metrics.get(o.metric) for o in sweep.objectives] if several else [t.score]
            if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
                study.tell(ot, [float(v) for v in values] if several else float(t.score))  # type: ignore[arg-type]
            else:
                study.tell(ot, state=TrialState.FAIL)
        elif t.status == "pruned":
            study.tell(ot, state=TrialState.PRUNED)
        elif t.status == "failed":
            study.tell(ot, state=TrialState.FAIL)

    callbacks = SweepCallbacks(
        on_trial=on_trial,
        should_stop=ctx.should_stop,
        on_epoch=on_epoch,
        prune=prune,
        after_epoch=after_epoch,
    )
    out = run_sweep(
        sweep, batch, datasets_dir=ctx.datasets_dir, callbacks=callbacks, folds_cache=ctx.folds_cache
    )
    if out.status == "cancelled":
        for ot in asked.values():
            study.tell(ot, state=TrialState.FAIL, skip_if_finished=True)
    return out.status
