"""S3-compatible buckets, as every process reaches them: obstore configured from the standard
AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), for
the artifact store and for datasets given by s3:// URI alike."""

from __future__ import annotations

import os

from obstore.exceptions import GenericError
from obstore.store import S3Store

# What obstore raises once its own retries are spent on a bucket it cannot reach (a network
# failure, a server error): an outage, not a missing or refused object.
BucketUnreachable = GenericError


def s3_store(url: str) -> S3Store:
    """The bucket of s3://bucket[/prefix]; plain http only where the endpoint says so (an
    S3-compatible server on a private network or loopback)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    return S3Store.from_url(url, client_options={"allow_http": endpoint.startswith("http://")})
