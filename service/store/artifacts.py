"""Where a job's and a dataset's files live in the data dir, and removing them with their rows.

Paths are built from ids the store has just confirmed (server-made), and must still resolve
inside their folder, so no request can point a deletion anywhere else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.settings import Settings


def _inside(folder: Path, name: str) -> Path | None:
    path = (folder / name).resolve()
    return path if path.parent == folder.resolve() else None


def remove_job_files(settings: Settings, job_id: str) -> None:
    """The job's work dir: checkpoints, sidecars, resume state and exports."""
    path = _inside(settings.jobs_dir, job_id)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def remove_dataset_file(settings: Settings, dataset_id: str) -> None:
    path = _inside(settings.datasets_dir, f"{dataset_id}.npz")
    if path is not None:
        path.unlink(missing_ok=True)
