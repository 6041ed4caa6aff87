"""Fixtures of the engine tests: prepared data cached per session, and one thread for torch
(another suite runs beside this one; one thread also keeps CPU results reproducible)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from service.contract.architecture import wants_images
from service.contract.spec import JobSpec
from worker.training.data import Prepared, prepare


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


_PREPARED: dict[str, Prepared] = {}


@pytest.fixture(scope="session")
def prepared() -> Callable[[JobSpec], Prepared]:
    """prepare(spec), cached by the parts of the spec that decide the data."""

    def get(spec: JobSpec) -> Prepared:
        key = json.dumps([spec.dataset.model_dump(), spec.split.model_dump(), wants_images(spec)])
        if key not in _PREPARED:
            _PREPARED[key] = prepare(spec)
        return _PREPARED[key]

    return get
