"""What a finished job keeps: best, final and its last REGTRAIN_KEEP_EPOCH_CHECKPOINTS epoch
checkpoints. The store drops the other rows first (so no listed checkpoint ever lacks its file),
then their files go."""

from __future__ import annotations

import logging

from service.store.artifacts import Artifacts
from service.store.repository import Repository
from worker import artifact_sync

log = logging.getLogger("regtrain.worker")


def prune(store: Repository, artifacts: Artifacts, job_id: str, keep: int) -> list[str]:
    """The names removed (none while the job is still queued or running). Never raises: a
    failed pruning leaves files behind, not a failed task."""
    try:
        names = store.prune_epoch_checkpoints(job_id, keep)
    except Exception:
        log.exception("job %s: could not apply checkpoint retention", job_id)
        return []
    if not names:
        return []
    try:
        for name in names:
            artifact_sync.remove_checkpoint(artifacts, job_id, name)
    except Exception:
        log.exception("job %s: could not remove pruned checkpoint files", job_id)
        return names
    log.info("job %s: removed %d epoch checkpoints (keeping the last %d)", job_id, len(names), keep)
    return names
