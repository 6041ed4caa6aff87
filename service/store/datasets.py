"""Uploaded and registered datasets in the store: create, read, list and delete (refused while a job or
sweep that trains on it is active)."""

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
        tenant trains on it)."""
        owned = (datasets.c.id == dataset_id) & (datasets.c.tenant == tenant)
        with self._write() as conn:
            if conn.execute(sa.select(datasets.c.id).where(owned)).first() is None:
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
