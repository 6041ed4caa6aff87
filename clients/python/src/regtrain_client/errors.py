"""The errors a client raises: the server's error answers, by status, and a failed job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regtrain_client.models import Job


class ApiError(Exception):
    """The server answered with an error; `detail` is its `detail` field."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"{status_code}: {format_detail(detail)}")
        self.status_code = status_code
        self.detail = detail


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class InvalidSpec(ApiError):
    """422: `detail` is a list of {"loc": [...], "msg": ...} naming each bad field."""


class TooManyRequests(ApiError):
    """429: the tenant is at its cap of active jobs; `retry_after_s` says when to try again."""

    retry_after_s: float | None = None


class Unavailable(ApiError):
    pass


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidSpec,
    429: TooManyRequests,
    503: Unavailable,
}


class JobFailed(Exception):
    """Raised by wait(check=True) when a job ends failed or cancelled."""

    def __init__(self, job: Job) -> None:
        err = job.error
        why = f"{err.type}: {err.message}" if err else job.status
        super().__init__(f"job {job.id} {job.status}: {why}")
        self.job = job


def format_detail(detail: Any) -> str:
    """A 422's list of field errors as `body.training.epochs: msg; ...`; anything else as text."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
