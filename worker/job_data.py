"""The data a job trains on, made local before the engine starts (the engine fetches nothing).

An upload's canonical file comes from the artifact store (a copy in the cache, on a bucket); a
dataset by URI is fetched (bounded, hashed, cached by content hash), checked against its
declared format and parsed once into a canonical file kept beside it, so a second job on the
same object and target reads that. Both stay in the process's bounded cache
(service.data.file_cache), held while the job trains.

A dataset by URI is read under the rules that admitted the job, not this process's own: the
egress rule recorded with the job (a worker without API keys still refuses a private address to
a job the API admitted under a denying rule), and the data sources granted to its tenant now
(a grant removed since admission fails the job before a byte is read).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from service.contract.architecture import DataShape
from service.contract.data_sources import data_sources
from service.contract.dataset_kinds import kind_of
from service.contract.errors import SpecError
from service.contract.spec import JobSpec, UriDataset
from service.data import uri as dataset_uri
from service.data.columns import TextBounds
from service.data.datafile import DataError, ParsedDataset, save_canonical
from service.data.file_cache import FileCache
from service.settings import Settings
from service.store.artifacts import ArtifactMissing, Artifacts
from service.submission.jobs import check_shape, columns_shape
from worker.artifact_sync import held_dataset


class TimeLimitReached(Exception):
    """The job's time limit ran out while its data was being fetched."""


@contextmanager
def local_dataset(
    artifacts: Artifacts,
    settings: Settings,
    spec: JobSpec,
    *,
    tenant: str,
    allow_private: bool,
    should_stop: Callable[[], bool] = lambda: False,
    time_limit_s: float = math.inf,
) -> Iterator[tuple[Path | None, dict[str, Any]]]:
    """(the canonical file of an upload or of a dataset by URI, or None for a built-in or
    synthetic one; what the job records of its data), the cached files kept from eviction
    while the block trains. `tenant` and `allow_private`: the job's tenant and the egress rule
    recorded with it. A dataset by URI is fetched within REGTRAIN_REMOTE_FETCH_DEADLINE_S and
    `time_limit_s` (TimeLimitReached when the job's limit is the one that ran out), and stops
    with uri.Stopped within a moment of `should_stop()` (the lease's: a cancel, a shutdown).
    Raises DataError with the field it concerns."""
    kind = kind_of(spec.dataset)
    dataset_id = kind.upload_id(spec.dataset)
    if dataset_id is not None:
        with ExitStack() as held:
            try:
                path = held.enter_context(held_dataset(artifacts, dataset_id))
            except ArtifactMissing:
                raise DataError(f"dataset.id: the file of dataset {dataset_id!r} is gone") from None
            yield path, {}
        return
    ds = kind.remote(spec.dataset)
    if ds is None:  # its kind's loader makes it (built-in, synthetic)
        yield None, {}
        return
    refusal = data_sources(settings).refusal(tenant, ds.uri)
    if refusal is not None:
        raise DataError(f"dataset.uri: {refusal}")
    cache = artifacts.cache
    ends = time.monotonic() + time_limit_s

    def present() -> tuple[dataset_uri.Fetched, Path, Path]:
        # the object, then one canonical file per object and reading of it (target, task,
        # format) with its shape: each made again if eviction took it
        left = ends - time.monotonic()
        try:
            found = dataset_uri.fetch(
                ds,
                cache,
                allow_private=allow_private,
                max_bytes=settings.max_dataset_bytes,
                deadline_s=min(left, settings.remote_fetch_deadline_s),
                should_stop=should_stop,
            )
        except dataset_uri.DeadlinePassed:
            if left < settings.remote_fetch_deadline_s:
                raise TimeLimitReached(
                    f"the time limit of {time_limit_s:g} s ran out while fetching dataset.uri"
                ) from None
            raise
        return (found, *_canonical(found, ds, cache, settings))

    with ExitStack() as held:
        try:
            found, canonical, shape_file = held.enter_context(
                cache.hold(present, lambda got: [got[0].path, got[1], got[2]])
            )
            shape = _read_shape(shape_file, spec, settings)
        except DataError as e:
            raise DataError(f"dataset.uri: {e}") from None
        except SpecError as e:  # the declared columns do not fit the file
            raise DataError(str(e)) from None
        # What the API checks at submit for data of a known shape (model size, worker memory,
        # epochs × samples), now that the shape is known: before any training starts.
        try:
            check_shape(spec, shape, settings)
        except SpecError as e:
            raise DataError(str(e)) from None
        yield canonical, {"uri": ds.uri, "sha256": found.sha256, "size_bytes": found.size_bytes}


def _canonical(
    fetched: dataset_uri.Fetched, ds: UriDataset, cache: FileCache, settings: Settings
) -> tuple[Path, Path]:
    # the text kept is part of the reading: a worker whose REGTRAIN_TEXT_MAX_BYTES differs makes its own
    how = f"{ds.format}\n{ds.target}\n{ds.task}\n{settings.text_max_bytes}"
    reading = hashlib.sha256(how.encode()).hexdigest()[:16]
    folder = dataset_uri.datasets_folder(cache) / "canonical"
    canonical = folder / f"{fetched.sha256}-{reading}.npz"
    shape_file = canonical.with_suffix(".shape.json")
    if not (canonical.is_file() and shape_file.is_file()):
        data = dataset_uri.parse(
            ds,
            fetched,
            max_rows=settings.max_dataset_rows,
            max_columns=settings.max_dataset_columns,
            max_bytes=settings.max_dataset_bytes,
            max_text_bytes=settings.text_max_bytes,
        )
        save_canonical(data, canonical)
        _write_shape(shape_file, data)
        cache.trim(keep=[fetched.path, canonical, shape_file])
    return canonical, shape_file


def _read_shape(path: Path, spec: JobSpec, settings: Settings | None = None) -> DataShape:
    """The shape as the model sees it: a CSV's or Parquet file's columns as `ds.columns`
    encodes them (a SpecError, turned into the job's DataError, names a column it cannot)."""
    doc = json.loads(path.read_text())
    # a sample's (C, H, W) images or (T, F) frames, else a row of n_features
    sample = doc["image_shape"] or [doc["n_features"]]
    shape = DataShape.of(doc["task"], sample, doc["n_outputs"], doc["n_samples"])
    return columns_shape(shape, doc.get("columns"), spec, ("dataset", "columns"), TextBounds.of(settings))


def _write_shape(path: Path, data: ParsedDataset) -> None:
    n_out = data.n_classes if data.task == "classification" else 1
    doc = {
        "task": data.task,
        "n_features": data.n_features,
        "n_outputs": n_out,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "n_samples": data.n_samples,
        "columns": data.columns,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
