"""Between a worker's scratch folder and the artifact store: what a job needs before it trains
(its dataset, its last resume point) and what it hands over as it trains (each checkpoint).

On the local backend the scratch folder is the artifact store, so every call here is free; on
a bucket, a job resumes on any worker from what the last one put there.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from service.contract.dataset_kinds import kind_of
from service.contract.errors import ErrorType
from service.contract.sweep_spec import SweepSpec
from service.store.artifacts import ArtifactMissing, Artifacts, checkpoint_key, dataset_key
from service.store.leased import FINISHED
from service.store.repository import Repository, Row

log = logging.getLogger("regtrain.worker")

# The files of one checkpoint NAME; an epoch checkpoint also has its resume state.
WEIGHTS = (".safetensors", ".json")
STATE = (".state.safetensors", ".state.json")


def _keys(job_id: str, name: str) -> list[str]:
    suffixes = WEIGHTS + STATE if name.startswith("epoch-") else WEIGHTS
    return [checkpoint_key(job_id, f"checkpoints/{name}{s}") for s in suffixes]


def push_checkpoint(artifacts: Artifacts, job_id: str, work_dir: Path, name: str) -> None:
    """Put a checkpoint's files, resume state last: its presence marks a complete checkpoint."""
    for key in _keys(job_id, name):
        path = work_dir / key.removeprefix(f"jobs/{job_id}/")
        if path.is_file():
            artifacts.put(key, path)


def remove_checkpoint(artifacts: Artifacts, job_id: str, name: str) -> None:
    artifacts.delete(list(reversed(_keys(job_id, name))))


def pull_resume(artifacts: Artifacts, job_id: str, rows: list[Row]) -> int | None:
    """Fetch the newest epoch checkpoint the store lists (rows are written after their files
    are put) and `best` into this worker's scratch folder; the epoch it holds, or None."""
    if not artifacts.remote:
        _drop_unrecorded(artifacts.local_path(checkpoint_key(job_id, "checkpoints")), rows)
        return None
    # The bucket and the store are the truth: copies this worker kept from an earlier attempt
    # may hold a file that was never put (it died first) or an older `best`.
    shutil.rmtree(artifacts.local_path(checkpoint_key(job_id, "checkpoints")), ignore_errors=True)
    epochs = sorted((r["epoch"], r["name"]) for r in rows if r["name"].startswith("epoch-"))
    names = [r["name"] for r in rows if r["name"] == "best"]
    for epoch, name in reversed(epochs):
        try:
            for key in _keys(job_id, name):
                artifacts.pull(key)
        except ArtifactMissing:
            continue  # removed by retention since the read: an older one will do
        for other in names:
            for key in _keys(job_id, other):
                artifacts.pull(key)
        return epoch
    return None


def _drop_unrecorded(folder: Path, rows: list[Row]) -> None:
    """Remove the epoch checkpoints in the shared folder that the store does not list: a
    worker killed between writing one and recording it left it behind. The claim already
    dropped the metrics rows past the newest listed epoch, so resuming from the unlisted one
    would skip an epoch whose row is gone (seen as a missing epoch 4 after a SIGKILL in
    test_a_lost_worker_is_reaped_and_the_job_resumes). Resumed from the listed one, that epoch
    is trained and recorded again."""
    from worker.training import checkpoints  # torch: only where a job is about to train

    listed = {r["name"] for r in rows}
    for epoch in checkpoints.epoch_checkpoints(folder):
        if f"epoch-{epoch}" not in listed:
            checkpoints.remove_checkpoint(folder, f"epoch-{epoch}")


def drop_scratch(store: Repository, artifacts: Artifacts, job_id: str, work_dir: Path) -> None:
    """A finished or released job's files in this worker's scratch folder, once the bucket
    holds them all: removed, so a worker's disk does not fill with every job it ever trained.
    A released job (back in the queue) resumes from the bucket wherever it is claimed next,
    this worker included (pull_resume clears the folder first). A job running again, perhaps
    under another worker process sharing this data dir after this one lost its lease, is left
    alone."""
    if not artifacts.remote:
        return  # the folder is the artifact store itself
    try:
        job = store.get_job(job_id)
    except Exception:
        log.exception("job %s: could not read its status; its scratch folder stays", job_id)
        return
    if job is not None and job["status"] in (*FINISHED, "queued"):
        shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def held_dataset(artifacts: Artifacts, dataset_id: str) -> Iterator[Path]:
    """An uploaded dataset's canonical file for the block's duration: the artifact itself on
    the local backend; on a bucket, this process's copy in the bounded cache
    (REGTRAIN_CACHE_MAX_BYTES), held against eviction while the block trains on it. A copy
    outside the cache would stay on every worker that ever trained on the dataset, even after
    its DELETE. ArtifactMissing when the dataset's file is gone."""
    with artifacts.cached(dataset_key(dataset_id)) as path:
        yield path


@contextmanager
def held_sweep_dataset(artifacts: Artifacts, sweep: SweepSpec) -> Iterator[Path | None]:
    """A sweep's uploaded dataset, held as `held_dataset` holds it, on every worker that trains
    its trials (None for a built-in or synthetic dataset). TrainingError bad_data when the
    file is gone."""
    upload = kind_of(sweep.base.dataset).upload_id(sweep.base.dataset)
    if upload is None:
        yield None
        return
    with ExitStack() as held:
        try:  # only the fetch's ArtifactMissing, not one the block raises
            path = held.enter_context(held_dataset(artifacts, upload))
        except ArtifactMissing:
            raise _dataset_gone() from None
        yield path


def check_sweep_dataset(artifacts: Artifacts, sweep: SweepSpec) -> None:
    """The coordinator of a sweep in units trains nothing itself: it only checks, before any
    unit is queued, that the dataset's file is there (no copy is made). TrainingError bad_data
    when it is gone."""
    upload = kind_of(sweep.base.dataset).upload_id(sweep.base.dataset)
    if upload is not None and not artifacts.exists(dataset_key(upload)):
        raise _dataset_gone()


def _dataset_gone() -> Exception:
    from worker.training.errors import TrainingError  # the engine's error; torch-free module

    return TrainingError(ErrorType.BAD_DATA, "base.dataset.id: the dataset's file is gone")
