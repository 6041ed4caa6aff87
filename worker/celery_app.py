"""The worker's Celery app: the same configuration the API sends with (service.queue.broker), plus
the tasks and the hooks that start the store and the reaper in the worker process.

Start it with `regtrain worker` (one process per GPU, solo pool): see service/cli/main.py.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import signals
from celery.exceptions import Reject

from service.queue.broker import make_celery
from service.settings import get_settings

log = logging.getLogger("regtrain.worker")

app = make_celery(get_settings())
app.conf.include = ["worker.tasks", "worker.sweep_task", "worker.unit_task", "worker.prediction_task"]


class _QuietReturns(logging.Filter):
    """A message handed back to the broker (Reject with requeue: this worker is shutting down,
    or its store is unreachable) is routine, not an error: one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Reject) and exc.requeue:
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("celery.app.trace").addFilter(_QuietReturns())


@signals.worker_init.connect
def _open_store(**_: Any) -> None:
    # Migrations run before the first message is taken (a lock keeps several starters safe). A
    # worker that cannot open its store exits before it takes any message (Celery would only
    # log the error and go on to ack messages it cannot run).
    from worker.runtime import open_store_or_exit

    open_store_or_exit()


@signals.worker_init.connect
def _torch_threads(**_: Any) -> None:
    # The solo pool trains in this process. Left alone, torch takes every core, and two
    # workers on one CPU host would each run twice as many threads as there are cores.
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("torch computes with %d threads", threads)


@signals.worker_init.connect
def _warm_up(**_: Any) -> None:
    # After the threads are set (they shape the kernels loaded) and before Celery says ready:
    # worker_init's handlers run before the consumer starts, so no message waits on this.
    if not get_settings().worker_warmup:
        return
    from worker.search import storage
    from worker.warmup import warm_up

    try:
        imports, steps = warm_up()
        # Optuna's storage on the store, made once per process: its first making creates
        # Optuna's tables (seconds on a new database), which a search's first unit would wait on.
        storage(get_settings().store_url)
        # What the imports made (torch, its compiler's modules, sympy, Optuna: millions of
        # objects) lives as long as the process: kept out of the collector's full passes, each
        # of which would otherwise take a quarter of a second at some write of a sweep's path.
        gc.freeze()
        _warmed.append(
            f"worker warmed up before it said ready: imports {imports:.2f}s, first steps {steps:.2f}s"
        )
    except Exception as e:  # a worker that cannot warm up may still train: the first task finds out
        _warmed.append(f"worker warm-up failed: {type(e).__name__}: {e}")


# What the warm-up did, logged once Celery's logging is set up (after worker_init's handlers).
_warmed: list[str] = []


@signals.worker_ready.connect
def _say_warmed(**_: Any) -> None:
    for line in _warmed:
        log.info("%s", line)


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from worker.runtime import runtime

    runtime().start_reaper(app)


@signals.worker_ready.connect
def _join_fleet(sender: Any = None, **_: Any) -> None:
    # The consumer knows what the worker was started with: Celery's name for it (Flower's,
    # `celery inspect`'s) and the queues it takes messages from.
    from worker.runtime import runtime

    rt = runtime()
    queues = sorted(sender.app.amqp.queues.consume_from) if sender is not None else []
    rt.presence.start(lambda: rt.workers, getattr(sender, "hostname", None), queues)


@signals.worker_shutdown.connect
def _leave_fleet(**_: Any) -> None:
    # After the last task has ended (a warm shutdown waits for it): the row goes at once.
    from worker.runtime import runtime

    rt = runtime()
    rt.presence.stop(rt.workers)


@signals.worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # A warm shutdown (SIGTERM, Ctrl-C) stops the running job at its next step; the task then
    # gives it back to the queue, and another worker resumes it from its last checkpoint.
    from worker.runtime import runtime

    runtime().shutdown.set()
