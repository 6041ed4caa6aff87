"""HTTP at the edge: the status code of each domain error (service.contract.errors), and the
errors only the HTTP layer has (a malformed request, a missing API key). app.py answers both
as `{"detail": ...}`."""

from __future__ import annotations

from typing import Any, ClassVar

from service.contract.errors import (
    AtCapacity,
    Conflict,
    DomainError,
    NotFound,
    SpecError,
    TooLarge,
    Unavailable,
)

STATUS: dict[type[DomainError], int] = {
    SpecError: 422,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    AtCapacity: 429,
    Unavailable: 503,
}


def status_of(error: DomainError) -> tuple[int, dict[str, str] | None]:
    """The status code and headers a domain error is answered with."""
    for kind in type(error).__mro__:
        if kind in STATUS:
            code = STATUS[kind]
            break
    else:
        code = 400
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, AtCapacity) else None
    return code, headers


class ApiError(Exception):
    status_code = 400
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}
