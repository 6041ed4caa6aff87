"""Idempotency-Key, for jobs and sweeps alike: a retried POST with the same key and the same body
returns what the first one made; with another body it is a 409."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from service.contract.errors import Conflict
from service.store.repository import Row


@dataclass(frozen=True)
class Once:
    """One POST under an optional Idempotency-Key.

    `find` reads the tenant's row stored under a key; `what` names the body in a 409 ("job
    spec", "sweep").
    """

    find: Callable[[str], Row | None]
    key: str | None
    body: dict[str, Any]
    what: str
    # What two requests under one key are compared by: the sha256 of the body's canonical JSON.
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(json.dumps(self.body, sort_keys=True).encode()).hexdigest()
        object.__setattr__(self, "digest", digest)

    @property
    def request_sha256(self) -> str | None:
        """What the new row stores to be compared with a retry (nothing without a key; an empty
        key stores nothing either, so a retry under it is refused as a different body)."""
        return self.digest if self.key else None

    def previous(self) -> Row | None:
        """What an earlier request with this key made, or None; a 409 if its body differed."""
        if self.key is None:
            return None
        existing = self.find(self.key)
        return None if existing is None else self.same_request(existing)

    def create(self, insert: Callable[[], Row]) -> tuple[Row, bool]:
        """(insert(), True); or, when a concurrent retry with the same key won the insert (its
        unique index refused ours), (that row, False)."""
        try:
            return insert(), True
        except sa.exc.IntegrityError:
            existing = self.find(self.key or "")
            if existing is None:
                raise
            return self.same_request(existing), False

    def same_request(self, existing: Row) -> Row:
        """`existing` (what an earlier request with this key made), or a 409 if its body differed."""
        if existing["request_sha256"] != self.digest:
            raise Conflict(f"this Idempotency-Key was used with a different {self.what}")
        return existing
