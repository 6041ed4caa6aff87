"""The data a job trains on, made local before the engine starts (the engine fetches nothing).

An upload's canonical file comes from the artifact store; a dataset by URI is fetched (bounded,
hashed, cached by content hash), checked against its declared format and parsed once into a
canonical file kept beside it, so a second job on the same object and target reads that.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from service.contract.architecture import DataShape
from service.contract.errors import SpecError
from service.contract.spec import JobSpec, UploadedDataset, UriDataset
from service.data import uri as dataset_uri
from service.data.datafile import DataError, ParsedDataset, save_canonical
from service.settings import Settings
from service.store.artifacts import ArtifactMissing, Artifacts
from service.submission.jobs import check_shape
from worker.artifact_sync import fetch_dataset


def local_dataset(
    artifacts: Artifacts, settings: Settings, spec: JobSpec
) -> tuple[Path | None, dict[str, Any]]:
    """(the canonical file of a dataset by URI, or None; what the job records of its data).
    Raises DataError with the field it concerns."""
    ds = spec.dataset
    if isinstance(ds, UploadedDataset):
        try:
            fetch_dataset(artifacts, ds.id)
        except ArtifactMissing:
            raise DataError(f"dataset.id: the file of dataset {ds.id!r} is gone") from None
        return None, {}
    if not isinstance(ds, UriDataset):
        return None, {}
    cache = settings.data_dir / "cache" / "datasets"
    try:
        fetched = dataset_uri.fetch(
            ds, cache, allow_private=settings.private_targets, max_bytes=settings.max_dataset_bytes
        )
        # one canonical file per object and reading of it (target, task, format), and its shape
        reading = hashlib.sha256(f"{ds.format}\n{ds.target}\n{ds.task}".encode()).hexdigest()[:16]
        canonical = cache / "canonical" / f"{fetched.sha256}-{reading}.npz"
        shape_file = canonical.with_suffix(".shape.json")
        if not (canonical.is_file() and shape_file.is_file()):
            data = dataset_uri.parse(
                ds,
                fetched,
                max_rows=settings.max_dataset_rows,
                max_columns=settings.max_dataset_columns,
                max_bytes=settings.max_dataset_bytes,
            )
            save_canonical(data, canonical)
            _write_shape(shape_file, data)
        shape = _read_shape(shape_file)
    except DataError as e:
        raise DataError(f"dataset.uri: {e}") from None
    # What the API checks at submit for data of a known shape (model size, worker memory,
    # epochs × samples), now that the shape is known: before any training starts.
    try:
        check_shape(spec, shape, settings)
    except SpecError as e:
        raise DataError(str(e)) from None
    return canonical, {"uri": ds.uri, "sha256": fetched.sha256, "size_bytes": fetched.size_bytes}


def _read_shape(path: Path) -> DataShape:
    doc = json.loads(path.read_text())
    image = tuple(doc["image_shape"]) if doc["image_shape"] else None
    return DataShape(doc["task"], doc["n_features"], doc["n_outputs"], image, doc["n_samples"])


def _write_shape(path: Path, data: ParsedDataset) -> None:
    n_out = data.n_classes if data.task == "classification" else 1
    doc = {
        "task": data.task,
        "n_features": data.n_features,
        "n_outputs": n_out,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "n_samples": data.n_samples,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
