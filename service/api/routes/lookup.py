"""The answers every route of a job or a sweep gives alike: 404 for a row the tenant does not
have (another tenant's reads as missing), and what a cancel request answers."""

from __future__ import annotations

from collections.abc import Callable

from service.contract.errors import Conflict, NotFound
from service.store.repository import CancelOutcome, Row


def found(kind: str, row_id: str, row: Row | None) -> Row:
    """`row`, or a 404 naming the `kind` ("job", "sweep") of what is missing."""
    if row is None:
        raise NotFound(f"no {kind} {row_id!r}")
    return row


def cancelled(kind: str, row_id: str, outcome: CancelOutcome, read: Callable[[], Row | None]) -> Row:
    """The row after the store's cancel said `outcome`, read again with `read`: 404 if it is
    missing, 409 if it had already finished."""
    if outcome == "missing":
        raise NotFound(f"no {kind} {row_id!r}")
    row = found(kind, row_id, read())
    if outcome == "finished":
        raise Conflict(f"{kind} {row_id} is already {row['status']}")
    return row
