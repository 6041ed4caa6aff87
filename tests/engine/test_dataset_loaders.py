"""The worker reads every kind of dataset the contract registers (one loader per kind)."""

from __future__ import annotations

from service.contract.dataset_kinds import DATASET_KINDS
from worker.training.data import LOADERS


def test_every_dataset_kind_has_a_loader() -> None:
    assert set(LOADERS) == set(DATASET_KINDS)
