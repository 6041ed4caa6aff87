"""Which trials of a sweep can train together as one stacked model (spec logic only, no torch:
the API refuses `vectorize: true` for a sweep that cannot be stacked before queuing it)."""

from __future__ import annotations

import json

from service.contract.architecture import model_type_of
from service.contract.spec import JobSpec, PlateauScheduler
from service.contract.trial_axis import VARYING


def not_stackable(spec: JobSpec) -> str | None:
    """Why a trial cannot train in a stacked group (None when it can)."""
    why = model_type_of(spec.model.type).not_stackable(spec.model)
    if why is not None:
        return why
    if isinstance(spec.optimizer.scheduler, PlateauScheduler):
        return "a plateau scheduler differs per trial; it trains trial by trial"
    if spec.training.grad_clip_norm is not None:
        return "gradient clipping trains trial by trial"
    if spec.training.precision != "fp32":
        return "bf16 trains trial by trial"
    return None


def group_key(spec: JobSpec) -> str:
    """Trials with equal keys can train together (they differ only in the trial axis's
    numbers, service.contract.trial_axis)."""
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
