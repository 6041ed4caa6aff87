"""What a worker process holds for its whole life: its name, the store, the shutdown flag, the
reaper thread and its presence in the fleet's list (worker/presence.py)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from functools import cached_property, lru_cache

from celery import Celery

from service.contract.urls import redact_url, redact_urls
from service.notify.listeners import tell_on_change
from service.notify.webhooks import WebhookSender
from service.queue.broker import (
    RUN_BATCH_PREDICTION_TASK,
    RUN_JOB_TASK,
    RUN_SWEEP_TASK,
    RUN_SWEEP_UNIT_TASK,
    queue_depth,
)
from service.settings import Settings, get_settings
from service.store import Repository, open_store
from service.store.artifacts import Artifacts
from service.store.batch_predictions import BatchPredictions
from service.store.sweep_units import SweepUnits
from service.store.workers import WorkerRegistry
from worker.presence import Presence

log = logging.getLogger("regtrain.worker")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The lease owner: which process trains a job, as shown in the job's history.
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.shutdown = threading.Event()
        self._reaper: threading.Thread | None = None
        self.webhooks: WebhookSender  # set with the store

    @cached_property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.settings)

    @cached_property
    def store(self) -> Repository:
        store = open_store(self.settings.store_url)
        self.webhooks = tell_on_change(store, self.settings)
        return store

    @cached_property
    def units(self) -> SweepUnits:
        return SweepUnits(self.store.engine)

    @cached_property
    def workers(self) -> WorkerRegistry:
        return WorkerRegistry(self.store.engine)

    @cached_property
    def presence(self) -> Presence:
        # Beats as often as a lease is renewed; readers count a worker gone after lease_seconds.
        return Presence(self.name, socket.gethostname(), self.settings.heartbeat_seconds)

    def start_reaper(self, app: Celery) -> None:
        # Every worker also sends the webhook deliveries that are due, its own and those a
        # process that died left behind.
        _ = self.store
        self.webhooks.start()
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_forever, args=(app,), name="regtrain-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_forever(self, app: Celery) -> None:
        # Every worker runs one; the store's conditional UPDATEs hand each expired job to
        # exactly one of them, so no leader election is needed.
        while not self.shutdown.wait(self.settings.reaper_interval_s):
            try:
                self.reap_once(app)
            except Exception:
                log.exception("reaper pass failed; trying again next interval")

    def reap_once(self, app: Celery) -> None:
        s = self.settings
        for job_id, queue in self.store.reap(s.max_attempts, s.resend_after_s):
            log.warning("job %s: (re)sending its message on %s", job_id, queue)
            app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
        sweeps = self.store.reap_sweeps(s.max_attempts, s.resend_after_s)
        for sweep_id, queue in sweeps.resend:
            log.warning("sweep %s: (re)sending its message on %s", sweep_id, queue)
            app.send_task(RUN_SWEEP_TASK, args=[sweep_id], queue=queue)
        for sweep_id, status in sweeps.ended:
            self._end_study(sweep_id, status)
        for unit_id, queue in self.units.reap(s.max_attempts, s.resend_after_s):
            log.warning("sweep unit %s: (re)sending its message on %s", unit_id, queue)
            app.send_task(RUN_SWEEP_UNIT_TASK, args=[unit_id], queue=queue)
        for prediction_id, queue in BatchPredictions(self.store.engine).reap(
            s.max_attempts, s.resend_after_s
        ):
            log.warning("batch prediction %s: (re)sending its message on %s", prediction_id, queue)
            app.send_task(RUN_BATCH_PREDICTION_TASK, args=[prediction_id], queue=queue)
        self._resend_lost(app)
        # Workers killed outright (a clean stop deletes its own row); readers already skip them.
        self.workers.purge(s.lease_seconds)
        gone = self.webhooks.outbox.purge(s.webhook_history_s)
        if gone:
            log.info("webhooks: %d ended deliveries older than %gs deleted", gone, s.webhook_history_s)

    def _end_study(self, sweep_id: str, status: str) -> None:
        """A sweep the reaper ended (its coordinator died) tells its study, if it is a search,
        that the trials still running there ended, as the coordinator would have."""
        # Optuna only here, in a pass that ended a sweep, not in every worker's start.
        from worker.search import end_running_trials

        why = f"{status}: the sweep's worker stopped answering, and the sweep ended {status}"
        try:
            ended = end_running_trials(sweep_id, self.settings.store_url, why)
        except Exception:  # the sweep has ended all the same; the rest of the pass goes on
            log.exception("sweep %s: could not end its running trials in the study", sweep_id)
            return
        if ended:
            log.info("sweep %s: %d running trials of its study ended (%s)", sweep_id, ended, why)

    def _resend_lost(self, app: Celery) -> None:
        """Messages the broker lost (a Redis restart, a send that failed after the store had
        committed `queued`), found without waiting for resend_after_s: a queue that holds fewer
        messages than the store has rows queued on it (jobs, sweeps and sweep units) has lost
        that many, so as many of the rows that have waited longer than lost_message_after_s are
        sent again, longest waiting first, each through its own task (a duplicate is harmless:
        the store decides)."""
        after = self.settings.lost_message_after_s
        for queue, (queued, stale) in self.store.waiting(after).items():
            depth = queue_depth(app, queue)
            missing = min(queued - depth, stale)
            if missing <= 0:
                continue
            resend = self.store.resend_waiting(queue, after, missing)
            log.warning(
                "queue %s holds %d messages for %d queued rows: resending %d jobs, %d sweeps, %d units",
                queue,
                depth,
                queued,
                len(resend.jobs),
                len(resend.sweeps),
                len(resend.units),
            )
            for task, ids in (
                (RUN_JOB_TASK, resend.jobs),
                (RUN_SWEEP_TASK, resend.sweeps),
                (RUN_SWEEP_UNIT_TASK, resend.units),
            ):
                for row_id in ids:
                    app.send_task(task, args=[row_id], queue=queue)


@lru_cache
def runtime() -> Runtime:
    return Runtime(get_settings())


def open_store_or_exit() -> Repository:
    """The worker's store, opened (and migrated); or a one-line reason on stderr and exit 1."""
    rt = runtime()
    try:
        return rt.store
    except Exception as e:
        url = redact_url(rt.settings.store_url)
        reason = redact_urls(str(e).strip().splitlines()[0]) if str(e).strip() else type(e).__name__
        print(f"regtrain worker: cannot open the store at {url}: {reason}", file=sys.stderr, flush=True)
        # os._exit: called from Celery's worker_init, where SystemExit would be logged and swallowed.
        os._exit(1)


def lower_priority(nice: int) -> None:
    """Run this worker `nice` steps below normal CPU priority (REGTRAIN_WORKER_NICE): on a host
    it shares with an API, training then takes only the CPU the API leaves.

    nice alone is not enough on Linux with autogroup scheduling (the kernel's default on most
    distributions): the CPU is shared between sessions first, and a process's nice only weighs
    against the processes of its own session. A worker that leads a session of its own (as
    `regtrain up` starts it, or a service manager) would still take half the cores from the
    API, so the session's autogroup is lowered as well; never a session it shares with others,
    which the same step would slow down."""
    if nice <= 0:
        return
    os.nice(nice)
    if os.getsid(0) != os.getpid():
        return
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write(str(nice))
    except OSError:  # no autogroup scheduling (another OS, a kernel without it): nice suffices
        pass
