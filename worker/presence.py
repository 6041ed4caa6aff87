"""This worker as the fleet sees it: a thread that writes the worker's row in the store every
heartbeat (its queues, device, what it trains, its recent epoch rate) and deletes it when the
worker stops cleanly (service/store/workers.py; read by GET /v1/workers and /metrics).

What it trains is set by the leases (worker/lease.py: a job's, a sweep's, a unit's, nested while
a sweep's coordinator trains a unit itself), and the epochs by the tasks' epoch callbacks, so
the row says what the store says: a worker is busy with the row whose lease it holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from service.store.base import now
from service.store.workers import WorkerBeat, WorkerRegistry
from service.version import regtrain_version

log = logging.getLogger("regtrain.worker")

# The epoch rate is over the same window as /metrics' fleet-wide regtrain_epochs_per_second, so
# the workers' rates of jobs' epochs add up to it (that one counts jobs' metrics rows; here, a
# sweep unit's epochs count too, one per trial).
RATE_WINDOW_S = 60.0


class Presence:
    def __init__(self, name: str, host: str, interval_s: float) -> None:
        self.name = name
        self.host = host
        self.interval_s = interval_s
        self.started_at: datetime = now()
        self._busy: list[str] = []  # innermost lease last
        self._epochs: deque[float] = deque()  # when each recent epoch ended (monotonic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def busy_with(self, row_id: str) -> Iterator[None]:
        """While the block runs, this worker trains `row_id` (a job, sweep or unit id)."""
        self._busy.append(row_id)
        try:
            yield
        finally:
            self._busy.remove(row_id)

    def epoch(self) -> None:
        """One epoch trained (a job's, or one trial's in a sweep unit)."""
        self._epochs.append(time.monotonic())

    def epochs_per_second(self) -> float:
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._epochs and self._epochs[0] < cutoff:
            self._epochs.popleft()
        return len(self._epochs) / RATE_WINDOW_S

    def beat(
        self, registry: WorkerRegistry, celery_name: str | None, queues: list[str], device: str | None
    ) -> None:
        registry.beat(
            WorkerBeat(
                name=self.name,
                celery_name=celery_name,
                host=self.host,
                queues=queues,
                device=device,
                version=regtrain_version(),
                started_at=self.started_at,
                busy_with=self._busy[-1] if self._busy else None,
                epochs_per_second=self.epochs_per_second(),
            )
        )

    def start(
        self, registry: Callable[[], WorkerRegistry], celery_name: str | None, queues: list[str]
    ) -> None:
        """Beat every interval_s from a thread of its own until stop()."""
        if self._thread is not None:
            return

        def run() -> None:
            device = describe_device()  # torch's import: seconds, once, off Celery's thread
            failing = False
            while True:
                try:
                    self.beat(registry(), celery_name, queues, device)
                    failing = False
                except Exception:  # the store is down: the row goes stale, and comes back after
                    if not failing:  # one line per outage, not one per beat
                        log.warning("worker %s: presence heartbeat failed", self.name, exc_info=True)
                    failing = True
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=run, name="regtrain-presence", daemon=True)
        self._thread.start()

    def stop(self, registry: WorkerRegistry) -> None:
        """A clean shutdown: no more beats, and the row goes at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 10)
        try:
            registry.leave(self.name)
        except Exception:  # it goes stale instead, and the next reaper pass deletes it
            log.warning("worker %s: could not leave the fleet's list", self.name, exc_info=True)


def describe_device() -> str:
    """What this process trains an "auto" job on: `cuda:N (name)` (N as CUDA_VISIBLE_DEVICES
    names it, for a worker started with --gpu N) or `cpu`."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    index = visible if visible.isdigit() else "0"
    return f"cuda:{index} ({torch.cuda.get_device_name(0)})"
