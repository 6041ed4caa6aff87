"""The data a job trains on, made local before the engine starts (the engine fetches nothing).

An upload's canonical file comes from the artifact store; a dataset by URI is fetched (bounded,
hashed, cached by content hash), checked against its declared format and parsed once into a
canonical file kept beside it, so a second job on the same object and target reads that.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from service.contract.spec import JobSpec, UploadedDataset, UriDataset
from service.data import uri as dataset_uri
from service.data.datafile import DataError, save_canonical
from service.settings import Settings
from service.store.artifacts import ArtifactMissing, Artifacts
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
        # one canonical file per object and reading of it (target, task, format)
        reading = hashlib.sha256(f"{ds.format}\n{ds.target}\n{ds.task}".encode()).hexdigest()[:16]
        canonical = cache / "canonical" / f"{fetched.sha256}-{reading}.npz"
        if not canonical.is_file():
            data = dataset_uri.parse(
                ds,
                fetched,
                max_rows=settings.max_dataset_rows,
                max_columns=settings.max_dataset_columns,
                max_bytes=settings.max_dataset_bytes,
            )
            save_canonical(data, canonical)
    except DataError as e:
        raise DataError(f"dataset.uri: {e}") from None
    return canonical, {"uri": ds.uri, "sha256": fetched.sha256, "size_bytes": fetched.size_bytes}
