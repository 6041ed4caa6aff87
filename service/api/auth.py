"""Optional API keys: REGTRAIN_API_KEYS="tenant-a:key1,tenant-b:key2" maps each key to a tenant.

With no keys configured every caller is the one tenant `default` (and the CLI serves loopback
only). With keys, each /v1 call needs `Authorization: Bearer <key>`, and sees its tenant's rows
only: another tenant's ids answer 404, as if they did not exist.
"""

from __future__ import annotations

import hmac

from service.api.errors import Unauthorized

DEFAULT_TENANT = "default"


def parse_api_keys(raw: str | None) -> list[tuple[str, str]]:
    """[(tenant, key), ...]; a malformed entry is a startup error, not a silently open API."""
    pairs: list[tuple[str, str]] = []
    for number, entry in enumerate((raw or "").split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        tenant, sep, key = entry.partition(":")
        if not sep or not tenant.strip() or not key.strip():
            # Never echo the entry: it may be a key.
            raise ValueError(f"REGTRAIN_API_KEYS entry {number} is not tenant:key")
        pairs.append((tenant.strip(), key.strip()))
    return pairs


def tenant_for(authorization: str | None, keys: list[tuple[str, str]]) -> str:
    if not keys:
        return DEFAULT_TENANT
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send Authorization: Bearer <key>")
    presented = token.strip().encode()
    found: str | None = None
    # Compare against every key, in constant time each, so timing reveals neither the key nor
    # which entry matched.
    for tenant, key in keys:
        if hmac.compare_digest(presented, key.encode()):
            found = tenant
    if found is None:
        raise Unauthorized("invalid API key")
    return found
