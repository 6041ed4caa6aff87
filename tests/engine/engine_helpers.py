"""Helpers of the engine tests: specs built from a small base or from examples/*.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from service.contract.spec import JobSpec

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
