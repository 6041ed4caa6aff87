"""Sweeps and their trials in the store: submit, read, cancel (the API side); claim, record trials and
units, wait for the retrain job, finish and reap (the worker side)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa

from service.contract.errors import ErrorType
from service.store import leased, mlflow_runs
from service.store.base import StoreBase, grouped, new_id, now, requeued
from service.store.datasets import hold_dataset
from service.store.leased import FINISHED, CancelOutcome, Row
from service.store.tables import (
    jobs,
    sweep_trials,
    sweep_units,
    sweeps,
)

log = logging.getLogger("regtrain.store")

# A trial may also end pruned (stopped early by the sweep's pruner).
TRIAL_FINISHED = (*FINISHED, "pruned")


class ReapedSweeps(NamedTuple):
    resend: list[tuple[str, str]]  # (sweep id, queue) of each sweep to send a message for
    # (sweep id, status) of each sweep whose worker went silent and that the reaper ended:
    # cancelled (a cancel was asked for) or failed worker_lost (out of attempts)
    ended: list[tuple[str, str]]


@dataclass(frozen=True)
class SweepClaim:
    """A sweep a worker now owns (its coordinator: the units say which trials are done)."""

    sweep_id: str
    tenant: str
    spec: dict[str, Any]
    attempt: int
    # The base spec's notify.secret (write-only, so not in `spec`): the retrain job's.
    notify_secret: str | None = None
    # The egress rule the API admitted the sweep under: its retrain job inherits it.
    egress_private: bool = False


class SweepStore(StoreBase):
    def create_sweep(
        self,
        *,
        tenant: str,
        spec: dict[str, Any],
        queue: str,
        trials: list[dict[str, Any]],
        idempotency_key: str | None = None,
        request_sha256: str | None = None,
        notify_secret: str | None = None,
        dataset_id: str | None = None,
        warnings: list[str] | None = None,
        egress_private: bool = False,
    ) -> Row:
        """Insert a queued sweep and one queued row per trial (`trials[i]` = trial i's params);
        raises sa.exc.IntegrityError if the idempotency key is taken. `dataset_id`: the tenant's
        upload it trains on, held as create_job holds a job's (DatasetGone if deleted meanwhile)."""
        sweep_id = new_id()
        at = now()
        values = leased.queued_values(
            row_id=sweep_id,
            tenant=tenant,
            spec=spec,
            queue=queue,
            at=at,
            idempotency_key=idempotency_key,
            request_sha256=request_sha256,
        )
        values["warnings"] = warnings or None  # how it runs unlike what was asked (a clamp)
        with self._write() as conn:
            if dataset_id is not None:
                hold_dataset(conn, dataset_id, tenant)
            conn.execute(
                sweeps.insert().values(**values, notify_secret=notify_secret, egress_private=egress_private)
            )
            if trials:  # a search's trials are added as the sampler proposes them
                conn.execute(
                    sweep_trials.insert(),
                    [
                        {
                            "sweep_id": sweep_id,
                            "trial_index": i,
                            "params": p,
                            "status": "queued",
                            "vectorized": False,
                        }
                        for i, p in enumerate(trials)
                    ],
                )
        sweep = self.get_sweep(sweep_id)
        assert sweep is not None
        return sweep

    def get_sweep(self, sweep_id: str, tenant: str | None = None) -> Row | None:
        return self._first(leased.by_id(sweeps, sweep_id, tenant))

    def sweep_by_idempotency_key(self, tenant: str, key: str) -> Row | None:
        return self._first(leased.by_idempotency_key(sweeps, tenant, key))

    def list_sweeps(
        self, tenant: str, *, status: str | None, limit: int, before_seq: int | None
    ) -> list[Row]:
        """Newest first; `before_seq` is the cursor, as for jobs."""
        return self._all(leased.page(sweeps, tenant, status=status, limit=limit, before_seq=before_seq))

    def trials(self, sweep_ids: list[str]) -> dict[str, list[Row]]:
        """Each sweep's trial rows, in index order."""
        if not sweep_ids:
            return {}
        query = (
            sweep_trials.select()
            .where(sweep_trials.c.sweep_id.in_(sweep_ids))
            .order_by(sweep_trials.c.sweep_id, sweep_trials.c.trial_index)
        )
        with self._read() as conn:
            return grouped(conn.execute(query).mappings(), "sweep_id", sweep_ids)

    def requeue_unsent_sweep(self, sweep_id: str) -> bool:
        """`requeue_unsent` for sweeps (its trials are still queued: they never ran)."""
        with self._write() as conn:
            done = leased.requeue_unsent(conn, sweeps, sweep_id, now())
            if done:  # fail_queued_sweep cancelled every trial; none of them had started
                conn.execute(
                    sweep_trials.update()
                    .where(sweep_trials.c.sweep_id == sweep_id)
                    .values(status="queued", finished_at=None)
                )
        return done

    def cancel_sweep(self, sweep_id: str, tenant: str | None = None) -> CancelOutcome:
        """As `cancel` for jobs: a queued sweep ends at once, a running one is flagged."""
        at = now()
        with self._write() as conn:
            outcome = leased.cancel(conn, sweeps, sweep_id, tenant, at)
            if outcome == "cancelled":
                _settle_trials(conn, [sweep_id], "cancelled", at)
        return outcome

    def fail_queued_sweep(self, sweep_id: str, error: dict[str, Any]) -> None:
        """A sweep that could not be put on the queue (broker down) fails instead of waiting."""
        at = now()
        with self._write() as conn:
            if leased.fail_queued(conn, sweeps, sweep_id, error, at):
                _settle_trials(conn, [sweep_id], "cancelled", at)

    def claim_sweep(
        self, sweep_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> SweepClaim | None:
        """Take a queued sweep, or a running one whose worker went silent, in one conditional
        UPDATE (as `claim` does for jobs); its unfinished trials are then running."""
        with self._write() as conn:
            row = leased.claim(
                conn,
                sweeps,
                sweep_id,
                owner,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                at=now(),
                returning=(
                    sweeps.c.tenant,
                    sweeps.c.spec,
                    sweeps.c.attempts,
                    sweeps.c.notify_secret,
                    sweeps.c.egress_private,
                ),
            )
            if row is None:
                return None
            if self.mlflow_tracking:  # due every few seconds while it runs (store/mlflow_runs.py)
                mlflow_runs.track(conn, sweep_id, "sweep", now())
            # A trial in a unit is the unit's holder's to mark (store/sweep_units.py). A path's
            # steps are a chain this worker trains itself: they are held, and started, from now.
            held = {"worker": owner} if (row.spec or {}).get("path") is not None else {}
            conn.execute(
                sweep_trials.update()
                .where(
                    sweep_trials.c.sweep_id == sweep_id,
                    sweep_trials.c.status.not_in(TRIAL_FINISHED),
                    sweep_trials.c.unit.is_(None),
                )
                .values(status="running", updated_at=now(), **held)
            )
            return SweepClaim(
                sweep_id, row.tenant, row.spec, row.attempts, row.notify_secret, bool(row.egress_private)
            )

    def sweep_heartbeat(self, sweep_id: str, owner: str, lease_seconds: float) -> bool | None:
        """As `heartbeat`: True = cancel requested, False = carry on, None = lease lost."""
        with self._write() as conn:
            return leased.heartbeat(conn, sweeps, sweep_id, owner, lease_seconds, now())

    def record_trial(self, sweep_id: str, owner: str, index: int, **fields: Any) -> bool:
        """Write one finished trial (status, metrics, score, fold_scores, best_epoch,
        vectorized, error, epochs_trained, pruned_at_epoch, reason), only while `owner`
        holds the sweep's lease."""
        at = now()
        with self._write() as conn:
            if not leased.owns(conn, sweeps, sweep_id, owner):
                return False
            conn.execute(
                sweep_trials.update()
                .where(sweep_trials.c.sweep_id == sweep_id, sweep_trials.c.trial_index == index)
                .values(finished_at=at, updated_at=at, **fields)
            )
        return True

    def trials_changed(self, sweep_id: str, after: datetime | None) -> list[Row]:
        """A sweep's trial rows written after `after` (all with None), oldest change first."""
        query = sweep_trials.select().where(sweep_trials.c.sweep_id == sweep_id)
        if after is not None:
            query = query.where(sweep_trials.c.updated_at > after)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query.order_by(sweep_trials.c.updated_at)).mappings()]

    def await_retrain(
        self,
        sweep_id: str,
        owner: str,
        *,
        best_index: int,
        best_job_id: str,
        warnings: list[str],
    ) -> bool:
        """The search is over and its best trial's retrain job queued: the sweep stays running,
        with no lease (no worker holds it; the reaper leaves it be), until that job finishes
        (see settle_sweep). `warnings` join those the sweep was admitted with."""
        with self._write() as conn:
            before = conn.execute(sa.select(sweeps.c.warnings).where(sweeps.c.id == sweep_id)).scalar()
            warnings = [*(before or []), *(w for w in warnings if w not in (before or []))]
            done = conn.execute(
                sweeps.update()
                .where(leased.held(sweeps, sweep_id, owner))
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    best_index=best_index,
                    best_job_id=best_job_id,
                    warnings=warnings,
                )
                .returning(sweeps.c.id)
            ).first()
            if done is None:
                return False
            _settle_trials(conn, [sweep_id], "cancelled", now())
        self.settle_sweep(sweep_id)
        return True

    def settle_sweep(self, sweep_id: str) -> str | None:
        """A sweep waiting for its retrain job ends with the job: succeeded with it, failed
        when it failed or was cancelled, cancelled when the sweep's cancel was asked for. Its
        new status, or None while it still waits (or was not waiting)."""
        waiting = (
            (sweeps.c.id == sweep_id)
            & (sweeps.c.status == "running")
            & sweeps.c.lease_owner.is_(None)
            & sweeps.c.best_job_id.is_not(None)
        )
        with self._write() as conn:
            row = conn.execute(
                sa.select(sweeps.c.best_job_id, sweeps.c.cancel_requested).where(waiting)
            ).first()
            if row is None:
                return None
            job = conn.execute(
                sa.select(jobs.c.status, jobs.c.error).where(jobs.c.id == row.best_job_id)
            ).first()
            job_status = job.status if job is not None else "failed"
            if row.cancel_requested:
                status, error = "cancelled", None
            elif job_status not in FINISHED:
                return None
            elif job_status == "succeeded":
                status, error = "succeeded", None
            else:
                error = {
                    "type": ErrorType.RETRAIN_FAILED,
                    "message": f"the best trial's retrain job {row.best_job_id} ended {job_status}",
                }
                status = "failed"
            done = conn.execute(
                sweeps.update().where(waiting).values(status=status, finished_at=now(), error=error)
            ).rowcount
        return status if done else None

    def job_finished(self, job_id: str) -> None:
        for sweep_id in self.sweeps_awaiting(job_id):
            self.settle_sweep(sweep_id)

    def sweeps_awaiting(self, job_id: str) -> list[str]:
        query = sa.select(sweeps.c.id).where(
            sweeps.c.best_job_id == job_id, sweeps.c.status == "running", sweeps.c.lease_owner.is_(None)
        )
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def set_param_importances(self, sweep_id: str, owner: str, importances: dict[str, float]) -> bool:
        """Keep the importances of a search that has ended (its lease owner only)."""
        with self._write() as conn:
            done = conn.execute(
                sweeps.update()
                .where(leased.held(sweeps, sweep_id, owner))
                .values(param_importances=importances)
            ).rowcount
        return bool(done)

    def finish_sweep(
        self,
        sweep_id: str,
        owner: str,
        status: Literal["succeeded", "failed", "cancelled"],
        *,
        best_index: int | None = None,
        best_job_id: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Write the final state once (lease owner only); unfinished trials end cancelled."""
        at = now()
        with self._write() as conn:
            values = {"best_index": best_index, "best_job_id": best_job_id, "error": error}
            if leased.finish(conn, sweeps, sweep_id, owner, status, at, **values) is None:
                return False
            _settle_trials(conn, [sweep_id], "cancelled", at)
        return True

    def release_sweep(self, sweep_id: str, owner: str) -> str | None:
        """Give a sweep back to the queue (its worker is shutting down); its queue, or None."""
        with self._write() as conn:
            queue = leased.release(conn, sweeps, sweep_id, owner, now())
            if queue is not None:
                _requeue_trials(conn, [sweep_id])
        return queue

    def reap_sweeps(self, max_attempts: int, resend_after_s: float) -> ReapedSweeps:
        """`reap` for sweeps: the sweeps to send a message for, and those it ended."""
        at = now()
        with self._write() as conn:
            transitions = leased.expire(conn, sweeps, max_attempts, at)
            back = requeued(transitions)
            _requeue_trials(conn, [sweep_id for sweep_id, _ in back])
            ended = [(sweep_id, status) for status, sweep_id, _ in transitions if status != "queued"]
            _settle_trials(conn, [sweep_id for sweep_id, _ in ended], "cancelled", at)
            stale = leased.resend_stale(conn, sweeps, resend_after_s, at)
        return ReapedSweeps(back + stale, ended)


def _requeue_trials(conn: sa.Connection, sweep_ids: list[str]) -> None:
    """A sweep back on the queue: the trials its worker was running wait for the next one."""
    if sweep_ids:
        conn.execute(
            sweep_trials.update()
            .where(
                sweep_trials.c.sweep_id.in_(sweep_ids),
                sweep_trials.c.status == "running",
                sweep_trials.c.unit.is_(None),  # a unit's trials follow their unit's lease
            )
            .values(status="queued")
        )


def _settle_trials(conn: sa.Connection, sweep_ids: list[str], status: str, at: datetime) -> None:
    """A sweep that ended leaves no trial and no unit queued or running."""
    if sweep_ids:
        conn.execute(
            sweep_trials.update()
            .where(sweep_trials.c.sweep_id.in_(sweep_ids), sweep_trials.c.status.not_in(TRIAL_FINISHED))
            .values(status=status, finished_at=at)
        )
        conn.execute(
            sweep_units.update()
            .where(sweep_units.c.sweep_id.in_(sweep_ids), sweep_units.c.status.in_(("queued", "running")))
            .values(status=status, finished_at=at, lease_owner=None, lease_expires_at=None)
        )
