"""Liveness and readiness probes (outside /v1: no API key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import BrokerDep, StoreDep
from service.api.schemas import Health
from service.contract.urls import redact_urls

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, Any]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(store: StoreDep, broker: BrokerDep) -> Any:
    """The store and the broker are reachable; 503 (naming which is not) otherwise."""
    checks: dict[str, str] = {}
    for name, ping in (("store", store.ping), ("broker", broker.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception as e:
            # unauthenticated: a driver's message may quote the URL, password and all
            checks[name] = f"unreachable: {type(e).__name__}: {redact_urls(str(e))[:200]}"
    ok = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    if ok:
        return body
    return JSONResponse(body | {"detail": "not ready"}, status_code=503)
