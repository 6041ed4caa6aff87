"""A worker warms up before it says ready: torch imported, and the engine's first steps run once
(a tiny stacked fit and a tiny solo fit on synthetic data), so that the first sweep or job it
takes does not pay for the import, the lazy kernel loads and the math libraries' start-up
(MKL/oneDNN on CPU, cuBLAS handles on a GPU). Celery says "ready" only after worker_init's
handlers return (worker/celery_app.py), so a message never waits on this.

Skipped with REGTRAIN_WORKER_WARMUP=false (a test that starts many workers, a worker that
only predicts)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("regtrain.worker")

# Small enough to take well under a second on a CPU core, large enough to run every step of an
# epoch: a forward, a backward, the optimizer, the validation metrics, both trainers.
_BASE: dict[str, Any] = {
    "dataset": {"name": "synthetic", "n_samples": 64, "n_features": 8, "seed": 0},
    "model": {"type": "mlp", "hidden": [16]},
    "training": {"epochs": 1, "batch_size": 32, "device": "cpu"},
}


def warm_up() -> tuple[float, float]:
    """Train the tiny sweep (two trials, stacked) and the tiny job (solo) once, on the device
    an "auto" job of this worker trains on: (seconds of the imports, seconds of the steps)."""
    t0 = time.perf_counter()
    import torch
    import torch._dynamo

    # A sweep's coordinator and a search's units need Optuna (a second of imports, cold).
    import worker.coordinator  # noqa: F401
    from service.contract.spec import JobSpec
    from service.contract.sweep_spec import SweepSpec, expand
    from worker.training.data import prepare
    from worker.training.loop import fit
    from worker.training.sweep import run_sweep

    t1 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = {**_BASE, "training": {**_BASE["training"], "device": device}}
    sweep = SweepSpec.model_validate(
        {"base": base, "grid": {"regularization.l2": [0.0, 1e-3]}, "vectorize": True}
    )
    run_sweep(sweep, expand(sweep, None, 10**9))
    spec = JobSpec.model_validate(base)
    fit(spec, prepare(spec), None)
    return t1 - t0, time.perf_counter() - t1
