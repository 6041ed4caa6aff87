"""The broker: a doorbell that tells a worker which job to look at, never the job itself.

Shared by the API (which only sends, by task name, and never imports the worker) and the worker.
The message carries the job id alone; the store holds the job. Hence the settings below: the
broker may lose, duplicate or delay a message and nothing breaks, because a worker claims a job
in the store with a conditional UPDATE before it trains, and the reaper re-sends what was lost.
"""

from __future__ import annotations

from typing import Literal

from celery import Celery

from service.queue import file_broker
from service.settings import Settings

RUN_JOB_TASK = "regtrain.run_job"
RUN_SWEEP_TASK = "regtrain.run_sweep"
RUN_SWEEP_UNIT_TASK = "regtrain.run_sweep_unit"  # sent by a sweep's coordinator, never by the API
RUN_BATCH_PREDICTION_TASK = "regtrain.run_batch_prediction"
QueueKind = Literal["cpu", "gpu"]


def queue_name(settings: Settings, kind: QueueKind) -> str:
    return f"{settings.queue_prefix}{kind}"


def queue_for_device(settings: Settings, device: str) -> str:
    """cuda jobs go to the gpu queue, cpu jobs to the cpu queue, auto where configured."""
    kind: QueueKind = "gpu" if device == "cuda" else "cpu" if device == "cpu" else settings.auto_device_queue
    return queue_name(settings, kind)


def celery_events(settings: Settings) -> bool:
    """Are Celery's remote control and task events on (REGTRAIN_CELERY_EVENTS)? Never on the
    embedded broker: kombu's file transport keeps a fanout queue per worker as files, and those
    of a worker that was killed would take a file per broadcast for ever."""
    return bool(settings.broker_url) and settings.celery_events is not False


def make_celery(settings: Settings) -> Celery:
    app = Celery("regtrain")
    events = celery_events(settings)
    if settings.broker_url:
        broker_url = settings.broker_url
        transport_options = {
            # Redis hands an unacknowledged message to another worker after this long. Training
            # can outlast any value, so this only bounds how long a message of a dead worker
            # waits; a redelivered message of a job still leased is a no-op (the claim fails),
            # and the reaper, not redelivery, is what restarts a lost job (within lease_seconds).
            "visibility_timeout": 6 * 3600,
            # Keys of several installations (or test runs) sharing one Redis never meet.
            "global_keyprefix": settings.queue_prefix,
        }
    else:
        # No server to install: messages are files in the data dir (one machine only).
        # The folders are made when a channel opens (file_broker.Channel), never at import.
        root = settings.data_dir / "broker"
        broker_url = f"{file_broker.SCHEME}://localhost/"
        transport_options = {
            "data_folder_in": str(root / "queue"),
            "data_folder_out": str(root / "queue"),
            "control_folder": str(root / "control"),
            "staging_folder": str(root / "staging"),
            # how often the worker looks for a new message file: dispatch latency is about half this
            "polling_interval": 0.05,
        }
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=transport_options,
        # A worker started before Redis keeps trying rather than exiting (compose starts them
        # together); a request never waits more than a few seconds on a dead broker.
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # A worker outlives a broker outage of any length (a Redis restart) by reconnecting
        # forever instead of exiting after Celery's default 100 tries.
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # A job that is training when the broker connection drops trains on: the store, not
        # the broker, owns it (its lease and its metrics go to the database). Its message,
        # unacked, may come back later; the claim then finds the job finished and drops it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # The API answers quickly (or 503) when the broker is down instead of hanging.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        # Ack after the task returns (acks_late) together with prefetch 1: a worker busy
        # training holds no second message, so a queued job goes to an idle worker instead of
        # waiting behind a long one.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # A task whose worker process died is not put back by Celery: that is how requeue
        # loops start (a job that kills its worker, forever). The store's reaper re-queues it
        # after its lease expires and fails it worker_lost after max_attempts.
        task_reject_on_worker_lost=False,
        # A task that raised is acked as well: its job has failed in the store (or will be
        # reaped), and redelivering it would only loop.
        task_acks_on_failure_or_timeout=True,
        # Results, states and revokes live in the store; Celery keeps none of them.
        task_ignore_result=True,
        result_backend=None,
        task_track_started=False,
        # Cancel goes through the store's flag (polled by the training loop), not revoke, which
        # cannot stop a running task; liveness goes through the store's leases and the workers'
        # rows. Remote control and task events are there for Celery's own tools (`celery
        # inspect`, Flower), which a platform's operators already run (see celery_events).
        worker_send_task_events=events,
        worker_enable_remote_control=events,
        # No task-sent event: it would be the API's, a publish on every submit's path; Flower
        # lists a task from its worker's task-received on.
        task_send_sent_event=False,
        # Every job names its queue (cpu or gpu, see queue_for_device); these only cover a
        # message sent without one, and declare the prefixed queues on first use.
        task_default_queue=queue_name(settings, "cpu"),
        task_create_missing_queues=True,
    )
    return app


def queue_depth(app: Celery, queue: str) -> int:
    """How many messages wait on `queue` (the Redis list's length, the queue folder's files)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return int(conn.default_channel.queue_declare(queue=queue).message_count)


class Broker:
    """What the API needs of the broker: put a job id on a queue, and say it is reachable."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings)

    def enqueue(self, job_id: str, queue: str) -> None:
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

    def enqueue_sweep(self, sweep_id: str, queue: str) -> None:
        self.app.send_task(RUN_SWEEP_TASK, args=[sweep_id], queue=queue)

    def enqueue_batch_prediction(self, prediction_id: str, queue: str) -> None:
        self.app.send_task(RUN_BATCH_PREDICTION_TASK, args=[prediction_id], queue=queue)

    def ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
