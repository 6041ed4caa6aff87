"""What a process that changes jobs tells the world after each change, wired once for the API
and every worker: the job's Redis doorbell (its event streams wake at once on a fleet; without
Redis they read the store on a timer), its webhooks (rows in the outbox, sent by `sender`) and,
where REGTRAIN_MLFLOW_TRACKING_URI is set, its MLflow run (service/notify/mlflow.py)."""

from __future__ import annotations

from service.notify.mlflow import track_in_mlflow
from service.notify.webhooks import Webhooks, WebhookSender
from service.queue.doorbell import Doorbell
from service.settings import Settings
from service.store import Repository


def tell_on_change(store: Repository, settings: Settings) -> WebhookSender:
    """Add the doorbell and the webhooks to the store's listeners; the sender that delivers the
    webhooks (it starts on first use)."""
    sender = WebhookSender(settings, store)
    store.listeners += [Doorbell(settings).ring, Webhooks(store, sender)]
    if settings.mlflow_tracking_uri:  # runs in MLflow, from an outbox of their own
        track_in_mlflow(store, settings)
    return sender
