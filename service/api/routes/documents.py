"""Documents the API builds itself, sent as JSON without a second pass through the route's
response model: they are the model's shape by construction (a test holds them to it), and
validating them again cost more than the rest of GET /v1/jobs/{id}. The decorator's
response_model still writes the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic_core import to_json


def json_document(doc: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`doc` as JSON (datetimes in ISO 8601, non-finite numbers as null), in one Rust pass."""
    content = to_json(doc, inf_nan_mode="null")
    return Response(content=content, status_code=status_code, headers=headers, media_type="application/json")
