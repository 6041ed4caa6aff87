"""Which trials of a sweep can train together as one stacked model (spec logic only, no torch:
the API refuses `vectorize: true` for a sweep that cannot be stacked before queuing it)."""

from __future__ import annotations

import json

from service.contract.spec import CNNSpec, JobSpec, MLPSpec, PlateauScheduler, SequentialSpec

# What may differ between the trials of one group; everything else must be equal.
VARYING = (
    ("regularization", "l1"),
    ("regularization", "l2"),
    ("regularization", "label_smoothing"),
    ("optimizer", "lr"),
    ("optimizer", "weight_decay"),
    ("model", "dropout"),
    ("training", "seed"),
)


def not_stackable(spec: JobSpec) -> str | None:
    """Why a trial cannot train in a stacked group (None when it can)."""
    m = spec.model
    if isinstance(m, CNNSpec):
        return "cnn models train trial by trial"
    if isinstance(m, SequentialSpec):
        return "sequential models train trial by trial"
    if isinstance(m, MLPSpec) and m.batch_norm:
        return "batch_norm models train trial by trial"
    if isinstance(spec.optimizer.scheduler, PlateauScheduler):
        return "a plateau scheduler differs per trial; it trains trial by trial"
    if spec.training.grad_clip_norm is not None:
        return "gradient clipping trains trial by trial"
    if spec.training.precision != "fp32":
        return "bf16 trains trial by trial"
    return None


def group_key(spec: JobSpec) -> str:
    """Trials with equal keys can train together."""
    d = spec.model_dump(mode="json")
    for section, name in VARYING:
        d.get(section, {}).pop(name, None)
    d.pop("name", None)
    return json.dumps(d, sort_keys=True)


def vectorize_refusal(specs: list[JobSpec]) -> str | None:
    """Why `vectorize: true` cannot be honoured for these trials (None when it can)."""
    for i, spec in enumerate(specs):
        reason = not_stackable(spec)
        if reason:
            return f"trial {i} cannot be vectorized: {reason}"
    return None
