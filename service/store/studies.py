"""A search's Optuna study, written in bulk: the trials a unit asks (params and sampler state
included), the values it reports after each epoch and how each trial ended, straight into the
tables of Optuna's RDB storage, which lives in regtrain's database (worker/search.py).

Optuna's own storage writes each of these row by row through its ORM, each a transaction that
first reads the trial back: a trial of four params was about 9 ms of writes, a report about
1.5 ms and a trial's end (Study.tell, which reads the trial twice) about 14 ms, and a unit paid
them between its epochs (a third of a digits search's wall time went to the study). Here a
group's trials are one transaction, a round's reports one, and a trial's end one.

Only Optuna's own columns are written, as its storage writes them (tests/service/
test_study_writes.py holds these tables to Optuna's models). Everything else (the study, the
samplers' reads) stays Optuna's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from service.store.engine import write_transaction

# Optuna's tables, the columns written or read here (optuna/storages/_rdb/models.py). Its enums
# are stored by name; on PostgreSQL they are types of their own, named as SQLAlchemy names them.
_meta = sa.MetaData()
_TRIAL_STATES = ("RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")
_VALUE_TYPES = ("FINITE", "INF_POS", "INF_NEG", "NAN")
studies = sa.Table("studies", _meta, sa.Column("study_id", sa.Integer, primary_key=True))
trials = sa.Table(
    "trials",
    _meta,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("number", sa.Integer),
    sa.Column("study_id", sa.Integer),
    sa.Column("state", sa.Enum(*_TRIAL_STATES, name="trialstate", create_type=False), nullable=False),
    sa.Column("datetime_start", sa.DateTime),  # naive UTC
    sa.Column("datetime_complete", sa.DateTime),
)
trial_params = sa.Table(
    "trial_params",
    _meta,
    sa.Column("param_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("param_name", sa.String(512)),
    sa.Column("param_value", sa.Float),  # the distribution's internal representation
    sa.Column("distribution_json", sa.Text),
)
trial_system_attributes = sa.Table(
    "trial_system_attributes",
    _meta,
    sa.Column("trial_system_attribute_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("key", sa.String(512)),
    sa.Column("value_json", sa.Text),
)
trial_values = sa.Table(
    "trial_values",
    _meta,
    sa.Column("trial_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("objective", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column(
        "value_type", sa.Enum(*_VALUE_TYPES[:3], name="trialvaluetype", create_type=False), nullable=False
    ),
)
trial_intermediate_values = sa.Table(
    "trial_intermediate_values",
    _meta,
    sa.Column("trial_intermediate_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("intermediate_value", sa.Float),
    sa.Column(
        "intermediate_value_type",
        sa.Enum(*_VALUE_TYPES, name="trialintermediatevaluetype", create_type=False),
        nullable=False,
    ),
)


@dataclass
class NewTrial:
    """A trial the sampler proposed: each param as (internal value, distribution JSON), as
    optuna.distributions writes them, and the sampler's system attrs as JSON text."""

    params: dict[str, tuple[float, str]]
    system_attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class StoredTrial:
    """A trial of the study as a sampler reads it: its state, values (by objective), params
    (internal value, distribution JSON), system attrs (JSON text) and last reported value."""

    trial_id: int
    number: int
    state: str
    values: list[float] | None
    params: dict[str, tuple[float, str]]
    system_attrs: dict[str, str]
    last: tuple[int, float] | None  # (step, value) of its last finite report


class StudyWrites:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    def add_trials(self, study_id: int, new: list[NewTrial]) -> list[tuple[int, int]]:
        """Write `new` as running trials of the study, in one transaction: (trial id, number)
        of each, in order. Numbers follow the study's trials, as Optuna numbers them (a
        trial's number is how many of the study's trials came before it); the study's row is
        locked meanwhile (on PostgreSQL; SQLite's writes are one at a time), as Optuna does."""
        at = datetime.now(UTC).replace(tzinfo=None)
        out: list[tuple[int, int]] = []
        with self._write() as conn:
            conn.execute(
                sa.select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update()
            )
            count = sa.select(sa.func.count()).where(trials.c.study_id == study_id)
            number = int(conn.execute(count).scalar() or 0)
            params, attrs = [], []
            for k, t in enumerate(new):
                trial_id = conn.execute(
                    trials.insert()
                    .values(number=number + k, study_id=study_id, state="RUNNING", datetime_start=at)
                    .returning(trials.c.trial_id)
                ).scalar_one()
                out.append((int(trial_id), number + k))
                params += [
                    {"trial_id": trial_id, "param_name": n, "param_value": v, "distribution_json": d}
                    for n, (v, d) in t.params.items()
                ]
                attrs += [
                    {"trial_id": trial_id, "key": n, "value_json": v} for n, v in t.system_attrs.items()
                ]
            if params:
                conn.execute(trial_params.insert(), params)
            if attrs:
                conn.execute(trial_system_attributes.insert(), attrs)
        return out

    def report(self, values: list[tuple[int, int, float]]) -> set[int]:
        """Each (trial id, step, finite value) as the trial's intermediate value at that step,
        in one transaction, as Trial.report writes it: only for a trial still running (one the
        study holds ended, a cancelled sweep's, takes none) and a step it has no value at (the
        first value reported at a step is kept). The trial ids that took their values."""
        ids = sorted({t for t, _, _ in values})
        if not ids:
            return set()
        with self._write() as conn:
            running = set(
                conn.execute(
                    sa.select(trials.c.trial_id).where(
                        trials.c.trial_id.in_(ids), trials.c.state == "RUNNING"
                    )
                ).scalars()
            )
            have = {
                (int(t), int(step))
                for t, step in conn.execute(
                    sa.select(trial_intermediate_values.c.trial_id, trial_intermediate_values.c.step).where(
                        trial_intermediate_values.c.trial_id.in_(ids)
                    )
                )
            }
            rows, seen = [], set(have)
            for trial_id, step, value in values:
                if trial_id in running and (trial_id, step) not in seen:
                    seen.add((trial_id, step))
                    rows.append(
                        {
                            "trial_id": trial_id,
                            "step": step,
                            "intermediate_value": value,
                            "intermediate_value_type": "FINITE",
                        }
                    )
            if rows:
                conn.execute(trial_intermediate_values.insert(), rows)
        return running

    def finish(self, trial_id: int, state: str, values: list[float] | None) -> bool:
        """End a running trial as Study.tell does: `state` (COMPLETE, PRUNED or FAIL) with its
        finite `values` (one per objective; a pruned trial's is its last reported value, as
        Optuna gives it), in one transaction. False, writing nothing, when the study holds it
        ended already (tell's skip_if_finished)."""
        at = datetime.now(UTC).replace(tzinfo=None)
        with self._write() as conn:
            held = conn.execute(
                sa.select(trials.c.state).where(trials.c.trial_id == trial_id).with_for_update()
            ).scalar()
            if held != "RUNNING":
                return False
            if state == "PRUNED" and values is None:
                last = conn.execute(
                    sa.select(
                        trial_intermediate_values.c.intermediate_value,
                        trial_intermediate_values.c.intermediate_value_type,
                    )
                    .where(trial_intermediate_values.c.trial_id == trial_id)
                    .order_by(trial_intermediate_values.c.step.desc())
                    .limit(1)
                ).first()
                if last is not None and last.intermediate_value_type == "FINITE":
                    values = [float(last.intermediate_value)]
            if values:
                conn.execute(
                    trial_values.insert(),
                    [
                        {"trial_id": trial_id, "objective": k, "value": v, "value_type": "FINITE"}
                        for k, v in enumerate(values)
                    ],
                )
            conn.execute(
                trials.update().where(trials.c.trial_id == trial_id).values(state=state, datetime_complete=at)
            )
        return True

    def trials(self, study_id: int, after_id: int, watch: list[int]) -> list[StoredTrial]:
        """The study's trials with an id above `after_id` (new since a reader last looked) or
        in `watch` (running when it looked), in number order, in one read (a snapshot): what a
        unit's copy of the study needs to follow it (worker/search.py Mirror), where Optuna's
        storage reads every running trial's every row through its ORM."""
        with self.engine.connect() as conn, conn.begin():
            found = conn.execute(
                sa.select(trials.c.trial_id, trials.c.number, trials.c.state)
                .where(
                    trials.c.study_id == study_id,
                    (trials.c.trial_id > after_id) | trials.c.trial_id.in_(watch),
                )
                .order_by(trials.c.number)
            ).all()
            ids = [int(t.trial_id) for t in found]
            if not ids:
                return []
            params: dict[int, dict[str, tuple[float, str]]] = {i: {} for i in ids}
            for r in conn.execute(
                sa.select(
                    trial_params.c.trial_id,
                    trial_params.c.param_name,
                    trial_params.c.param_value,
                    trial_params.c.distribution_json,
                ).where(trial_params.c.trial_id.in_(ids))
            ):
                params[int(r.trial_id)][str(r.param_name)] = (float(r.param_value), str(r.distribution_json))
            attrs: dict[int, dict[str, str]] = {i: {} for i in ids}
            for a in conn.execute(
                sa.select(
                    trial_system_attributes.c.trial_id,
                    trial_system_attributes.c.key,
                    trial_system_attributes.c.value_json,
                ).where(trial_system_attributes.c.trial_id.in_(ids))
            ):
                attrs[int(a.trial_id)][str(a.key)] = str(a.value_json)
            ended = [int(t.trial_id) for t in found if t.state != "RUNNING"]
            values: dict[int, list[tuple[int, float]]] = {}
            last: dict[int, tuple[int, float]] = {}
            if ended:
                for v in conn.execute(
                    sa.select(trial_values.c.trial_id, trial_values.c.objective, trial_values.c.value).where(
                        trial_values.c.trial_id.in_(ended), trial_values.c.value_type == "FINITE"
                    )
                ):
                    values.setdefault(int(v.trial_id), []).append((int(v.objective), float(v.value)))
                iv = trial_intermediate_values
                top = (
                    sa.select(iv.c.trial_id, sa.func.max(iv.c.step).label("step"))
                    .where(iv.c.trial_id.in_(ended))
                    .group_by(iv.c.trial_id)
                    .subquery()
                )
                for x in conn.execute(
                    sa.select(iv.c.trial_id, iv.c.step, iv.c.intermediate_value)
                    .join(top, (iv.c.trial_id == top.c.trial_id) & (iv.c.step == top.c.step))
                    .where(iv.c.intermediate_value_type == "FINITE")
                ):
                    last[int(x.trial_id)] = (int(x.step), float(x.intermediate_value))
        return [
            StoredTrial(
                int(t.trial_id),
                int(t.number),
                str(t.state),
                [v for _, v in sorted(values[int(t.trial_id)])] if int(t.trial_id) in values else None,
                params[int(t.trial_id)],
                attrs[int(t.trial_id)],
                last.get(int(t.trial_id)),
            )
            for t in found
        ]
