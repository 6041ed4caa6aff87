"""A sweep's units of work as leased rows: the worker that holds the sweep's lease (its
coordinator) writes units (a batch of trials trained together), any worker on the sweep's queue
claims one with a conditional UPDATE and trains it under a lease of its own, and the reaper hands
a unit whose worker went silent to another. A trial's row is written only by the holder of its
unit's lease, so a SIGKILLed worker's late writes are refused and no trial is recorded twice.

The lifecycle is store/leased.py's (claim, heartbeat, finish, release, expire, resend), the same
as jobs' and sweeps'; what is a unit's own (its trials, the sweep's cancel) stays here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.store import leased
from service.store.base import grouped, now
from service.store.engine import write_transaction
from service.store.leased import FINISHED, Row
from service.store.sweeps import TRIAL_FINISHED
from service.store.tables import sweep_trials, sweep_units, sweeps

UnitStatus = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class UnitClaim:
    """A unit a worker now holds: `todo` are its trials no earlier attempt finished."""

    unit_id: str
    sweep_id: str
    index: int
    tenant: str
    spec: dict[str, Any]
    attempt: int
    todo: tuple[int, ...]
    params: dict[int, dict[str, Any]]  # trial index → params, for the trials in todo
    # What the sweep's budget judges a unit by (contract/sweep_budget.py): when the sweep
    # started, and the epochs its trials had trained when this unit was taken.
    sweep_started_at: datetime | None = None
    epochs_before: int = 0
    queue: str = ""
    folds: tuple[int, ...] | None = None  # the cv folds it trains; None: every fold


def unit_id(sweep_id: str, index: int) -> str:
    return f"{sweep_id}.{index}"


class SweepUnits:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # --- the coordinator (holds the sweep's lease) -----------------------------------------

    def add(
        self,
        sweep_id: str,
        owner: str,
        queue: str,
        units: list[list[int]],
        new_trials: dict[int, dict[str, Any]] | None = None,
        failed_trials: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None = None,
        folds: list[list[int] | None] | None = None,
    ) -> list[str] | None:
        """Queue `units` (each a list of trial indexes) after the sweep's last unit, inserting
        the `new_trials` a search just asked (index → params) with them, and the ones it asked
        that failed at once (index → (params, error)), in one transaction and only while
        `owner` holds the sweep; `folds` gives each unit the cv folds it trains (None: every
        fold; a trial split over fold-units ends once its last part is recorded: record_part).
        The new units' ids; None when the lease is lost."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return None
            last = conn.execute(
                sa.select(sa.func.max(sweep_units.c.unit_index)).where(sweep_units.c.sweep_id == sweep_id)
            ).scalar()
            first = 0 if last is None else int(last) + 1
            if new_trials:
                conn.execute(
                    sweep_trials.insert(),
                    [
                        {
                            "sweep_id": sweep_id,
                            "trial_index": i,
                            "params": p,
                            "status": "queued",
                            "vectorized": False,
                            "updated_at": at,
                        }
                        for i, p in new_trials.items()
                    ],
                )
            if failed_trials:
                conn.execute(sweep_trials.insert(), _failed_at_ask(sweep_id, failed_trials.items(), at))
            ids = []
            for offset, members in enumerate(units):
                index = first + offset
                ids.append(unit_id(sweep_id, index))
                conn.execute(
                    sweep_units.insert().values(
                        id=ids[-1],
                        sweep_id=sweep_id,
                        unit_index=index,
                        trials=members,
                        queue=queue,
                        status="queued",
                        created_at=at,
                        enqueued_at=at,
                        attempts=0,
                        cancel_requested=False,
                        folds=folds[offset] if folds is not None else None,
                    )
                )
                conn.execute(
                    sweep_trials.update()
                    .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index.in_(members))
                    .values(unit=index, status="queued", updated_at=at)
                )
        return ids

    def counts(self, sweep_id: str) -> dict[str, int]:
        """Status → how many of the sweep's units have it."""
        query = (
            sa.select(sweep_units.c.status, sa.func.count())
            .where(sweep_units.c.sweep_id == sweep_id)
            .group_by(sweep_units.c.status)
        )
        with self._read() as conn:
            return {str(s): int(n) for s, n in conn.execute(query).all()}

    def of(self, sweep_ids: list[str]) -> dict[str, list[Row]]:
        """Each sweep's units, in index order."""
        if not sweep_ids:
            return {}
        query = (
            sweep_units.select()
            .where(sweep_units.c.sweep_id.in_(sweep_ids))
            .order_by(sweep_units.c.sweep_id, sweep_units.c.unit_index)
        )
        with self._read() as conn:
            return grouped(conn.execute(query).mappings(), "sweep_id", sweep_ids)

    # --- the budget (contract/sweep_budget.py) -----------------------------------------------

    def spent(self, sweep_id: str) -> tuple[datetime | None, int, int]:
        """(when the sweep started, epochs its trials trained, trials that failed)."""
        failed = sa.select(sa.func.count()).where(
            sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.status == "failed"
        )
        with self._read() as conn:
            started = conn.execute(sa.select(sweeps.c.started_at).where(sweeps.c.id == sweep_id)).scalar()
            return started, _epochs(conn, sweep_id), int(conn.execute(failed).scalar() or 0)

    def stop(
        self,
        sweep_id: str,
        owner: str,
        stopped_by: dict[str, Any] | None,
        reason: str,
        *,
        queued_units: bool = True,
    ) -> Any:
        """A budget was reached: write it as the sweep's `stopped_by` unless one is there (the
        first reached wins; None writes nothing), and end the trials in no unit and (with
        `queued_units`) the units no worker took with their trials, `cancelled` with `reason`,
        untrained; only while `owner` holds the sweep. The sweep's stopped_by now (None when
        the lease is lost)."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return None
            if stopped_by is not None:
                conn.execute(
                    sweeps.update()
                    .where(sweeps.c.id == sweep_id, sweeps.c.stopped_by.is_(None))
                    .values(stopped_by=stopped_by)
                )
            queued: list[int] = []
            if queued_units:
                queued = [
                    int(u)
                    for u in conn.execute(
                        sweep_units.update()
                        .where(sweep_units.c.sweep_id == sweep_id, sweep_units.c.status == "queued")
                        .values(status="cancelled", finished_at=at)
                        .returning(sweep_units.c.unit_index)
                    ).scalars()
                ]
            unit = sweep_trials.c.unit
            conn.execute(
                sweep_trials.update()
                .where(
                    sweep_trials.c.sweep_id == sweep_id,
                    sweep_trials.c.status.not_in(TRIAL_FINISHED),
                    unit.is_(None) | unit.in_(queued),
                )
                .values(status="cancelled", reason=reason, finished_at=at, updated_at=at)
            )
            return conn.execute(sa.select(sweeps.c.stopped_by).where(sweeps.c.id == sweep_id)).scalar()

    def stopped_by(self, unit: str) -> Any:
        """The `stopped_by` of the unit's sweep: what its heartbeat tells the unit."""
        query = (
            sa.select(sweeps.c.stopped_by)
            .join(sweep_units, sweep_units.c.sweep_id == sweeps.c.id)
            .where(sweep_units.c.id == unit)
        )
        with self._read() as conn:
            return conn.execute(query).scalar()

    def base_spec(self, unit: str) -> dict[str, Any] | None:
        """The base JobSpec of the unit's sweep (what a worker checks it can train before it
        claims the unit), None for no such unit."""
        query = (
            sa.select(sweeps.c.spec)
            .join(sweep_units, sweep_units.c.sweep_id == sweeps.c.id)
            .where(sweep_units.c.id == unit)
        )
        with self._read() as conn:
            spec = conn.execute(query).scalar()
        base = spec.get("base") if isinstance(spec, dict) else None
        return base if isinstance(base, dict) else None

    # --- any worker --------------------------------------------------------------------------

    def claim(self, unit: str, owner: str, lease_seconds: float, max_attempts: int) -> UnitClaim | None:
        """Take a queued unit, or a running one whose worker went silent, while its sweep runs
        and no cancel was asked for; its unfinished trials are then running on `owner`."""
        at = now()
        with self._write() as conn:
            sweep = conn.execute(
                sa.select(sweeps.c.id, sweeps.c.tenant, sweeps.c.spec, sweeps.c.started_at)
                .join(sweep_units, sweep_units.c.sweep_id == sweeps.c.id)
                .where(
                    sweep_units.c.id == unit,
                    sweeps.c.status == "running",
                    sa.not_(sweeps.c.cancel_requested),
                    sweeps.c.stopped_by.is_(None),  # a budget was reached: no unit starts
                )
            ).first()
            if sweep is None:
                return None
            row = leased.claim(
                conn,
                sweep_units,
                unit,
                owner,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                at=at,
                returning=(
                    sweep_units.c.unit_index,
                    sweep_units.c.trials,
                    sweep_units.c.attempts,
                    sweep_units.c.queue,
                    sweep_units.c.folds,
                ),
            )
            if row is None:
                return None
            conn.execute(sweep_units.update().where(sweep_units.c.id == unit).values(worker=owner))
            mine = (
                (sweep_trials.c.sweep_id == sweep.id)
                & sweep_trials.c.trial_index.in_(row.trials)
                & sweep_trials.c.status.not_in(TRIAL_FINISHED)
            )
            if row.folds is not None:  # a fold-unit's trials whose part it recorded are done
                recorded = [
                    int(t.trial_index)
                    for t in conn.execute(
                        sa.select(sweep_trials.c.trial_index, sweep_trials.c.parts).where(mine)
                    )
                    if str(row.unit_index) in (t.parts or {})
                ]
                mine = mine & sweep_trials.c.trial_index.not_in(recorded)
            conn.execute(
                sweep_trials.update()
                .where(mine)
                .values(status="running", worker=owner, started_at=at, updated_at=at, progress=None)
            )
            todo = conn.execute(
                sa.select(sweep_trials.c.trial_index, sweep_trials.c.params)
                .where(mine)
                .order_by(sweep_trials.c.trial_index)
            ).all()
            epochs = _epochs(conn, sweep.id)
        return UnitClaim(
            unit,
            sweep.id,
            int(row.unit_index),
            sweep.tenant,
            sweep.spec,
            int(row.attempts),
            tuple(int(t.trial_index) for t in todo),
            {int(t.trial_index): t.params for t in todo},
            sweep.started_at,
            epochs,
            str(row.queue),
            tuple(int(f) for f in row.folds) if row.folds is not None else None,
        )

    def claim_next(
        self, sweep_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> UnitClaim | None:
        """The sweep's first queued unit that this worker wins, or None when none is left."""
        query = (
            sa.select(sweep_units.c.id)
            .where(sweep_units.c.sweep_id == sweep_id, sweep_units.c.status == "queued")
            .order_by(sweep_units.c.unit_index)
        )
        with self._read() as conn:
            queued = list(conn.execute(query).scalars())
        for unit in queued:  # another worker may win a unit between the read and the claim
            claimed = self.claim(unit, owner, lease_seconds, max_attempts)
            if claimed is not None:
                return claimed
        return None

    def asked(self, sweep_id: str) -> int:
        """How many trials the sweep has asked (or, for a grid, holds): its trials' rows."""
        query = sa.select(sa.func.count()).where(sweep_trials.c.sweep_id == sweep_id)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def add_trials(
        self,
        unit: str,
        owner: str,
        sweep_id: str,
        new_trials: dict[int, dict[str, Any]],
        failed_trials: dict[int, tuple[dict[str, Any], dict[str, Any]]],
        cap: int,
    ) -> list[int] | None:
        """Trials a running unit of a search just asked (its first ones, or one for a freed
        slot of a stacked group: worker/unit_task.py), written as this unit's, running on
        `owner`, in one transaction and only while `owner` holds the unit; the ones asked that
        failed at once (index → (params, error)) are written failed. At most `cap` trials in
        the sweep, counted under a lock of the sweep's row, so that units refilling at the same
        time never ask more than the sweep may (its trials, its budget's max_trials): the ones
        past it are not written. The indexes of `new_trials` written, in order; None when the
        lease is lost."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweep_units, unit, owner):
                return None
            # PostgreSQL: units of other workers wait here, so their counts see these rows
            # (SQLite's write transactions are one at a time already).
            conn.execute(sa.select(sweeps.c.id).where(sweeps.c.id == sweep_id).with_for_update()).first()
            room = cap - int(
                conn.execute(sa.select(sa.func.count()).where(sweep_trials.c.sweep_id == sweep_id)).scalar()
                or 0
            )
            failed = list(failed_trials.items())[: max(room, 0)]
            taken = list(new_trials)[: max(room - len(failed), 0)]
            index = conn.execute(
                sa.select(sweep_units.c.unit_index, sweep_units.c.trials).where(sweep_units.c.id == unit)
            ).first()
            assert index is not None  # owned above
            rows = _failed_at_ask(sweep_id, failed, at) + [
                {
                    "sweep_id": sweep_id,
                    "trial_index": i,
                    "params": new_trials[i],
                    "status": "running",
                    "vectorized": False,
                    "unit": int(index.unit_index),
                    "worker": owner,
                    "started_at": at,
                    "updated_at": at,
                }
                for i in taken
            ]
            if rows:
                conn.execute(sweep_trials.insert(), rows)
            if taken:
                conn.execute(
                    sweep_units.update()
                    .where(sweep_units.c.id == unit)
                    .values(trials=[*(index.trials or []), *taken])
                )
        return taken

    def trial_started(self, unit: str, owner: str, sweep_id: str, index: int) -> bool:
        """The trial starts training now (its own started_at: a unit's trials start as its
        groups, or its freed slots, take them), only while `owner` holds the unit."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweep_units, unit, owner):
                return False
            conn.execute(
                sweep_trials.update()
                .where(
                    sweep_trials.c.sweep_id == sweep_id,
                    sweep_trials.c.trial_index == index,
                    sweep_trials.c.status.not_in(TRIAL_FINISHED),
                )
                .values(
                    status="running",
                    worker=owner,
                    # a trial split over fold-units started with its first part
                    started_at=sa.case((sweep_trials.c.parts.is_(None), at), else_=sweep_trials.c.started_at),
                    updated_at=at,
                )
            )
        return True

    def heartbeat(self, unit: str, owner: str, lease_seconds: float) -> bool | None:
        """Renew the unit's lease: True = stop (the sweep's cancel was asked for, or the sweep
        ended), False = carry on, None = the lease is lost. A sweep back on the queue (its
        coordinator's worker was lost) is not a stop: the units go on while a new coordinator
        is found. Stopping then cancelled the unit, and the coordinator, seeing no unit left
        running, ended the sweep with that unit's trials cancelled (seen in CI after a SIGKILL
        in test_a_lost_worker_is_reaped_and_only_unfinished_trials_run_again)."""
        with self._write() as conn:
            state = leased.heartbeat(conn, sweep_units, unit, owner, lease_seconds, now())
            if state is None:
                return None
            sweep = conn.execute(
                sa.select(sweeps.c.status, sweeps.c.cancel_requested)
                .join(sweep_units, sweep_units.c.sweep_id == sweeps.c.id)
                .where(sweep_units.c.id == unit)
            ).first()
        return state or sweep is None or sweep.status in FINISHED or bool(sweep.cancel_requested)

    def record_trial(self, unit: str, owner: str, sweep_id: str, index: int, **fields: Any) -> bool:
        """Write one trial's outcome (as Repository.record_trial), only while `owner` holds the
        unit: a worker that lost it (the reaper gave it on) writes nothing."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweep_units, unit, owner):
                return False
            conn.execute(
                sweep_trials.update()
                .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index == index)
                .values(finished_at=at, updated_at=at, worker=owner, **fields)
            )
        return True

    def record_part(
        self, unit: str, owner: str, sweep_id: str, index: int, n_folds: int, metric: str, **fields: Any
    ) -> bool:
        """Write a fold-unit's outcome of one trial (the fields of record_trial, over the unit's
        folds), only while `owner` holds the unit. The trial ends with the first part that did
        not succeed (failed, pruned, stopped by a budget), or, once its parts cover all
        `n_folds` folds, with its outcome summarized from them (merge_parts); until then it
        keeps running, its epochs_trained their sum (what the budget counts)."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweep_units, unit, owner):
                return False
            held = conn.execute(
                sa.select(sweep_units.c.unit_index, sweep_units.c.folds).where(sweep_units.c.id == unit)
            ).first()
            where = (sweep_trials.c.sweep_id == sweep_id) & (sweep_trials.c.trial_index == index)
            row = conn.execute(
                sa.select(sweep_trials.c.status, sweep_trials.c.parts).where(where).with_for_update()
            ).first()
            if held is None or row is None or row.status in TRIAL_FINISHED:
                return row is not None  # another part ended it (failed, pruned)
            parts = {**(row.parts or {}), str(held.unit_index): {**fields, "folds": list(held.folds or [])}}
            epochs = sum(int(p.get("epochs_trained") or 0) for p in parts.values())
            covered = sorted(f for p in parts.values() for f in p["folds"])
            values: dict[str, Any] = {
                "parts": parts,
                "epochs_trained": epochs,
                "updated_at": at,
                "worker": owner,
            }
            if fields.get("status") != "succeeded":
                values |= {**fields, "epochs_trained": epochs, "finished_at": at}
            elif covered == list(range(n_folds)):
                values |= {**merge_parts(list(parts.values()), metric), "finished_at": at}
            conn.execute(sweep_trials.update().where(where).values(**values))
        return True

    def progress(self, unit: str, owner: str, sweep_id: str, progress: dict[int, dict[str, Any]]) -> None:
        """Each trial's latest step ({"fold", "epoch", "step", <metric>}), appended to its curve
        as [step, value], in one write."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweep_units, unit, owner):
                return
            curves = dict(
                conn.execute(
                    sa.select(sweep_trials.c.trial_index, sweep_trials.c.curve).where(
                        sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index.in_(list(progress))
                    )
                ).all()
            )
            rows = []
            for index, p in progress.items():
                # A unit trained again after its worker died starts its trials over, with the
                # same seed: the steps its first attempt recorded keep their values, as the
                # study keeps the first value reported at a step (worker/search.py, UnitSearch
                # .reported), and only the steps beyond are appended.
                curve = list(curves.get(index) or [])
                if not curve or p["step"] > curve[-1][0]:
                    curve.append([p["step"], p.get("value")])
                rows.append({"b_index": index, "b_progress": p, "b_curve": curve})
            # one statement for the round's trials (executemany), not one each
            conn.execute(
                sweep_trials.update()
                .where(
                    sweep_trials.c.sweep_id == sweep_id,
                    sweep_trials.c.trial_index == sa.bindparam("b_index"),
                )
                .values(
                    progress=sa.bindparam("b_progress", type_=sweep_trials.c.progress.type),
                    curve=sa.bindparam("b_curve", type_=sweep_trials.c.curve.type),
                    updated_at=at,
                ),
                rows,
            )

    def finish(self, unit: str, owner: str, status: UnitStatus, error: dict[str, Any] | None = None) -> bool:
        """Write the unit's final state once (lease owner only); a trial it did not finish ends
        `status` too (a failed unit's with its error)."""
        at = now()
        with self._write() as conn:
            row = conn.execute(
                sa.select(sweep_units.c.sweep_id, sweep_units.c.trials, sweep_units.c.folds).where(
                    sweep_units.c.id == unit
                )
            ).first()
            if row is None or leased.finish(conn, sweep_units, unit, owner, status, at, error=error) is None:
                return False
            if row.folds is None or status != "succeeded":
                # a fold-unit that succeeded recorded its part of each trial: the others end them
                _end_trials(conn, row.sweep_id, row.trials, status, error, at)
        return True

    def release(self, unit: str, owner: str) -> str | None:
        """Give the unit back to the queue (this worker shuts down); its queue, or None."""
        at = now()
        with self._write() as conn:
            queue = leased.release(conn, sweep_units, unit, owner, at)
            if queue is not None:
                _requeue(conn, [unit], at)
        return queue

    # --- the reaper --------------------------------------------------------------------------

    def reap(self, max_attempts: int, resend_after_s: float) -> list[tuple[str, str]]:
        """Units whose worker went silent: back on the queue (their unfinished trials with
        them), or failed worker_lost after max_attempts; (unit id, queue) of each to send a
        message for, with the queued ones whose message may have been lost."""
        at = now()
        with self._write() as conn:
            transitions = leased.expire(conn, sweep_units, max_attempts, at)
            requeued = [(u, q) for status, u, q in transitions if status == "queued"]
            _requeue(conn, [u for u, _ in requeued], at)
            for status, u, _ in transitions:
                if status != "queued":
                    row = conn.execute(
                        sa.select(sweep_units.c.sweep_id, sweep_units.c.trials, sweep_units.c.error).where(
                            sweep_units.c.id == u
                        )
                    ).first()
                    assert row is not None
                    _end_trials(conn, row.sweep_id, row.trials, status, row.error, at)
            stale = leased.resend_stale(conn, sweep_units, resend_after_s, at)
        return requeued + stale


def merge_parts(parts: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """A trial's outcome from its fold-units' succeeded parts, as if one unit had trained every
    fold (worker/training's summary): the objective's mean over every fold (and seed) score,
    each metric's mean weighted by the folds behind it, `<metric>_std` over every score."""
    parts = sorted(parts, key=lambda p: min(p["folds"] or [0]))
    scores = [float(s) for p in parts for s in p.get("fold_scores") or []]
    weights = [len(p["folds"]) for p in parts]
    keys = {k for p in parts for k in p.get("metrics") or {}}
    metrics: dict[str, Any] = {}
    for k in sorted(keys):
        found = [(w, (p.get("metrics") or {}).get(k)) for w, p in zip(weights, parts, strict=True)]
        pairs: list[tuple[int, float]] = [(w, float(v)) for w, v in found if isinstance(v, int | float)]
        metrics[k] = sum(w * v for w, v in pairs) / sum(w for w, _ in pairs) if pairs else None
    mean = sum(scores) / len(scores) if scores else None
    if mean is not None:
        metrics[f"{metric}_std"] = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    epochs = [
        (w, float(p["best_epoch"]))
        for w, p in zip(weights, parts, strict=True)
        if p.get("best_epoch") is not None
    ]
    return {
        "status": "succeeded",
        "metrics": metrics,
        "score": mean,
        "fold_scores": scores,
        "best_epoch": sum(w * e for w, e in epochs) / sum(w for w, _ in epochs) if epochs else None,
        "vectorized": any(bool(p.get("vectorized")) for p in parts),
        "error": None,
        "pruned_at_epoch": None,
        "reason": None,
    }


def _failed_at_ask(
    sweep_id: str, failed: Iterable[tuple[int, tuple[dict[str, Any], dict[str, Any]]]], at: datetime
) -> list[dict[str, Any]]:
    """The rows of trials a search asked that failed at once (index, (params, error))."""
    return [
        {
            "sweep_id": sweep_id,
            "trial_index": i,
            "params": p,
            "status": "failed",
            "error": error,
            "vectorized": False,
            "finished_at": at,
            "updated_at": at,
        }
        for i, (p, error) in failed
    ]


def _epochs(conn: sa.Connection, sweep_id: str) -> int:
    """Epochs the sweep's trials trained, summed over trials, folds and seeds (a trial's
    `epochs_trained`, written as it ends)."""
    total = conn.execute(
        sa.select(sa.func.sum(sweep_trials.c.epochs_trained)).where(sweep_trials.c.sweep_id == sweep_id)
    ).scalar()
    return int(total or 0)


def _end_trials(
    conn: sa.Connection, sweep_id: str, trials: list[int], status: str, error: Any, at: Any
) -> None:
    conn.execute(
        sweep_trials.update()
        .where(
            sweep_trials.c.sweep_id == sweep_id,
            sweep_trials.c.trial_index.in_(trials),
            sweep_trials.c.status.not_in(TRIAL_FINISHED),
        )
        .values(status=status, error=error, finished_at=at, updated_at=at)
    )


def _requeue(conn: sa.Connection, units: list[str], at: Any) -> None:
    """The unfinished trials of units back on the queue wait for the next worker."""
    for unit in units:
        row = conn.execute(
            sa.select(sweep_units.c.sweep_id, sweep_units.c.trials).where(sweep_units.c.id == unit)
        ).first()
        if row is None:
            continue
        conn.execute(
            sweep_trials.update()
            .where(
                sweep_trials.c.sweep_id == row.sweep_id,
                sweep_trials.c.trial_index.in_(row.trials),
                sweep_trials.c.status == "running",
            )
            .values(status="queued", updated_at=at)
        )
