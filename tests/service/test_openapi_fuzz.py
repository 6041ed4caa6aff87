"""A bounded schemathesis run of the OpenAPI schema against the app (in-process ASGI, a real
SQLite store, the embedded broker and a real S3-compatible server for dataset URIs): no 5xx, and every response as the schema documents it
(status code, content type, headers, body)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from s3_server import S3Server
from schemathesis import checks

from service.api.app import create_app
from service.settings import Settings

# Not checked: the Allow header of a 405. Starlette lists only the methods of the first route
# that matches the path (GET /v1/jobs and POST /v1/jobs are two routes), which is no contract.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


# Built at import (schemathesis reads the schema at collection); the directory goes at exit.
_DATA = tempfile.TemporaryDirectory(prefix="regtrain-fuzz-")
# A high cap: the run submits many jobs (none trains: no worker runs here).
_APP = create_app(Settings(data_dir=Path(_DATA.name) / "data", max_active_jobs=100_000))
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(autouse=True)
def _reachable_bucket_server(s3: S3Server) -> None:
    """A server configured as a deployment is: its AWS_* variables point at a reachable S3
    server (here moto's), so a dataset URI the fuzzer makes up is checked there (missing: 422)
    instead of at an unreachable default endpoint (503, an outage)."""


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_route_answers_as_documented(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
