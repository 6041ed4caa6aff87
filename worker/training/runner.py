"""run_job: the engine's one entry point for the Celery task, the CLI and the sweeps."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from service.contract.architecture import check_feasible
from service.contract.errors import ErrorType, SpecError
from service.contract.spec import JobSpec
from service.data.datafile import DataError
from service.version import regtrain_version
from worker.training.checkpoints import CheckpointRecord
from worker.training.data import prepare
from worker.training.errors import TrainingError
from worker.training.loop import Callbacks, fit, resolve_device

__all__ = ["Callbacks", "CheckpointRecord", "JobOutcome", "TrainingError", "run_job"]


@dataclass
class JobOutcome:
    status: Literal["succeeded", "cancelled"]
    result: dict[str, Any]
    resumed_from_epoch: int | None


def run_job(
    spec: JobSpec,
    work_dir: Path,
    callbacks: Callbacks | None = None,
    *,
    datasets_dir: Path | None = None,
    dataset_file: Path | None = None,
    time_limit_s: float | None = None,
    max_parameters: int = 50_000_000,
) -> JobOutcome:
    """Train one job in work_dir (checkpoints in work_dir/checkpoints), resuming from the newest
    epoch checkpoint found there. Raises TrainingError with a typed reason on failure."""
    try:
        data = prepare(spec, datasets_dir, dataset_file)
        check_feasible(spec, data.shape, max_parameters)
    except (DataError, SpecError) as e:
        raise TrainingError(ErrorType.BAD_DATA, str(e)) from None
    limit = min(filter(None, (time_limit_s, spec.training.time_limit_s)), default=None)
    device = resolve_device(spec.training.device)
    try:
        out = fit(spec, data, work_dir, callbacks, time_limit_s=limit)
    except torch.cuda.OutOfMemoryError:
        oom = True  # handled below, once this frame no longer holds the traceback
    else:
        oom = False
    if oom:
        # Every tensor of the failed run was local to fit(): collect them and hand the cached
        # blocks back, so that this worker takes its next job with a clean device.
        gc.collect()
        torch.cuda.empty_cache()
        raise TrainingError(
            ErrorType.OUT_OF_MEMORY,
            f"the GPU ran out of memory (batch size {spec.training.batch_size}): lower "
            "training.batch_size or the model's size",
        )
    result = {
        "best_epoch": out.best_epoch,
        "metrics": {**out.test_metrics, **out.test_report},
        "best_checkpoint_metrics": out.best_checkpoint_metrics,
        # the labels in the order of the confusion matrix's rows and columns (a stored document's
        # per_class keys may come back in another order: PostgreSQL's jsonb sorts them)
        **({"classes": data.classes} if data.task == "classification" else {}),
        "weight_sparsity": out.weight_sparsity,
        "weight_l2_norm": out.weight_l2_norm,
        "epochs_completed": out.epochs_completed,
        "stopped_early": out.stopped_early,
        "parameters": out.parameters,
        "environment": {
            "torch": torch.__version__,
            "regtrain": regtrain_version(),
            "seed": spec.training.seed,
            "data_sha256": data.sha256,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },
    }
    return JobOutcome(out.status, result, out.resumed_from_epoch)
