"""What a worker process holds for its whole life: its name, the store, the shutdown flag and
the reaper thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import cached_property, lru_cache

from celery import Celery

from service.broker import RUN_JOB_TASK, RUN_SWEEP_TASK
from service.doorbell import Doorbell
from service.settings import Settings, get_settings
from service.store import Repository, open_store
from service.webhooks import Webhooks

log = logging.getLogger("regtrain.worker")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The lease owner: which process trains a job, as shown in the job's history.
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.shutdown = threading.Event()
        self._reaper: threading.Thread | None = None

    @cached_property
    def store(self) -> Repository:
        store = open_store(self.settings.store_url)
        # After each change to a job: wake its event streams (a fleet), send its webhooks.
        store.listeners += [Doorbell(self.settings).ring, Webhooks(self.settings, store)]
        return store

    def start_reaper(self, app: Celery) -> None:
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
                reap = self.store.reap(self.settings.max_attempts, self.settings.resend_after_s)
                for job_id, queue in reap:
                    log.warning("job %s: (re)sending its message on %s", job_id, queue)
                    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
                reap = self.store.reap_sweeps(self.settings.max_attempts, self.settings.resend_after_s)
                for sweep_id, queue in reap:
                    log.warning("sweep %s: (re)sending its message on %s", sweep_id, queue)
                    app.send_task(RUN_SWEEP_TASK, args=[sweep_id], queue=queue)
            except Exception:
                log.exception("reaper pass failed; trying again next interval")


@lru_cache
def runtime() -> Runtime:
    return Runtime(get_settings())
