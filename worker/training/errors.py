"""Typed training failures: each says what went wrong in words a user can act on."""

from __future__ import annotations

from typing import Any

from service.contract.errors import ErrorType


class TrainingError(Exception):
    """A job that cannot finish. `type` is the job's error.type; `details` are extra fields."""

    def __init__(self, type: ErrorType, message: str, **details: Any) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"type": str(self.type), "message": self.message, **self.details}
