"""Webhooks: a job's `notify` URL is POSTed `{"event", "job"}` when the job changes status.

The process that makes the change (a worker claims and finishes jobs; the API cancels queued
ones) writes one delivery row per event to the store's outbox after the change has committed,
and any process's sender sends it (store/webhook_outbox.py), so a delivery survives the process
that scheduled it. The reaper's transitions (a lost worker) send none.

Each delivery has a deadline for the whole request, trickling receivers included, and runs
concurrently with every other on one asyncio loop: no receiver delays another tenant's. A 2xx
ends it; a 5xx, 408, 429 or a network failure is tried again with backoff; any other answer ends
it failed. Bodies are signed by the Standard Webhooks scheme (`webhook-id`, stable across the
retries of one delivery, `webhook-timestamp`, `webhook-signature`) with the job's own
notify.secret or its tenant's secret, so no tenant can sign what another's receiver accepts, and
a receiver refuses a replayed delivery by its timestamp.

A tenant must not make the fleet call its own private network, so loopback, private and
link-local targets are refused unless the egress rule recorded with the job allows them (decided
by the API that admitted it, REGTRAIN_EGRESS_PRIVATE_TARGETS; each delivery row carries it),
never by the sending process's own settings: a worker without API keys behind an API with them
sends nothing to loopback. The request goes to the very address that was checked (no second DNS
lookup a rebinding server could answer differently).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic_core import to_jsonable_python
from standardwebhooks import Webhook

from service.contract.addresses import pinned, resolve_target
from service.contract.documents import job_document
from service.settings import Settings
from service.store import Repository
from service.store.repository import FINISHED
from service.store.webhook_outbox import Delivery, WebhookOutbox

log = logging.getLogger("regtrain.webhooks")

DEADLINE_S = 10.0  # for the whole request: connect, send, and the answer's last byte
BACKOFF_S = (1, 4, 16, 60, 300)  # before the 2nd, 3rd, … try; then the delivery fails
MAX_IN_FLIGHT = 32  # deliveries one process sends at once
POLL_S = 1.0  # how often a sender looks for deliveries other processes left due
RETRIED_STATUSES = frozenset({408, 429})


def _transition(method: str, out: Any) -> bool:
    """Did this store call change the job's status? (see Repository's _rings)"""
    if method in ("claim", "finish", "release", "requeue_unsent"):
        return bool(out)
    if method == "cancel":
        return out == "cancelled"  # "requested": the worker's finish will say it
    # fail_queued (the broker was down) sends nothing: the client was answered 503, the job
    # never ran, and a retry under its Idempotency-Key revives it (requeue_unsent above).
    return False


def signature_headers(delivery_id: str, body: str, secret: str | None, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one try (the timestamp is the try's own)."""
    headers = {"webhook-id": delivery_id, "webhook-timestamp": str(int(at.timestamp()))}
    if secret:
        # A whsec_ secret is base64; an older plain REGTRAIN_WEBHOOK_SECRET signs as its bytes.
        key: str | bytes = secret if secret.startswith("whsec_") else secret.encode()
        headers["webhook-signature"] = Webhook(key).sign(delivery_id, at, body)
    return headers


class Webhooks:
    """A store listener (Repository.listeners) that writes a job's webhook deliveries to the
    outbox, then wakes this process's sender."""

    def __init__(self, store: Repository, sender: WebhookSender) -> None:
        self.store = store
        self.sender = sender

    def __call__(self, job_id: str, method: str, out: Any) -> None:
        if not _transition(method, out):
            return
        job = self.store.get_job(job_id)
        notify = job["spec"].get("notify") if job else None
        if not job or not notify:
            return
        doc = job_document(job, self.store.histories([job_id])[job_id])
        wanted = notify.get("events") or ["done"]
        events = [
            e for e in ("status", "done") if e in wanted and (e == "status" or doc["status"] in FINISHED)
        ]
        for event in events:
            body = json.dumps({"event": event, "job": to_jsonable_python(doc)})
            self.sender.outbox.add(
                job_id=job_id,
                tenant=job["tenant"],
                url=notify["url"],
                event=event,
                body=body,
                secret=job.get("notify_secret"),
                allow_private=bool(job.get("egress_private")),
            )
        if events:
            self.sender.wake()


class WebhookSender:
    """Sends the outbox's due deliveries from one asyncio loop on a daemon thread of its own,
    started on first use (a worker starts it at once, so deliveries a dead process left are
    sent even by a fleet whose API processes never schedule one)."""

    def __init__(self, settings: Settings, store: Repository) -> None:
        self.outbox = WebhookOutbox(store.engine)
        self.secrets = settings.tenant_webhook_secrets()
        self._lock = threading.Lock()
        self._resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="regtrain-webhook-dns")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None

    def start(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._wakeup = asyncio.Event()
            thread = threading.Thread(
                target=loop.run_until_complete, args=(self._run(),), name="regtrain-webhooks", daemon=True
            )
            thread.start()

    def wake(self) -> None:
        self.start()
        assert self._loop is not None and self._wakeup is not None
        self._loop.call_soon_threadsafe(self._wakeup.set)

    async def _run(self) -> None:
        assert self._wakeup is not None
        in_flight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            while True:
                try:
                    free = MAX_IN_FLIGHT - len(in_flight)
                    due = await asyncio.to_thread(self.outbox.claim_due, free, DEADLINE_S + 5) if free else []
                except Exception:
                    log.exception("webhooks: reading the outbox failed; trying again")
                    due = []
                for delivery in due:
                    task = asyncio.create_task(self._deliver(client, delivery))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(due) == free and free:
                    continue  # more may be due: look again at once
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), POLL_S)

    async def _deliver(self, client: httpx.AsyncClient, d: Delivery) -> None:
        error = await self._try(client, d)
        try:
            if error is None:
                await asyncio.to_thread(self.outbox.delivered, d)
            elif error.startswith("refused") or d.attempts > len(BACKOFF_S):
                log.warning("job %s: webhook %s to %s failed: %s", d.job_id, d.id, d.url, error)
                await asyncio.to_thread(self.outbox.failed, d, error)
            else:
                log.info("job %s: webhook %s: %s; trying again", d.job_id, d.id, error)
                at = datetime.now(UTC) + timedelta(seconds=BACKOFF_S[d.attempts - 1])
                await asyncio.to_thread(self.outbox.retry, d, at, error)
        except Exception:  # the lease lapses and another try comes
            log.exception("job %s: webhook %s: recording the outcome failed", d.job_id, d.id)

    async def _try(self, client: httpx.AsyncClient, d: Delivery) -> str | None:
        """None once delivered; else why not ("refused …" is final)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DEADLINE_S):
                # Its own threads: a tenant whose names resolve slowly holds up no store call.
                address = await loop.run_in_executor(self._resolver, resolve_target, d.url, d.allow_private)
                if address is None:
                    return "refused: a private or unresolvable address"
                url, host, extensions = pinned(d.url, address)
                secret = d.secret or self.secrets.get(d.tenant)
                headers = {
                    **host,
                    "Content-Type": "application/json",
                    "User-Agent": "regtrain-webhook",
                    "X-Regtrain-Event": d.event,
                    # No keep-alive: connections are pooled by the pinned address, and another
                    # host name on that address must get a TLS handshake (and check) of its own.
                    "Connection": "close",
                    **signature_headers(d.id, d.body, secret, datetime.now(UTC)),
                }
                r = await client.post(url, content=d.body, headers=headers, extensions=extensions)
        except TimeoutError:
            return f"no complete answer within {DEADLINE_S:.0f} s"
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}"
        except Exception as e:  # a URL or secret no request can be made with: never retried
            return f"refused: {type(e).__name__}: {e}"
        if 200 <= r.status_code < 300:
            return None
        if r.status_code >= 500 or r.status_code in RETRIED_STATUSES:
            return f"answered {r.status_code}"
        return f"refused: answered {r.status_code}"
