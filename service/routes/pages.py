"""Pages of a tenant's jobs or sweeps, newest first, behind an opaque cursor.

The cursor is the `seq` of the last row of the page, base64-wrapped so that clients treat it as
a token rather than a number to compute with.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from service.errors import Invalid
from service.store.repository import Row

# (how many rows, the cursor's seq or None for the first page) → rows, newest first
Fetch = Callable[[int, int | None], list[Row]]


def page(fetch: Fetch, limit: int, cursor: str | None) -> tuple[list[Row], str | None]:
    """Up to `limit` rows after `cursor`, and the cursor of the next page (None on the last).
    One row more than the page is fetched, to know whether another page follows."""
    rows = fetch(limit + 1, decode(cursor))
    rows, more = rows[:limit], len(rows) > limit
    return rows, encode(rows[-1]["seq"]) if more else None


def encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        # A non-ASCII cursor makes b64decode raise ValueError, not binascii.Error (found by
        # schemathesis); digits are ASCII and few, so the number fits the database's integer.
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        digits = raw[1:]
        if raw[:1] == "s" and digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(digits)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        pass
    raise Invalid(("query", "cursor"), "not a cursor this server handed out")
