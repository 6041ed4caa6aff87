"""Uploaded and registered datasets in the store: create, read, list and delete (refused while a job or
sweep that trains on it is active), and the hold a submit takes on the one it trains on.

A delete and a submit that uses the dataset race: the submit checks the dataset, the delete finds
no active job (the submit's row is not written yet), both win, and the job fails later on a file
that is gone. So the submit's own transaction holds the dataset's row while it inserts (see
hold_dataset), and the delete locks the row before it looks for active work: one of the two waits
for the other to commit, and then sees what it did."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from service.store.base import DeleteOutcome, StoreBase, now
from service.store.leased import FINISHED, Row
from service.store.tables import (
    datasets,
    jobs,
    sweeps,
)

log = logging.getLogger("regtrain.store")


class DatasetGone(LookupError):
    """The tenant has no such dataset (any more): deleted before the submit could hold it."""


def hold_dataset(conn: sa.Connection, dataset_id: str, tenant: str) -> None:
    """Hold the tenant's dataset for the rest of `conn`'s transaction, which is about to write a
    job or sweep that trains on it; DatasetGone if there is no such row. On PostgreSQL a key-share
    lock on the row: a concurrent delete_dataset (FOR UPDATE) waits for this transaction to
    commit, then finds its job active; a hold behind a delete finds no row. On SQLite every write
    transaction already holds the database's write lock (BEGIN IMMEDIATE, see engine.WRITE), so
    the two run one after the other; FOR KEY SHARE is not rendered there."""
    query = (
        sa.select(datasets.c.id)
        .where(datasets.c.id == dataset_id, datasets.c.tenant == tenant)
        .with_for_update(read=True, key_share=True)
    )
    if conn.execute(query).first() is None:
        raise DatasetGone(dataset_id)


class DatasetStore(StoreBase):
    def create_dataset(self, *, dataset_id: str, tenant: str, **fields: Any) -> Row:
        with self._write() as conn:
            conn.execute(datasets.insert().values(id=dataset_id, tenant=tenant, created_at=now(), **fields))
        row = self.get_dataset(dataset_id)
        assert row is not None
        return row

    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Row | None:
        query = datasets.select().where(datasets.c.id == dataset_id)
        if tenant is not None:
            query = query.where(datasets.c.tenant == tenant)
        with self._read() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def list_datasets(self, tenant: str) -> list[Row]:
        query = datasets.select().where(datasets.c.tenant == tenant).order_by(datasets.c.seq.desc())
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def delete_dataset(self, dataset_id: str, tenant: str) -> DeleteOutcome:
        """Delete an uploaded dataset's row ("active": a queued or running job or sweep of the
        tenant trains on it). The row is locked first (FOR UPDATE on PostgreSQL; SQLite's write
        lock), so a submit holding it (hold_dataset) has committed its job before the search for
        active work reads, and of two deletes the second finds it "missing"."""
        owned = (datasets.c.id == dataset_id) & (datasets.c.tenant == tenant)
        with self._write() as conn:
            if conn.execute(sa.select(datasets.c.id).where(owned).with_for_update()).first() is None:
                return "missing"
            for table in (jobs, sweeps):
                specs = conn.execute(
                    sa.select(table.c.spec).where(table.c.tenant == tenant, table.c.status.not_in(FINISHED))
                ).scalars()
                if any(_dataset_id(spec) == dataset_id for spec in specs):
                    return "active"
            conn.execute(datasets.delete().where(owned))
        return "deleted"


def _dataset_id(spec: Any) -> str | None:
    """The uploaded dataset a job's spec (or a sweep's base spec) trains on."""
    if not isinstance(spec, dict):
        return None
    dataset = (spec.get("base") or spec).get("dataset")
    return dataset.get("id") if isinstance(dataset, dict) else None
