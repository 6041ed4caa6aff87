"""Helpers of the engine tests: specs built from a small base or from examples/*.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from service.contract.spec import JobSpec
from worker.training.regularization import Penalty

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# timing fields differ between two otherwise identical runs
TIMING = ("seconds", "samples_per_second")

BASE: dict[str, Any] = {
    "dataset": {"name": "iris"},
    "split": {"validation": 0.2, "test": 0.2, "seed": 0},
    "model": {"type": "mlp", "hidden": [16]},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "training": {"epochs": 2, "batch_size": 32, "seed": 0, "device": "cpu"},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """base with over's keys replaced, dicts merged recursively (a copy; neither is changed).
    A dict naming its kind (type, name or id: a model, dataset, optimizer) replaces the old one."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        tagged = any(tag in v for tag in ("type", "name", "id")) if isinstance(v, dict) else True
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not tagged:
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_spec(**parts: Any) -> JobSpec:
    """A valid JobSpec: BASE with the given top-level parts merged in."""
    return JobSpec.model_validate(merge(BASE, parts))


def example(name: str, **parts: Any) -> JobSpec:
    """One of examples/*.json, with parts merged in."""
    raw = json.loads((EXAMPLES / f"{name}.json").read_text())
    return JobSpec.model_validate(merge(raw, parts))


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def penalty_term(penalty: Penalty) -> torch.Tensor:
    """The penalty as a differentiable term, the reference the engine's own gradient
    (Penalty.add_gradient, folded weight decay, proximal steps) is checked against."""
    params = penalty.params
    start = torch.zeros((), device=params[0].device) if params else torch.zeros(())
    return sum((penalty.l1 * p.abs().sum() + penalty.l2 * p.square().sum() for p in params), start=start)
