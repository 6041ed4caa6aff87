"""Pages of a tenant's jobs or sweeps, newest first, behind an opaque cursor.

The cursor is the `seq` of the last row of the page, base64-wrapped so that clients treat it as
a token rather than a number to compute with.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query

from service.api.schemas import JobStatus
from service.contract.errors import SpecError
from service.store.repository import Row

# The store's list method for one tenant: list_jobs or list_sweeps, its tenant given.
Fetch = Callable[..., list[Row]]


@dataclass(frozen=True)
class PageQuery:
    """What a list route is asked: ?status=&limit=&cursor=."""

    status: JobStatus | None
    limit: int
    cursor: str | None

    def fetch(self, fetch: Fetch) -> tuple[list[Row], str | None]:
        """Up to `limit` rows after the cursor, and the cursor of the next page (None on the
        last). One row more than the page is fetched, to know whether another page follows."""
        return self.split(fetch(**self.fetch_args()))

    def fetch_args(self) -> dict[str, Any]:
        """What the store's list method is asked: one row more than the page, to know whether
        another page follows."""
        return {"status": self.status, "limit": self.limit + 1, "before_seq": decode(self.cursor)}

    def split(self, rows: list[Row]) -> tuple[list[Row], str | None]:
        """The page out of the rows fetched with fetch_args, and the next page's cursor."""
        page, more = rows[: self.limit], len(rows) > self.limit
        return page, encode(page[-1]["seq"]) if more else None


def _page_query(
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> PageQuery:
    return PageQuery(status, limit, cursor)


PageDep = Annotated[PageQuery, Depends(_page_query)]


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
    raise SpecError(("query", "cursor"), "not a cursor this server handed out")
