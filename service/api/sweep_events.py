"""GET /v1/sweeps/{id}/events: a sweep as Server-Sent Events.

`trial` (data: the trial, as in the sweep document, plus `event`: started, epoch, pruned,
succeeded, failed or cancelled) whenever a trial starts, ends an epoch, is pruned or finishes; `status` when the sweep's status changes; `done` (the sweep document)
once it has finished, after which the stream ends. Read from the store every half second, so
any API replica serves any sweep. An event's id is the time of the trial write it reports (in
microseconds); reconnect with Last-Event-ID and the stream resumes after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread

from service.api import render
from service.api.routes.events import KEEPALIVE_S, RETRY_MS, sse
from service.contract.documents import trial_document
from service.store import Repository
from service.store.repository import FINISHED

POLL_S = 0.5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def parse_position(raw: str | None) -> datetime | None:
    raw = (raw or "").strip()
    return _EPOCH + int(raw) * _US if raw.isdigit() else None


async def stream(
    store: Repository, sweep_id: str, after: datetime | None, storage_url: str
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n: regtrain sweep {sweep_id}\n\n"
    status: str | None = None
    seen: dict[int, int] = {}  # trial → the last step sent in an epoch event
    quiet_since = time.monotonic()
    while True:
        # The sweep first, then its trials: a sweep read as finished has every trial written.
        doc = await to_thread.run_sync(_document, store, sweep_id, storage_url)
        if doc is None:
            return
        sent = False
        if doc["status"] != status:
            status = doc["status"]
            at = doc["finished_at"] or doc["started_at"] or doc["created_at"]
            yield sse("status", {"status": status, "at": at})
            sent = True
        rows = await to_thread.run_sync(store.trials_changed, sweep_id, after)
        for row in rows:
            at = row["updated_at"]
            if at is not None:
                after = at
            event_id = str((after - _EPOCH) // _US) if after is not None else None
            trial = trial_document(row)
            for what in _what(trial, seen):
                yield sse("trial", {**trial, "event": what}, event_id)
            sent = True
        if status in FINISHED:
            yield sse("done", doc)
            return
        if sent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)


def _what(trial: dict[str, Any], seen: dict[int, int]) -> list[str]:
    """What a trial row's change says, in order: `started` the first time a started trial is
    seen, `epoch` when its latest epoch (`progress`) is past the last one sent, and its end
    (`succeeded`, `pruned`, `failed`, `cancelled`). A trial that trained, or even ended,
    between two reads of the store still starts and reports its latest epoch first; the epochs
    in between are in its job-like curve only as far as the study's intermediate values go."""
    out: list[str] = []
    index, status = trial["index"], trial["status"]
    # A trial starts once a worker holds it. Claiming a sweep marks its trials running a few
    # milliseconds before its units, and their workers, take them (a warm worker is that quick):
    # a running trial no worker holds yet says nothing, as a queued one (asked, waiting in its
    # unit); a trial that ended between two reads still starts first.
    if status == "queued" or (status == "running" and not (trial["started_at"] or trial.get("worker"))):
        return out
    if index not in seen:
        out.append("started")
    last = seen.setdefault(index, 0)
    step = (trial["progress"] or {}).get("step")
    if isinstance(step, int) and step > last:
        seen[index] = step
        out.append("epoch")
    if status not in ("running", "queued"):
        out.append(status)
    return out


def _document(store: Repository, sweep_id: str, storage_url: str) -> dict[str, Any] | None:
    row = store.get_sweep(sweep_id)
    return render.sweep_documents(store, [row], storage_url)[0] if row is not None else None
