"""Which s3:// objects a tenant may train on or register: the grants of REGTRAIN_DATA_SOURCES,
never the artifacts location.

The server's credentials reach every bucket the operator gave it, its own artifacts (every
tenant's uploads, checkpoints and exports) included; a tenant's URI must not turn them into the
tenant's. So an s3:// dataset is admitted only under a grant for its tenant (or `*`), compared by
whole path segments (a grant of `s3://b/pre` admits `s3://b/pre/x.csv`, never
`s3://b/prefix-other/x.csv`), and never under REGTRAIN_ARTIFACTS_URL's bucket and prefix, even
where a grant covers it. The API checks at admission (a job, a validation, a registration), the
worker again before it reads (a grant removed since fails the job, unread).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from service.settings import Settings

EVERY_TENANT = "*"
# The one user of a server without API keys (service.api.auth.DEFAULT_TENANT).
SINGLE_USER = "default"


@dataclass(frozen=True)
class Location:
    """A bucket and a key prefix as path segments (empty: the whole bucket)."""

    bucket: str
    segments: tuple[str, ...]

    @classmethod
    def of(cls, uri: str) -> Location:
        """A grant's or the artifacts' s3://bucket/prefix (a trailing slash changes nothing)."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(bucket, tuple(prefix.strip("/").split("/")) if prefix.strip("/") else ())

    def holds(self, bucket: str, segments: tuple[str, ...]) -> bool:
        return bucket == self.bucket and segments[: len(self.segments)] == self.segments

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{'/'.join(self.segments)}"


@dataclass(frozen=True)
class DataSources:
    grants: tuple[tuple[str, Location], ...]  # (tenant or "*", location)
    artifacts: Location | None
    # REGTRAIN_DATA_SOURCES unset on a process without API keys: its single user may read any
    # bucket but the artifacts (a worker without keys, behind an API with them, still opens
    # nothing to the API's tenants: none of them is `default`, and the API admitted none)
    open_to_single_user: bool

    def refusal(self, tenant: str, uri: str) -> str | None:
        """Why `tenant` may not read the s3:// `uri` (a message that names no grant of another
        tenant), or None when it may. Any other scheme is not this rule's to judge."""
        if not uri.startswith("s3://"):
            return None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        segments = tuple(key.split("/"))
        # S3 keys are literal, but a client library may normalize: a key whose segments are not
        # plain names could mean another object than the one the grant was compared with.
        if not key or any(unquote(s) in ("", ".", "..") for s in segments):
            return "the object key must be a plain path (no empty, '.' or '..' segments)"
        if self.artifacts is not None and self.artifacts.holds(bucket, segments):
            return "the server's artifacts location is not a dataset source"
        if self.open_to_single_user and tenant == SINGLE_USER:
            return None
        if any(t in (tenant, EVERY_TENANT) and loc.holds(bucket, segments) for t, loc in self.grants):
            return None
        return "no data source granted to this tenant (REGTRAIN_DATA_SOURCES) holds this object"


def data_sources(settings: Settings) -> DataSources:
    """The rule of these settings, parsed once per value."""
    return _parse(settings.data_sources, settings.artifacts_url, keyless=not settings.api_keys)


@lru_cache(maxsize=8)
def _parse(text: str | None, artifacts_url: str | None, *, keyless: bool) -> DataSources:
    grants: list[tuple[str, Location]] = []
    for entry in (text or "").split(","):
        tenant, sep, uri = entry.strip().partition(":")
        if sep and tenant and uri.startswith("s3://"):  # the setting's pattern refused the rest
            grants.append((tenant, Location.of(uri)))
    artifacts = Location.of(artifacts_url) if artifacts_url else None
    return DataSources(tuple(grants), artifacts, open_to_single_user=text is None and keyless)
