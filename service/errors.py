"""Domain errors that carry their own HTTP status; app.py turns them into `{"detail": ...}`."""

from __future__ import annotations

from typing import Any, ClassVar


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


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PayloadTooLarge(ApiError):
    status_code = 413


class TooManyRequests(ApiError):
    """429: the tenant is at its cap; Retry-After says when to try again (seconds)."""

    status_code = 429

    def __init__(self, detail: Any, retry_after_s: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}  # type: ignore[misc]


class Unavailable(ApiError):
    status_code = 503


class Invalid(ApiError):
    """A 422 in FastAPI's own shape, naming the field path, e.g. ("body", "dataset", "id")."""

    status_code = 422

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__([{"loc": list(loc), "msg": message, "type": "value_error"}])
