"""A sweep's `space`, searched with Optuna's ask/tell: the coordinator queues units, one per live
worker (worker/coordinator.py); whichever worker takes a unit asks its first trials from the
sampler (`parallel`, default its share of the trials, at most 8), trains them together with the
engine (stacked where they allow), asks one more for each slot of a stacked group that frees
(a pruned or ended trial: continuous batching), reports each trial's objective after every
epoch to the pruner and tells the study how each ended (UnitSearch), until `trials` trials have
been asked.

The study lives in regtrain's own database (Optuna's RDB storage on the same SQLite file or
PostgreSQL database), so `optuna.load_study(study_name=..., storage=...)` and optuna-dashboard
open it while it runs. A step is an epoch of a configuration counted across folds (fold k's
epoch e is step k·epochs + e), so every pruner compares trials at the same fold and epoch, and
a successive-halving rung at step r means r epochs of training.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState
from pydantic import ValidationError
from sqlalchemy import event as sa_event

from service.contract.errors import ErrorType, SpecError
from service.contract.search_space import Dimension, Pruner, ordered, study_name, trial_spec
from service.contract.sweep_spec import SweepSpec
from service.store.migrate import schema_lock
from service.store.studies import NewTrial, StoredTrial, StudyWrites
from worker.pruning import GapRule, RungRule

if TYPE_CHECKING:  # torch: imported only where a process trains
    from worker.training.sweep import TrialOutcome

log = logging.getLogger("regtrain.worker")
DEFAULT_PARALLEL = 8

optuna.logging.set_verbosity(optuna.logging.WARNING)


@functools.cache
def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on regtrain's database, one per process and URL: making one opens
    an engine and checks the schema's version (tenths of a second), which a sweep's every
    unit would otherwise pay before its first epoch. On SQLite every Optuna transaction takes
    the write lock up front (BEGIN IMMEDIATE, waiting up to 30 s), as regtrain's own writes
    do: a transaction that reads and then writes would otherwise fail at once with "database
    is locked" whenever this worker's heartbeat or the API wrote in between."""
    # Making one creates Optuna's tables on a new database, with no lock of Optuna's own: two
    # workers starting together would race (store/migrate.py schema_lock).
    with schema_lock(url):
        if not url.startswith("sqlite"):
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        st = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})

    @sa_event.listens_for(st.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        # As regtrain's own connections (store/engine.py): in WAL mode a commit then waits for
        # no fsync, and a unit's every ask is several commits (the trial, each of its params).
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @sa_event.listens_for(st.engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    st.engine.dispose()  # the connections of its set-up, opened before the hooks
    return st


def _int_values(d: Dimension) -> list[int]:
    """Every value of an int dimension (a grid sampler's space has only choices and ints)."""
    assert d.int_ is not None, "validated: a grid over a space has only int and choice fields"
    return list(range(d.int_[0], d.int_[1] + 1))


def make_sampler(sweep: SweepSpec, salt: int = 0) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. Every process that asks (a unit's, the coordinator's) has its own
    instance: `salt` (the unit's index + 1) gives each its own random stream, where the same
    seed would have each unit's first random trials repeat another's."""
    seed = None if sweep.seed is None else sweep.seed + 7919 * salt
    assert sweep.space is not None
    match sweep.sampler or "tpe":
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "grid":
            grid = {n: d.choice if d.choice is not None else _int_values(d) for n, d in sweep.space.items()}
            return _Grid({n: [_encode(v) for v in vs] for n, vs in grid.items()}, seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        case _:
            startup = min(10, max(2, sweep.trials // 4))
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, less its stop: it calls Study.stop once every combination is
    taken, which outside study.optimize (regtrain asks and tells) raises RuntimeError in the
    tell of the last trial, after the trial was told. The coordinator stops asking at the
    sweep's trials, at most the combinations (sweep_spec.clamped)."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


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
        bounds = dim.log_uniform or dim.uniform
        if bounds is not None:
            lo, hi = bounds
            params[name] = trial.suggest_float(name, lo, hi, log=dim.log_uniform is not None)
        elif dim.int_ is not None:
            params[name] = trial.suggest_int(name, dim.int_[0], dim.int_[1])
        else:
            assert dim.choice is not None
            params[name] = _decode(dim, trial.suggest_categorical(name, [_encode(c) for c in dim.choice]))
    return params


def open_study(
    sweep: SweepSpec, sweep_id: str, st: optuna.storages.RDBStorage, salt: int = 0
) -> optuna.Study:
    """The sweep's study in regtrain's database (`st`, from `storage`): made by the first
    caller, loaded by the rest (the coordinator asks from it, each unit's worker reports to and
    tells it)."""
    try:  # a load reads the study; a create that finds it made already costs a failed INSERT
        return optuna.load_study(
            study_name=study_name(sweep_id),
            storage=st,
            sampler=make_sampler(sweep, salt),
            pruner=make_pruner(sweep.pruner),
        )
    except KeyError:
        pass
    directions: list[Literal["minimize", "maximize"]] = [
        "maximize" if o.mode == "max" else "minimize" for o in sweep.objectives
    ]
    study = optuna.create_study(
        storage=st,
        study_name=study_name(sweep_id),
        sampler=make_sampler(sweep, salt),
        pruner=make_pruner(sweep.pruner),
        directions=directions,
        load_if_exists=True,
    )
    return study


def ask(
    study: optuna.Study,
    st: optuna.storages.RDBStorage,
    sweep: SweepSpec,
    n: int,
    asked: dict[int, int] | None = None,
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Ask `n` trials of the sampler: (trial number → params of the ones that make a valid
    spec, trial number → error of the ones that do not, already told failed). `asked` gets the
    storage's trial id of each valid one. `st`: the study's storage (`storage`)."""
    study_id = st.get_study_id_from_name(study.study_name)
    writes = StudyWrites(st.engine)
    return _ask(Mirror(study, study_id, writes), study_id, writes, sweep, n, asked)


def _ask(
    mirror: Mirror,
    study_id: int,
    writes: StudyWrites,
    sweep: SweepSpec,
    n: int,
    asked: dict[int, int] | None,
) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """`ask`: the sampler proposes the trials on an in-memory copy of the study (Mirror), and
    they are written to the study's tables together, params and the sampler's attrs included,
    in one transaction (service/store/studies.py). Asked on the RDB storage itself, every trial
    was a transaction for the trial, one per param, and two reads of every running trial for
    the sampler: 20-25 ms a trial on SQLite, 185-207 ms for a unit's first 8 before its first
    epoch. The sampler sees what it would have: every trial of the study as it is now, and the
    ones this call asked before, running (TPE's constant liar)."""
    assert sweep.space is not None
    mirror.sync()
    proposed = []
    for _ in range(n):
        mt = mirror.copy.ask()
        proposed.append((suggest(mt, sweep.space), mirror.copy.get_trials(deepcopy=False)[-1]))
    written = writes.add_trials(study_id, [_new_trial(frozen) for _, frozen in proposed])
    mirror.asked([f.number for _, f in proposed], written)
    good: dict[int, dict[str, Any]] = {}
    bad: dict[int, Any] = {}
    for (params, _), (trial_id, number) in zip(proposed, written, strict=True):
        try:
            trial_spec(sweep, params)
            good[number] = params
            if asked is not None:
                asked[number] = trial_id
        except (ValidationError, KeyError, SpecError) as e:
            mirror.study.tell(number, state=TrialState.FAIL)
            bad[number] = (params, {"type": ErrorType.BAD_PARAMS, "message": str(e)[:2000]})
    return good, bad


def _new_trial(frozen: optuna.trial.FrozenTrial) -> NewTrial:
    """A proposed trial as Optuna's storage writes one: each param's internal value and
    distribution, the sampler's system attrs (a grid's grid_id, say) as JSON."""
    return NewTrial(
        params={
            name: (d.to_internal_repr(frozen.params[name]), distribution_to_json(d))
            for name, d in frozen.distributions.items()
        },
        system_attrs={k: json.dumps(v) for k, v in frozen.system_attrs.items()},
    )


class Mirror:
    """The study's trials, in order (so with the same numbers), in an in-memory study that asks
    with the study's own sampler, kept from one ask to the next: each ask reads (one snapshot,
    service/store/studies.py) only the trials new since and those it holds running, and copies
    in the new ones and the end of those that ended (a pruned one with its last value, all a
    sampler reads of its curve). Copying the whole study afresh each time, through Optuna's
    storage (which reads every running trial's every row), was most of a refill's ask (15-35
    ms with 8-20 trials). A copy whose numbers part from the study's (another unit asked
    between its proposal and its write) is made afresh."""

    def __init__(self, study: optuna.Study, study_id: int, writes: StudyWrites) -> None:
        self.study, self.study_id, self.writes = study, study_id, writes
        self._afresh()

    def _afresh(self) -> None:
        self.copy = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            sampler=self.study.sampler,
            pruner=optuna.pruners.NopPruner(),
            directions=self.study.directions,
        )
        self.states: list[TrialState] = []  # of the copy's trials, by number
        self.running: dict[int, int] = {}  # trial id → number, of the copy's running trials
        self.after_id = 0  # every trial up to this id is in the copy

    def sync(self, again: bool = True) -> None:
        for t in self.writes.trials(self.study_id, self.after_id, sorted(self.running)):
            state = TrialState[t.state]
            if t.number > len(self.states) and again:  # one went missing: read it all again
                self._afresh()
                self.sync(again=False)
                return
            if t.number >= len(self.states):  # (past a gap only if the study has one)
                self.copy.add_trial(_frozen(t))
                self.states.append(state)
                if state == TrialState.RUNNING:
                    self.running[t.trial_id] = t.number
            elif self.states[t.number] != state:
                self._ended(t, state)
            self.after_id = max(self.after_id, t.trial_id)

    def _ended(self, t: StoredTrial, state: TrialState) -> None:
        if state == TrialState.PRUNED and t.last is not None:
            copied = self.copy.get_trials(deepcopy=False)[t.number]
            optuna.trial.Trial(self.copy, copied._trial_id).report(t.last[1], t.last[0])
        self.copy.tell(t.number, t.values if state == TrialState.COMPLETE else None, state=state)
        self.states[t.number] = state
        self.running.pop(t.trial_id, None)

    def asked(self, proposed: list[int], written: list[tuple[int, int]]) -> None:
        """The numbers the copy gave the trials it proposed, and the (trial id, number) the
        study wrote them under: the copy goes on only where the numbers agree (then no trial
        came in between, and the copy holds every trial up to these ids)."""
        if proposed != [number for _, number in written]:
            self._afresh()
            return
        self.states += [TrialState.RUNNING] * len(written)
        self.running.update(dict(written))
        self.after_id = max([self.after_id, *(i for i, _ in written)])


def _frozen(t: StoredTrial) -> optuna.trial.FrozenTrial:
    """A trial the copy takes in: what a sampler reads (no user attrs; of its curve, the last
    value). Its times are the copy's own (no sampler of regtrain's reads them)."""
    dists = {name: json_to_distribution(d) for name, (_, d) in t.params.items()}
    state = TrialState[t.state]
    now = datetime.now()
    return optuna.trial.FrozenTrial(
        number=t.number,
        state=state,
        value=None,
        values=t.values if state != TrialState.FAIL else None,
        datetime_start=now,
        datetime_complete=now if state.is_finished() else None,
        params={name: dists[name].to_external_repr(v) for name, (v, _) in t.params.items()},
        distributions=dists,
        user_attrs={},
        system_attrs={k: json.loads(v) for k, v in t.system_attrs.items()},
        intermediate_values=dict([t.last]) if t.last is not None else {},
        trial_id=t.trial_id,
    )


END_ATTR = "regtrain_end"  # the user attr that says why regtrain ended a trial of the study


def end_running_trials(sweep_id: str, storage_url: str, why: str) -> int:
    """Tell the sweep's study that every trial still running there has ended: the sweep was
    cancelled or failed, so no unit will tell it, and optuna.load_study / optuna-dashboard
    would show those trials running forever. FAIL, not PRUNED: the trial was stopped by
    something other than its own values, and the samplers learn from pruned trials' values
    as if they were judged bad (they ignore failed ones). How many were ended."""
    st = storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name(sweep_id), storage=st)
    except KeyError:  # the sweep ended before it asked its first trial
        return 0
    study_id = st.get_study_id_from_name(study.study_name)
    ended = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = optuna.trial.Trial(study, st.get_trial_id_from_study_id_trial_number(study_id, t.number))
        try:
            trial.set_user_attr(END_ATTR, why)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its unit told the study how it ended, just now
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        ended += 1
    return ended


@dataclass
class UnitSearch:
    """What a unit of a search adds to the engine's callbacks: every epoch reported to the
    study (and the rung rule), the pruner asked, each trial's end told. Built by whichever
    worker trains the unit, from the study in the database; the rung rule starts from every
    value reported so far, of this sweep's other units too."""

    sweep: SweepSpec
    study: optuna.Study
    storage: optuna.storages.BaseStorage  # the study's
    study_id: int  # the study's in its storage
    writes: StudyWrites  # asked trials and reports, in bulk into the study's tables
    mirror: Mirror  # the study in memory, where the sampler proposes this unit's trials
    trials: dict[int, int]  # number → the storage's trial id, of the trials this unit holds
    gap: GapRule | None
    rungs: RungRule | None
    # Steps of this unit's trials that the study holds already: an earlier attempt at the unit
    # (its worker died) reported them. Optuna keeps the first value reported at a step and
    # cannot replace it, so the retry, which trains the trial again from its first epoch with
    # the same seed (and so repeats those values, up to float noise), reports only the steps
    # beyond; the curve in regtrain's store keeps the first values too (SweepUnits.progress),
    # and the study, the pruners and the sweep page read the same numbers.
    reported: dict[int, set[int]]
    # This round's reports, written together (flush): (trial id, step, value).
    pending: list[tuple[int, int, float]] = field(default_factory=list)

    @classmethod
    def load(
        cls, sweep: SweepSpec, sweep_id: str, storage_url: str, numbers: list[int], salt: int = 0
    ) -> UnitSearch:
        st = storage(storage_url)
        study = open_study(sweep, sweep_id, st, salt)
        # Trials another process asked (an earlier attempt at this unit): their ids from the
        # storage's own API.
        study_id = st.get_study_id_from_name(study.study_name)
        trials = {n: st.get_trial_id_from_study_id_trial_number(study_id, n) for n in numbers}
        known = study.get_trials(deepcopy=False)
        rungs = None
        if sweep.pruner.type in ("asha", "hyperband"):
            max_steps = max(sweep.cv_folds, 1) * sweep.base.training.epochs
            rungs = RungRule(sweep.pruner, sweep.primary.mode == "max", max_steps)
            for t in known:
                for step, value in t.intermediate_values.items():
                    rungs.report(t.number, step, value)
        gap = GapRule(sweep.pruner) if sweep.pruner.type == "gap" else None
        reported = {t.number: set(t.intermediate_values) for t in known if t.number in trials}
        writes = StudyWrites(st.engine)
        mirror = Mirror(study, study_id, writes)
        return cls(sweep, study, st, study_id, writes, mirror, trials, gap, rungs, reported)

    def ask(self, n: int) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
        """Ask `n` trials for this unit (its first ones, or one for a freed slot of a stacked
        group), as the coordinator's `ask`; each valid one is this unit's to report and tell.
        The study holds it RUNNING from now: it starts training at once."""
        return _ask(self.mirror, self.study_id, self.writes, self.sweep, n, self.trials)

    def drop(self, number: int, why: str) -> None:
        """A trial asked that the store refused (the sweep asked all its trials meanwhile, or
        this unit's lease was lost): ended in the study, FAIL as end_running_trials does."""
        trial_id = self.trials.pop(number, None)
        if trial_id is None:
            return
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_user_attr(trial_id, END_ATTR, why)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def on_epoch(self, index: int, fold: int, step: int, row: dict[str, Any]) -> None:
        value = row.get(self.sweep.primary.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return
        steps = self.reported.setdefault(index, set())
        if step in steps:
            return  # reported by the unit's earlier attempt (see `reported`)
        steps.add(step)
        if len(self.sweep.objectives) == 1:  # Optuna keeps intermediate values of one objective only
            self.pending.append((self.trials[index], step, float(value)))
        if self.rungs is not None:
            self.rungs.report(index, step, float(value))

    def flush(self) -> None:
        """Write this round's reports to the study, in one transaction: after each round of
        the unit's epochs, before a trial is told its end, and before the median pruner reads
        them. A trial the study holds ended (the sweep was cancelled and its coordinator ended
        it: end_running_trials) takes none; this unit stops at its next heartbeat. A worker
        lost mid-round loses only reports its unit's retry makes again."""
        if self.pending:
            self.writes.report(self.pending)
            self.pending.clear()

    def prune(self, index: int, fold: int, step: int, row: dict[str, Any]) -> str | None:
        metric = self.sweep.primary.metric
        value = row.get(metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"{metric} was not finite at epoch {step}"
        if self.gap is not None:
            return self.gap.check(index, fold, step, row)
        if self.rungs is not None:
            reason = self.rungs.check(index, step)
            return f"{reason} ({metric})" if reason else None
        if self.sweep.pruner.type != "median":
            return None
        self.flush()  # the median pruner reads this round's values from the study
        if self._trial(index).should_prune():
            return (
                f"median: {metric} {value:.4g} at epoch {step} was worse than the median of the "
                "completed trials there"
            )
        return None

    def _trial(self, number: int) -> optuna.Trial:
        """The trial as Optuna's pruners take it (made when asked for: it reads the trial)."""
        return optuna.trial.Trial(self.study, self.trials[number])

    def tell(self, t: TrialOutcome) -> None:
        """Tell the study how the trial ended, as Study.tell would (a pruned trial's value is
        its last reported one), in one write (service/store/studies.py: Study.tell read the
        trial twice first, 14 ms a trial). What Study.tell adds is the sampler's after_trial,
        which for regtrain's samplers does nothing: TPE's, CMA-ES's and NSGA-II's weigh
        constraints only, which a sweep never sets, and the grid's (its stop) is removed."""
        self.flush()  # its last values first: a trial told ended takes no more
        objectives = self.sweep.objectives
        trial_id = self.trials[t.index]  # a unit tells only the trials it holds
        if t.status == "succeeded" and t.score is not None and math.isfinite(t.score):
            values = [t.metrics.get(o.metric) for o in objectives] if len(objectives) > 1 else [t.score]
            told = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
            if len(told) == len(values):
                self.writes.finish(trial_id, "COMPLETE", told)
            else:
                self.writes.finish(trial_id, "FAIL", None)
        elif t.status == "pruned":
            self.writes.finish(trial_id, "PRUNED", None)
        elif t.status == "failed":
            self.writes.finish(trial_id, "FAIL", None)
        # cancelled: its unit stopped (a cancel, or this worker shutting down and handing the
        # unit on); the trial stays running in the study until the unit's next holder ends it.
