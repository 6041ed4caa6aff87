"""The webhook outbox keeps ended deliveries for REGTRAIN_WEBHOOK_HISTORY_S, then the reaper
deletes them: the table does not grow with the store's history. Both backends."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from service.store import Repository
from service.store.base import now
from service.store.tables import webhook_deliveries
from service.store.webhook_outbox import WebhookOutbox


def test_ended_deliveries_older_than_the_history_are_purged(store: Repository) -> None:
    job = store.create_job(tenant="t", spec={"name": "x"}, queue="cpu")
    outbox = WebhookOutbox(store.engine)
    ids = {
        name: outbox.add(
            job_id=job["id"],
            tenant="t",
            url="http://example.invalid/",
            event="done",
            body="{}",
            secret=None,
            allow_private=False,
        )
        for name in ("old delivered", "old failed", "new delivered", "pending")
    }
    ended = {
        "old delivered": ("delivered", 3),
        "old failed": ("failed", 3),
        "new delivered": ("delivered", 0),
    }
    with store.engine.begin() as conn:
        for name, (status, days_ago) in ended.items():
            conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == ids[name])
                .values(status=status, finished_at=now() - timedelta(days=days_ago, seconds=1))
            )

    assert outbox.purge(older_than_s=2 * 86400) == 2
    with store.engine.connect() as conn:
        left = set(conn.execute(sa.select(webhook_deliveries.c.id)).scalars())
    assert left == {ids["new delivered"], ids["pending"]}
    assert outbox.purge(older_than_s=2 * 86400) == 0
