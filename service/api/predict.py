"""Predictions from a job's checkpoint, served by the API process.

The one part of the API that runs a model: torch and the engine are imported on the first
predict or export request only, so starting the API, and every other route, stays free of
torch. Loaded models are kept in a small LRU cache keyed by the checkpoint's sha256, so a
checkpoint written again (a new `best`) is loaded afresh.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from service.contract.errors import NotFound, SpecError
from service.contract.exports import EXPORT_REVISION, EXPORT_SUFFIX, ExportFormat, ExportInputDtype
from service.store.artifacts import Artifacts, checkpoint_key, job_prefix
from service.store.repository import Row

CACHE_SIZE = 8


class Predictors:
    """An LRU cache of loaded models, shared by the request threads."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, artifacts: Artifacts, job_id: str, row: Row) -> Any:
        key = (job_id, row["name"], row["sha256"])
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            # Loading under the lock: two requests for one cold model load it once.
            with checkpoint_file(artifacts, job_id, row) as weights:
                predictor = _load(weights)
            self._models[key] = predictor
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return predictor

    def predict(
        self, artifacts: Artifacts, job_id: str, row: Row, inputs: list[Any], *, probabilities: bool = False
    ) -> dict[str, Any]:
        """`{"predictions"}`; with `probabilities`, also `probabilities` (one list per row, in
        the order of `classes`) and `classes`: a 422 at `probabilities` for a regression job."""
        from worker.training.inference import InputError

        predictor = self.get(artifacts, job_id, row)
        if probabilities and predictor.task != "classification":
            raise SpecError(("body", "probabilities"), "a regression job has no class probabilities")
        try:
            if not probabilities:
                return {"predictions": predictor.predict(inputs)}
            labels, proba = predictor.predict_proba(inputs)
        except InputError as e:
            raise SpecError(("body", "inputs"), str(e).removeprefix("inputs: ")) from None
        return {"predictions": labels, "probabilities": proba.tolist(), "classes": predictor.classes}


def weights_key(job_id: str, row: Row) -> str:
    """The checkpoint's key: its path comes from the store (written by the worker), never from
    the request, and must still lie inside the job's own folder."""
    parts = PurePosixPath(row["path"]).parts
    if not parts or ".." in parts or parts[0] == "/":
        raise NotFound(f"the file of checkpoint {row['name']!r} is gone")
    return checkpoint_key(job_id, row["path"])


@contextmanager
def checkpoint_file(artifacts: Artifacts, job_id: str, row: Row) -> Iterator[Path]:
    """A local file of the checkpoint's weights, with its sidecar beside it, for the block's
    duration: the artifact itself on the local backend, this API's cached copy of the bucket's
    (fetched again, sidecar too, when the store's sha256 says the checkpoint was written again),
    kept from eviction until the block ends. Missing, or removed while the block reads it (a
    DELETE of the job after its row was read): a 404."""
    key = weights_key(job_id, row)
    companions = (key.removesuffix(".safetensors") + ".json",)
    with gone_meanwhile(row), artifacts.cached(key, row["sha256"], companions=companions) as path:
        yield path


@contextmanager
def gone_meanwhile(row: Row) -> Iterator[None]:
    """A checkpoint's file that is missing when read (ArtifactMissing), or removed between the
    read of its row and of its bytes (a FileNotFoundError from whatever opened it: the job was
    deleted meanwhile), answers as a checkpoint that is gone: a 404, never a 500."""
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"the file of checkpoint {row['name']!r} is gone") from None


def read_sidecar(weights: Path) -> dict[str, Any]:
    """The JSON sidecar beside a checkpoint's weights (NAME.json beside NAME.safetensors)."""
    path = weights.with_name(weights.name.removesuffix(".safetensors") + ".json")
    if not path.is_file():
        raise NotFound(f"checkpoint {weights.stem!r} has no sidecar")
    return json.loads(path.read_text())


_export_lock = threading.Lock()


def exported_file(
    artifacts: Artifacts, job_id: str, row: Row, fmt: ExportFormat, input_dtype: ExportInputDtype = "float32"
) -> BinaryIO:
    """The checkpoint as a TorchScript or ONNX file taking raw inputs, made on first request and
    kept with the job's artifacts (named by the server: checkpoint name + weights hash, so any
    API replica that finds it in the store serves it without exporting again). Returned open:
    a cached copy evicted while the response is sent stays readable through its descriptor.
    The job's files removed at any step (a DELETE racing the export): a 404 (gone_meanwhile).
    An export made while its job was deleted may be put back under the job's folder after the
    DELETE removed it: the caller checks the job is still there once this returns."""
    typed = f"-{input_dtype}" if fmt == "onnx" else ""  # an ONNX file's input dtype is its own
    name = f"{row['name']}-{row['sha256'][:16]}{typed}-{EXPORT_REVISION}{EXPORT_SUFFIX[fmt]}"
    key = f"{job_prefix(job_id)}/exports/{name}"
    with _export_lock, gone_meanwhile(row):
        try:
            with artifacts.cached(key) as path:
                return path.open("rb")
        except FileNotFoundError:  # not made yet, or removed between the check and the open
            pass
        from worker.training.export import export

        out = artifacts.cache_path(key)
        with checkpoint_file(artifacts, job_id, row) as weights:
            export(weights, read_sidecar(weights), fmt, out, input_dtype=input_dtype, job_id=job_id)
        artifacts.put(key, out)
        opened = out.open("rb")
        artifacts.cache.trim(keep=[out])
    return opened


def _load(weights: Path) -> Any:
    from worker.training.inference import Predictor

    return Predictor(weights, read_sidecar(weights))
