"""GET /metrics: Prometheus' text format (outside /v1, like the health probes: no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Jobs by status, queue depth, job durations, epochs trained and their rate (read from
    the store, so every replica reports the fleet), and this process's request latency."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
