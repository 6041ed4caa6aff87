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
from pathlib import Path
from typing import Any

from service.contract.errors import NotFound, SpecError
from service.contract.exports import EXPORT_SUFFIX, ExportFormat
from service.settings import Settings
from service.store.repository import Row

CACHE_SIZE = 8


class Predictors:
    """An LRU cache of loaded models, shared by the request threads."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, settings: Settings, job_id: str, row: Row) -> Any:
        key = (job_id, row["name"], row["sha256"])
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            # Loading under the lock: two requests for one cold model load it once.
            predictor = _load(checkpoint_file(settings, job_id, row))
            self._models[key] = predictor
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return predictor

    def predict(self, settings: Settings, job_id: str, row: Row, inputs: list[Any]) -> list[Any]:
        from worker.training.inference import InputError

        predictor = self.get(settings, job_id, row)
        try:
            return predictor.predict(inputs)
        except InputError as e:
            raise SpecError(("body", "inputs"), str(e).removeprefix("inputs: ")) from None


def checkpoint_file(settings: Settings, job_id: str, row: Row) -> Path:
    """The checkpoint's file: its path comes from the store (written by the worker), never from
    the request, and must still lie inside the job's own directory."""
    job_dir = (settings.jobs_dir / job_id).resolve()
    path = (job_dir / row["path"]).resolve()
    if not path.is_relative_to(job_dir) or not path.is_file():
        raise NotFound(f"the file of checkpoint {row['name']!r} is gone")
    return path


def read_sidecar(weights: Path) -> dict[str, Any]:
    """The JSON sidecar beside a checkpoint's weights (NAME.json beside NAME.safetensors)."""
    path = weights.with_name(weights.name.removesuffix(".safetensors") + ".json")
    if not path.is_file():
        raise NotFound(f"checkpoint {weights.stem!r} has no sidecar")
    return json.loads(path.read_text())


_export_lock = threading.Lock()


def exported_file(settings: Settings, job_id: str, row: Row, fmt: ExportFormat) -> Path:
    """The checkpoint as a TorchScript or ONNX file taking raw inputs, made on first request and
    kept beside the job's checkpoints (named by the server: checkpoint name + weights hash)."""
    weights = checkpoint_file(settings, job_id, row)
    out = weights.parent.parent / "exports" / f"{row['name']}-{row['sha256'][:16]}{EXPORT_SUFFIX[fmt]}"
    with _export_lock:
        if not out.is_file():
            from worker.training.export import export

            export(weights, read_sidecar(weights), fmt, out)
    return out


def _load(weights: Path) -> Any:
    from worker.training.inference import Predictor

    return Predictor(weights, read_sidecar(weights))
