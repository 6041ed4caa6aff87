"""GET /v1/jobs/{id}/events: a job as Server-Sent Events (status, epoch, checkpoint, log, done).

The stream is built from the store, the one source of truth on every backend: a connection
reads the job's new history, metrics, checkpoint and log rows (a few indexed queries) when the job's
Redis doorbell rings on a fleet, and every few seconds regardless (see service.queue.doorbell), so
any API replica can serve any job. An event's id is the stream position after it,
`HISTORY_SEQ.EPOCH.CHECKPOINT_MICROSECONDS.LOG_SEQ`, so a client that reconnects with
Last-Event-ID gets exactly the events it has not seen (an id of three parts, from a server
before logs, resends the log from its first line).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse

from service.api import render
from service.api.deps import StoreDep, TenantDep
from service.api.routes.job_logs import log_line
from service.contract.errors import NotFound
from service.queue.doorbell import Listener
from service.store import Repository
from service.store.repository import FINISHED

router = APIRouter(prefix="/v1", tags=["jobs"])

KEEPALIVE_S = 15.0
RETRY_MS = 2000
LOG_BATCH = 1000  # log lines read at once; a job's bound holds a few thousand
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


_POSITION = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})\.([0-9]{1,19})(?:\.([0-9]{1,19}))?")
_MAX_INT = 2**31 - 1  # the store's integer columns
_MAX_US = 10**17  # microseconds since 1970: about the year 5100, well inside datetime's range


@dataclass
class Position:
    """How far a client has read: the last history seq, epoch, checkpoint time and log line
    sent."""

    history: int = 0
    epoch: int = 0
    checkpoint_us: int = 0
    log: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> Position:
        """An id this server handed out; anything else (any bytes, digits that are not ASCII,
        numbers past what the store's columns and a datetime hold) starts from the beginning."""
        m = _POSITION.fullmatch((raw or "").strip())
        if m is None:
            return cls()
        history, epoch, checkpoint_us, log = (int(g or 0) for g in m.groups())
        if history > _MAX_INT or epoch > _MAX_INT or checkpoint_us > _MAX_US or log > _MAX_INT:
            return cls()
        return cls(history, epoch, checkpoint_us, log)

    def __str__(self) -> str:
        return f"{self.history}.{self.epoch}.{self.checkpoint_us}.{self.log}"

    @property
    def checkpoint_at(self) -> datetime | None:
        return _EPOCH + self.checkpoint_us * _US if self.checkpoint_us else None


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(jsonable_encoder(data))}\n\n"


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def job_events(
    job_id: str,
    request: Request,
    store: StoreDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """`status` (a history entry), `epoch` (that epoch's metrics row), `checkpoint` (a checkpoint
    record), `log` (a line the worker logged, as GET /logs shows it, with its `cursor`) and,
    once the job has finished, `done` (the job); then the stream ends. Send Last-Event-ID on
    reconnect to resume where the last connection stopped."""
    if await to_thread.run_sync(store.get_job, job_id, tenant) is None:
        raise NotFound(f"no job {job_id!r}")
    return StreamingResponse(
        _stream(store, request.app.state.listener, job_id, Position.parse(last_event_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(store: Repository, listener: Listener, job_id: str, pos: Position) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n: regtrain job {job_id}\n\n"
    quiet_since = time.monotonic()
    async with listener.watch(job_id) as bell:
        async for chunk in _changes(store, bell, listener.poll_s, job_id, pos):
            if chunk is None:  # nothing new: a comment now and then keeps proxies from closing
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                continue
            quiet_since = time.monotonic()
            yield chunk


async def _changes(
    store: Repository, bell: asyncio.Event, poll_s: float, job_id: str, pos: Position
) -> AsyncIterator[str | None]:
    """Each new row as an event, then None after each read of the store; ends after `done`."""
    while True:
        # Cleared before reading: a bell that rings during the read wakes the next wait at once.
        bell.clear()
        # The job first, then its rows: a job read as finished has every row written already.
        job = await to_thread.run_sync(store.get_job, job_id)
        if job is None:
            return
        history, rows, ckpts = await to_thread.run_sync(
            lambda: store.job_changes(
                job_id,
                history_after=pos.history,
                epoch_after=pos.epoch,
                checkpoint_after=pos.checkpoint_at,
            )
        )
        # Read after the job too: a finished job's lines were all written before it finished.
        logs = await to_thread.run_sync(lambda: store.log_lines(job_id, after=pos.log, limit=LOG_BATCH))
        changes = [(h["at"], "status", h) for h in history]
        changes += [(r["at"], "epoch", r) for r in rows]
        changes += [(c["at"], "checkpoint", c) for c in ckpts]
        # Log lines in the order they were written (their seq), between the other events by
        # time: merged rather than sorted, so that a clock that went back between two attempts'
        # workers never sends a later line before an earlier one (Last-Event-ID would skip it).
        lines = [(line["at"], "log", line) for line in logs]
        for _, kind, row in heapq.merge(sorted(changes, key=lambda c: c[0]), lines, key=lambda c: c[0]):
            if kind == "status":
                pos.history = max(pos.history, row["seq"])
                data = {
                    k: row[k] for k in ("status", "at", "attempt", "worker", "resumed_from_epoch", "message")
                }
            elif kind == "log":
                pos.log = row["seq"]
                data = log_line(row)  # as GET /logs shows it, with its cursor
            elif kind == "epoch":
                pos.epoch = max(pos.epoch, row["epoch"])
                data = row["row"]
            else:
                pos.checkpoint_us = max(pos.checkpoint_us, (row["at"] - _EPOCH) // _US)
                data = {k: row[k] for k in ("name", "epoch", "size_bytes", "sha256", "metrics", "at")}
            yield sse(kind, data, str(pos))
        if len(logs) == LOG_BATCH:
            continue  # more lines wait: read on at once (`done` comes after the last)
        if job["status"] in FINISHED:
            doc = await to_thread.run_sync(render.job_documents, store, [job])
            yield sse("done", doc[0], str(pos))
            return
        yield None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bell.wait(), poll_s)
