"""Webhooks: a job's `notify` URL is POSTed `{"event", "job"}` when the job changes status.

They are sent by whichever process makes the change (a worker claims and finishes jobs; the API
cancels queued ones), from a background thread, after the change has committed: best effort,
tried three times, never holding up training. The reaper's transitions (a lost worker) send
none. Each body can be signed with REGTRAIN_WEBHOOK_SECRET (X-Regtrain-Signature: sha256=HMAC
of the body). A tenant must not make the fleet call its own private network, so loopback,
private and link-local targets are refused where API keys are configured (unless
REGTRAIN_WEBHOOK_PRIVATE_TARGETS says otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic_core import to_jsonable_python

from service.settings import Settings
from service.store import Repository
from service.store.repository import FINISHED

log = logging.getLogger("regtrain.webhooks")

TRIES = 3
TIMEOUT_S = 5.0


def _transition(method: str, out: Any) -> bool:
    """Did this store call change the job's status? (see Repository's _rings)"""
    if method in ("claim", "finish", "release"):
        return bool(out)
    if method == "cancel":
        return out == "cancelled"  # "requested": the worker's finish will say it
    return method == "fail_queued"


def target_allowed(url: str, allow_private: bool) -> bool:
    """Whether every address the URL's host resolves to may be called."""
    host = urlsplit(url).hostname
    if not host:
        return False
    if allow_private:
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            return False
    return bool(infos)


class Webhooks:
    """A store listener (Repository.listeners) that sends a job's webhooks."""

    def __init__(self, settings: Settings, store: Repository) -> None:
        self.store = store
        self.secret = settings.webhook_secret
        private = settings.webhook_private_targets
        self.allow_private = private if private is not None else not settings.api_keys
        # One thread: a job's webhooks leave in the order of its changes.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="regtrain-webhooks")

    def __call__(self, job_id: str, method: str, out: Any) -> None:
        if not _transition(method, out):
            return
        job = self.store.get_job(job_id)
        notify = (job or {}).get("spec", {}).get("notify") if job else None
        if not notify:
            return
        from service.jobs import documents

        doc = documents(self.store, [job])[0]  # type: ignore[list-item]
        wanted = notify.get("events") or ["done"]
        if "status" in wanted:
            self._pool.submit(self._deliver, notify["url"], "status", doc)
        if "done" in wanted and doc["status"] in FINISHED:
            self._pool.submit(self._deliver, notify["url"], "done", doc)

    def _deliver(self, url: str, event: str, doc: dict[str, Any]) -> None:
        if not target_allowed(url, self.allow_private):
            log.warning("job %s: webhook to %s refused (a private or unresolvable address)", doc["id"], url)
            return
        body = json.dumps({"event": event, "job": to_jsonable_python(doc)}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "regtrain-webhook", "X-Regtrain-Event": event}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Regtrain-Signature"] = f"sha256={digest}"
        for attempt in range(TRIES):
            try:
                r = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT_S, follow_redirects=False)
                if r.status_code < 500:
                    if r.status_code >= 400:
                        log.warning("job %s: webhook %s answered %d", doc["id"], url, r.status_code)
                    return
            except httpx.HTTPError as e:
                log.info("job %s: webhook %s: %s", doc["id"], url, e)
            if attempt + 1 < TRIES:
                time.sleep(2**attempt)
        log.warning("job %s: webhook %s failed %d times; giving up", doc["id"], url, TRIES)
