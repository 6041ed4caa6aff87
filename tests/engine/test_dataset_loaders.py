"""The worker reads every kind of dataset the contract registers (one loader per kind, by its
tag), and a kind with its loader, both registered by a module of their own, trains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from service.contract.architecture import DataShape
from service.contract.dataset_kinds import DATASET_KINDS, DatasetKind, dataset_kind, kinds
from service.contract.spec import JobSpec, Strict
from service.data.datafile import DataError, ParsedDataset
from worker.training.data import LOADERS, load_dataset, loads, prepare


def test_every_dataset_kind_has_a_loader_by_its_tag() -> None:
    assert set(LOADERS) == {kind.tag for kind in kinds()}


class OnesDataset(Strict):
    """A throwaway kind that only this module knows: n rows of f features, two classes."""

    ones: int = Field(ge=10, le=1000)


class Ones(DatasetKind):
    tag = "ones"
    spec = OnesDataset

    def claims(self, raw: dict[str, object]) -> bool:
        return "ones" in raw

    def shape(self, ds: OnesDataset) -> DataShape:
        return DataShape.of("classification", (3,), 2, ds.ones)


def _load_ones(ds: OnesDataset, datasets_dir: Path | None, dataset_file: Path | None) -> ParsedDataset:
    rng = np.random.default_rng(0)
    y = np.arange(ds.ones, dtype=np.int64) % 2
    X = (y[:, None] + 0.1 * rng.standard_normal((ds.ones, 3))).astype(np.float32)
    return ParsedDataset(X, y, "classification", np.arange(2, dtype=np.int64))


@pytest.fixture
def ones_kind() -> Iterator[None]:
    dataset_kind(Ones)
    loads("ones")(_load_ones)
    yield
    DATASET_KINDS.pop(OnesDataset)
    LOADERS.pop("ones")


def test_a_kind_and_its_loader_registered_elsewhere_train(ones_kind: None) -> None:
    spec = JobSpec.model_validate({"dataset": {"ones": 60}, "model": {"type": "mlp", "hidden": [4]}})
    prepared = prepare(spec)
    assert (
        prepared.input_shape == (3,)
        and len(prepared.X_train) + len(prepared.X_val) + len(prepared.X_test) == 60
    )


def test_a_worker_without_the_loader_of_a_kind_says_so(ones_kind: None) -> None:
    spec = JobSpec.model_validate({"dataset": {"ones": 60}, "model": {"type": "mlp"}})
    LOADERS.pop("ones")
    with pytest.raises(DataError, match="no loader for datasets of kind 'ones'"):
        load_dataset(spec, None)
    loads("ones")(_load_ones)
