"""A trained checkpoint as a predictor: raw inputs in, class labels or raw-unit values out.

The checkpoint's JSON sidecar says everything needed: the spec (to build the model), the input
shape, the task, the class labels, and the standardization fitted on the job's train split,
which is applied to the inputs here exactly as training applied it to the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.contract.architecture import DataShape, Task
from service.contract.spec import JobSpec
from service.data.columns import RowError, encode_rows, transform
from service.data.parsed import DataError, ParsedDataset
from worker.training.checkpoints import read_weights
from worker.training.data import Standardization, text_shape
from worker.training.models import create_model
from worker.training.text import TextEncoder

CHUNK = 4096
# The most values one predict request's rows are padded to (rows × T × F, 64 MB as float32): a
# row of one frame becomes T frames, so short rows would otherwise make a small body a large
# array. A batch prediction's rows come from a dataset, already within its bytes limit.
MAX_FRAME_VALUES = 2**24


class InputError(ValueError):
    """Inputs that do not fit the model (shape, type, non-finite numbers)."""


@dataclass(frozen=True)
class Prepared:
    """Rows already encoded and standardized (Predictor.prepare): predict takes them as they are."""

    X: np.ndarray


def data_shape(sidecar: dict[str, Any]) -> DataShape:
    """The shape of the data a checkpoint's model was trained on, from its sidecar."""
    task: Task = "classification" if sidecar["task"] == "classification" else "regression"
    text = sidecar.get("text")
    if text is not None:  # token ids: the model's embedding has the tokenizer's vocabulary
        return text_shape(
            task, len(sidecar["classes"]), None, int(text["max_length"]), int(text["vocab_size"])
        )
    return DataShape.of(task, sidecar["input_shape"], len(sidecar["classes"]))


def load_model(weights: Path, sidecar: dict[str, Any]) -> torch.nn.Module:
    """The spec's model with the checkpoint's weights, in eval mode (no dropout; batch norm's
    running statistics)."""
    model = create_model(JobSpec.model_validate(sidecar["spec"]), data_shape(sidecar))
    model.load_state_dict(read_weights(weights))
    return model.eval()


class Predictor:
    def __init__(self, weights: Path, sidecar: dict[str, Any]) -> None:
        self.model = load_model(weights, sidecar)
        self.task: str = sidecar["task"]
        self.classes: list[Any] = list(sidecar.get("classes") or [])  # ints stay ints
        self.input_shape = tuple(int(v) for v in sidecar["input_shape"])
        self.standardization = Standardization.from_dict(sidecar["standardization"])
        # A CSV's or Parquet file's columns: raw rows (lists in file order, or objects keyed by
        # column name; strings and nulls) are encoded as training encoded them.
        self.preprocessing: dict[str, Any] | None = sidecar.get("preprocessing")
        # A text model: raw strings (a row is the string, a list holding it, or an object keyed
        # by the text column) are tokenized by the train split's vocabulary into token ids.
        self.text = TextEncoder.from_dict(sidecar["text"]) if sidecar.get("text") is not None else None
        # Sequences of frames (T, F): a row is a list of up to T frames of F values.
        self.frames = self.text is None and len(self.input_shape) == 2

    def _text_ids(self, inputs: Any) -> np.ndarray:
        assert self.text is not None
        column = self.text.column
        if not isinstance(inputs, list):
            raise InputError("inputs: a list of rows (strings) is expected")
        values: list[Any] = []
        for i, row in enumerate(inputs):
            if isinstance(row, list) and len(row) == 1:
                row = row[0]
            elif isinstance(row, dict):
                if column not in row:
                    raise InputError(
                        f"inputs: row {i} has no {column[:300]!r}: the model reads that text column"
                    )
                row = row[column]
            if row is not None and not isinstance(row, str):
                raise InputError(
                    f"inputs: row {i} is not a text: each row is a string, [string] or {{{column[:300]!r}: string}}"
                )
            values.append(row)
        return self.text.encode(values)[0]

    def _frame_rows(self, inputs: Any) -> np.ndarray:
        """Rows of frames: each a list of 1..T frames of F values, padded with zero frames to T.
        A row's length ends at its last frame that is not all zero (the padding a sequence model
        reads; worker.training.data), so a full T×F row with trailing zero frames is the same
        row as one without them. Standardized, with the padding kept zero."""
        t, f = self.input_shape
        if not isinstance(inputs, list | np.ndarray):
            raise InputError("inputs: a list of rows (each a list of frames) is expected")
        if isinstance(inputs, list) and len(inputs) * t * f > MAX_FRAME_VALUES:  # a dataset's are bounded
            raise InputError(
                f"inputs: at most {max(MAX_FRAME_VALUES // (t * f), 1)} rows of {t}×{f} frames per "
                "request: split the rows, or score a dataset with POST /v1/jobs/{id}/predictions"
            )
        X = np.zeros((len(inputs), t, f), np.float32)
        for i, row in enumerate(inputs):
            try:
                a = np.asarray(row, dtype=np.float64)
            except (ValueError, TypeError):
                raise InputError(f"inputs: row {i} is not a list of frames of numbers") from None
            if a.ndim != 2 or a.shape[1] != f or not 1 <= a.shape[0] <= t:
                raise InputError(
                    f"inputs: row {i} must hold 1..{t} frames of {f} values (a T×F list); "
                    f"got shape {list(a.shape)}"
                )
            X[i, : len(a)] = a
        if not np.isfinite(X).all():
            raise InputError("inputs: NaN or infinite values")
        real = (X != 0).any(-1)
        lengths = np.maximum(t - (np.cumsum(real[:, ::-1], 1) == 0).sum(1), 1)
        out = self.standardization.apply(X)
        out[np.arange(t)[None, :] >= lengths[:, None]] = 0
        return out

    def _inputs(self, inputs: Any) -> np.ndarray:
        if self.text is not None:
            return self._text_ids(inputs)
        if self.frames:
            return self._frame_rows(inputs)
        if self.preprocessing is not None:
            try:
                encoded = encode_rows(self.preprocessing, inputs)
            except RowError as e:
                raise InputError(f"inputs: {e}") from None
            return self.standardization.apply(encoded)
        try:
            X = np.asarray(inputs)
        except ValueError:
            raise InputError("inputs: rows of different lengths") from None
        if X.dtype.kind not in "iuf":
            raise InputError("inputs: every value must be a number")
        n_features = math.prod(self.input_shape)
        if X.ndim < 2 or math.prod(X.shape[1:]) != n_features:
            raise InputError(
                f"inputs: each row must hold {n_features} features "
                f"(shape {list(self.input_shape)}); got shape {list(X.shape[1:])}"
            )
        X = X.astype(np.float32).reshape(len(X), *self.input_shape)
        if not np.isfinite(X).all():
            raise InputError("inputs: NaN or infinite values")
        return self.standardization.apply(X)

    def prepare(self, X: np.ndarray, columns: list[dict[str, Any]] | None) -> Prepared:
        """A dataset's canonical rows (`X` and `columns` as service.data stores them: raw
        values, string columns as codes of that file's own vocabulary) as the model takes
        them, encoded with the checkpoint's fitted preprocessing by column, in numpy (a batch
        prediction's path; predict's request rows go through encode_rows)."""
        if self.text is not None:
            raise InputError("inputs: a text model reads a dataset's raw strings: use prepare_rows")
        if self.preprocessing is None:
            return Prepared(self._inputs(X))
        want = [c["name"] for c in self.preprocessing["columns"]]
        have = [c["name"] for c in columns or []]
        if have != want:
            raise InputError(
                f"inputs: the feature columns {', '.join(have)[:300] or '(none)'} are not the model's "
                f"{', '.join(want)[:300]}"
            )
        try:
            encoded = transform(self.preprocessing, columns or [], X)
        except RowError as e:  # a column of strings where the model was trained on numbers
            raise InputError(f"inputs: {e}") from None
        return Prepared(self.standardization.apply(encoded))

    def prepare_rows(self, data: ParsedDataset, start: int, stop: int) -> Prepared:
        """Rows start..stop of a dataset as the model takes them: a text model's from the
        dataset's raw strings of its text column (matched by name), others by `prepare`."""
        if self.text is None:
            return self.prepare(data.X[start:stop], data.columns)
        names = [c["name"] for c in data.columns or []]
        if self.text.column not in names:
            raise InputError(
                f"inputs: the dataset has no column {self.text.column[:300]!r}, the model's text"
            )
        try:
            values = data.text_values(names.index(self.text.column), start, stop)
        except DataError as e:
            raise InputError(f"inputs: {e}") from None
        return Prepared(self.text.encode(values)[0])

    @torch.no_grad()
    def _outputs(self, inputs: Any) -> torch.Tensor:
        X = torch.from_numpy(inputs.X if isinstance(inputs, Prepared) else self._inputs(inputs))
        return torch.cat([self.model(X[i : i + CHUNK]) for i in range(0, len(X), CHUNK)]).float()

    def predict(self, inputs: Any) -> list[Any]:
        """Class labels (classification) or values in the target's units (regression)."""
        out = self._outputs(inputs)
        if self.task == "classification":
            return [self.classes[i] for i in out.argmax(1).tolist()]
        st = self.standardization
        return (out.squeeze(-1) * st.target_std + st.target_mean).tolist()

    def predict_proba(self, inputs: Any) -> tuple[list[Any], np.ndarray]:
        """(class labels, their probabilities: one row per input, one column per class in the
        order of `classes`, the softmax of the model's outputs). Classification only: the
        label is the most probable class, the same one `predict` answers."""
        if self.task != "classification":
            raise InputError("probabilities: a regression model has no class probabilities")
        proba = torch.softmax(self._outputs(inputs), dim=1)
        return [self.classes[i] for i in proba.argmax(1).tolist()], proba.numpy()
