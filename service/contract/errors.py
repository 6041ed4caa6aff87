"""Domain errors, raised and caught by every layer; only the API maps them to status codes
(service/api/errors.py). And ErrorType: every `error.type` a job or a sweep can end with."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    """A failed job's or sweep's `error.type` (a str: it is stored and sent as its value)."""

    DIVERGED = "diverged"  # the loss became inf or nan
    OUT_OF_MEMORY = "out_of_memory"
    DEVICE_UNAVAILABLE = "device_unavailable"  # training.device is cuda on a worker without one
    TIME_LIMIT = "time_limit"  # training.max_seconds ran out
    BAD_DATA = "bad_data"  # the dataset cannot be read or does not fit the spec
    BAD_SPEC = "bad_spec"  # a stored spec that no longer validates
    BAD_PARAMS = "bad_params"  # a sweep's trial parameters make an invalid job
    OVER_LIMIT = "over_limit"  # a trial over the caps of the worker that took it, never trained
    INTERNAL = "internal"
    WORKER_LOST = "worker_lost"  # leases expired max_attempts times
    BROKER_UNAVAILABLE = "broker_unavailable"  # stored, but the broker refused the message
    NO_TRIAL_SUCCEEDED = "no_trial_succeeded"
    BUDGET_EXHAUSTED = "budget_exhausted"  # a sweep's budget was reached before any trial finished
    RETRAIN_FAILED = "retrain_failed"  # a sweep's best trial, retrained, failed
    RETRAIN_REFUSED = "retrain_refused"  # a sweep's best trial could not be submitted


class DomainError(Exception):
    """A request the domain refuses; `detail` is what the caller is told."""

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class SpecError(DomainError, ValueError):
    """A field the caller gave cannot be used; `loc` is its path, e.g. ("body", "dataset", "id").
    `detail` has FastAPI's own 422 shape, so a client reads it like any validation error."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__([{"loc": list(loc), "msg": message, "type": "value_error"}])
        self.loc = loc
        self.message = message

    def __str__(self) -> str:
        return f"{'.'.join(map(str, self.loc))}: {self.message}"


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class TooLarge(DomainError):
    pass


class AtCapacity(DomainError):
    """The tenant is at its cap; `retry_after_s` says when to try again."""

    def __init__(self, detail: Any, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    """A dependency (the broker) is down; the same request may succeed later."""
