"""A tenant's share of the API's exchanges with datasets' origins (URI checks, registrations).

Each exchange waits on the event loop under its deadline, so no number of slow origins holds a
request thread; what bounds them is this: a tenant with REGTRAIN_REMOTE_REQUESTS_PER_TENANT
exchanges open gets a 429 for the next one, so that one tenant's slow origins cost the process a
bounded share of sockets, memory and (after a fetch) parsing threads. Counted per API process:
with several replicas, a tenant may have that many open on each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.contract.errors import AtCapacity

# What a 429 tells a client to wait: most exchanges end within seconds (a HEAD's deadline is
# REGTRAIN_REMOTE_HEAD_DEADLINE_S), and a retry finds a slot as soon as one has.
RETRY_AFTER_S = 5


class RemoteSlots:
    """Per tenant, the exchanges with origins its requests have open. Taken and given back on
    the event loop only (one thread), so a plain dict counts them."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._open: dict[str, int] = {}

    @contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        """One of the tenant's slots while the block runs; AtCapacity (429) when none is free."""
        taken = self._open.get(tenant, 0)
        if taken >= self.per_tenant:
            raise AtCapacity(
                f"this tenant has {taken} requests to datasets' origins in progress, the most "
                "allowed at once; retry once one has finished",
                retry_after_s=RETRY_AFTER_S,
            )
        self._open[tenant] = taken + 1
        try:
            yield
        finally:
            left = self._open[tenant] - 1
            if left:
                self._open[tenant] = left
            else:
                del self._open[tenant]

    def open(self, tenant: str) -> int:
        """The tenant's exchanges in progress."""
        return self._open.get(tenant, 0)
