"""What GET /metrics exports, in Prometheus' text format.

Job counts, queue depth, job durations and the epoch rate are read from the store at scrape time,
so every API replica reports the whole fleet the same way (no per-process counters to add up).
Request latency is the one per-process measure, timed by a middleware around every route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store import Repository
from service.store.job_counts import DURATION_BUCKETS, FINISHED
from service.store.repository import now
from service.store.workers import WorkerRegistry

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RATE_WINDOW_S = 60
# A stream lasts as long as its job: its "latency" would drown every other route's.
UNTIMED_ROUTES = frozenset({"/v1/jobs/{job_id}/events"})


class StoreCollector(Collector):
    """Every series it knows of has a sample from the first scrape on, 0 included (each status,
    each queue a job can be sent to, each final status's histogram): a series that appears
    only once something happens reads as absent, not 0, to a query or an alert."""

    def __init__(self, store: Repository, queues: Sequence[str]) -> None:
        self.store = store
        self.queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        counts = self.store.job_status_counts()
        by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
        queued: dict[str, int] = dict.fromkeys(self.queues, 0)
        for (status, queue), n in counts.items():
            by_status[status] = by_status.get(status, 0) + n
            if queue:  # finished jobs are counted whatever their queue (under "")
                queued[queue] = queued.get(queue, 0) + (n if status == "queued" else 0)
        jobs = GaugeMetricFamily(
            "regtrain_jobs",
            "Jobs in the store now, by status: a deleted job is no longer counted here (the "
            "duration histogram keeps every job that finished).",
            labels=["status"],
        )
        for status, n in by_status.items():
            jobs.add_metric([status], n)
        yield jobs
        depth = GaugeMetricFamily(
            "regtrain_queue_depth", "Jobs queued and not yet taken by a worker, by queue.", labels=["queue"]
        )
        for queue, n in sorted(queued.items()):
            depth.add_metric([queue], n)
        yield depth

        durations = HistogramMetricFamily(
            "regtrain_job_duration_seconds",
            "Time from a job's start to its end, by final status, of every job that finished, "
            "deleted ones included (a histogram only grows; regtrain_jobs counts the jobs in the "
            "store now). A job cancelled or failed before it started has no duration.",
            labels=["status"],
        )
        histogram = self.store.job_duration_histogram(DURATION_BUCKETS)
        for status in FINISHED:
            histogram.setdefault(status, ([0] * len(DURATION_BUCKETS), 0, 0.0))
        for status, (cumulative, total, seconds) in sorted(histogram.items()):
            buckets = [(str(float(b)), float(n)) for b, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", float(total)))
            durations.add_metric([status], buckets, seconds)
        yield durations

        yield CounterMetricFamily(
            "regtrain_epochs",
            "Epochs trained (metrics rows written, counted as they are written).",
            value=self.store.epochs_recorded(),
        )
        recent = self.store.epochs_recorded(since=now() - timedelta(seconds=RATE_WINDOW_S))
        yield GaugeMetricFamily(
            "regtrain_epochs_per_second",
            f"Epochs trained per second over the last {RATE_WINDOW_S} s, across every worker.",
            value=recent / RATE_WINDOW_S,
        )


class WorkerCollector(Collector):
    """One series per live worker (GET /v1/workers' list: heard from within `alive_s`), from
    the rows the workers write with each heartbeat."""

    def __init__(self, store: Repository, alive_s: float) -> None:
        self.workers = WorkerRegistry(store.engine)
        self.alive_s = alive_s

    def collect(self) -> Iterator[Metric]:
        rows = self.workers.alive(self.alive_s)
        busy = GaugeMetricFamily(
            "regtrain_worker_busy",
            "1 while the worker trains a job, sweep or sweep unit, else 0; live workers only.",
            labels=["worker"],
        )
        rate = GaugeMetricFamily(
            "regtrain_worker_epochs_per_second",
            f"Epochs the worker trained per second over the last {RATE_WINDOW_S} s (each trial's "
            "epoch in a sweep unit), as of its last heartbeat.",
            labels=["worker"],
        )
        for row in rows:
            busy.add_metric([row.name], 1 if row.busy_with is not None else 0)
            rate.add_metric([row.name], row.epochs_per_second)
        yield busy
        yield rate


def make_registry(
    store: Repository, worker_alive_s: float, queues: Sequence[str]
) -> tuple[CollectorRegistry, Histogram]:
    """The app's own registry (two apps in one process never share counters); `queues`: every
    queue a job can be sent to, each with a depth sample while empty."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(store, queues))
    registry.register(WorkerCollector(store, worker_alive_s))
    latency = Histogram(
        "regtrain_http_request_duration_seconds",
        "Time to answer an API request, by method, route template and status code.",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, latency


# The access log: one line per request, with its latency, written here instead of by uvicorn
# (regtrain api turns uvicorn's off). uvicorn's AccessFormatter rebuilt the request line and
# styled the status per record: a tenth of a job read's CPU under load, for a line without the
# one figure an operator reads an access log for.
access_log = logging.getLogger("regtrain.access")


class RequestTimer:
    """ASGI middleware: observe each request's latency under its route template (not its raw
    path, so ids never become label values), and write its access line."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            if template not in UNTIMED_ROUTES:
                self.latency.labels(scope["method"], template, str(status)).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status, seconds)


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    """`127.0.0.1:52044 - "GET /v1/jobs/ab12?x=1 HTTP/1.1" 200 2.1ms`, uvicorn's line plus the
    time taken."""
    client = scope.get("client")
    query = scope.get("query_string", b"")
    target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
    access_log.info(
        '%s:%s - "%s %s HTTP/%s" %d %.1fms',
        *(client or ("-", "-")),
        scope["method"],
        target,
        scope.get("http_version", "1.1"),
        status,
        seconds * 1e3,
    )
