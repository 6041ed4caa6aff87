"""What a process that changes jobs tells the world after each change, wired once for the API
and every worker: the job's Redis doorbell (its event streams wake at once on a fleet; without
Redis they read the store on a timer) and its webhooks (rows in the outbox, sent by `sender`)."""

from __future__ import annotations

from service.notify.webhooks import Webhooks, WebhookSender
from service.queue.doorbell import Doorbell
from service.settings import Settings
from service.store import Repository


def tell_on_change(store: Repository, settings: Settings) -> WebhookSender:
    """Add the doorbell and the webhooks to the store's listeners; the sender that delivers the
    webhooks (it starts on first use)."""
    sender = WebhookSender(settings, store)
    store.listeners += [Doorbell(settings).ring, Webhooks(store, sender)]
    return sender
