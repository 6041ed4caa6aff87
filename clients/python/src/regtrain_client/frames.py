"""Documents as pandas DataFrames, for notebooks (pandas is optional: imported only here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    import pandas as pd

M = TypeVar("M", bound=BaseModel)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:  # pragma: no cover (depends on the environment)
        raise ImportError(
            "to_dataframe() needs pandas: pip install pandas (or 'regtrain-client[notebook]')"
        ) from e
    return pandas


def dataframe(records: Iterable[dict[str, Any]], index: str | None = None) -> pd.DataFrame:
    frame = _pandas().DataFrame.from_records(list(records))
    if index is not None and index in frame.columns:
        frame = frame.set_index(index)
    return frame


class Rows(list[M]):
    """A list of documents (e.g. a job's EpochMetrics) that also converts to a DataFrame."""

    index: str | None = None

    def to_dataframe(self) -> pd.DataFrame:
        """One row per document, one column per field (fields a newer server adds included)."""
        return dataframe((m.model_dump() for m in self), self.index)


class EpochRows(Rows[M]):
    index = "epoch"
