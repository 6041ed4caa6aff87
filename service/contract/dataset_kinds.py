"""Dataset kinds: what the API, the planner and the workers ask of the dataset a spec names,
through one interface, registered per kind (built-in, synthetic, an upload, an object by URI)
instead of an isinstance chain in each room. A new kind is its spec class in spec.py and one
registered class here (and its loader on the worker).
"""

from __future__ import annotations

from typing import Any, ClassVar

from service.contract.architecture import BUILTIN_SHAPES, DataShape
from service.contract.spec import BuiltinDataset, SyntheticDataset, UploadedDataset, UriDataset


class DatasetKind:
    """The questions every kind answers; the defaults are those of a dataset with no file."""

    spec: ClassVar[type[Any]]

    def shape(self, ds: Any) -> DataShape | None:
        """Its shape when known without the store or a download (built-in, synthetic)."""
        return None

    def upload_id(self, ds: Any) -> str | None:
        """The id of the tenant's upload it is (held while a job or sweep trains on it)."""
        return None

    def uri(self, ds: Any) -> str | None:
        """The object a worker fetches (under the tenant's data sources and the egress rule)."""
        return None

    def describe(self, ds: Any) -> str:
        """How an error names it: the field and its value."""
        return f"dataset.name {ds.name!r}"


DATASET_KINDS: dict[type[Any], DatasetKind] = {}


def dataset_kind(cls: type[DatasetKind]) -> type[DatasetKind]:
    """Register a kind for specs of its `spec` class (one instance; kinds hold no state)."""
    DATASET_KINDS[cls.spec] = cls()
    return cls


def kind_of(ds: Any) -> DatasetKind:
    return DATASET_KINDS[type(ds)]


@dataset_kind
class Builtin(DatasetKind):
    spec = BuiltinDataset

    def shape(self, ds: BuiltinDataset) -> DataShape:
        return BUILTIN_SHAPES[ds.name]


@dataset_kind
class Synthetic(DatasetKind):
    spec = SyntheticDataset

    def shape(self, ds: SyntheticDataset) -> DataShape:
        return DataShape.of(ds.task, (ds.n_features,), ds.n_classes, ds.n_samples)


@dataset_kind
class Uploaded(DatasetKind):
    spec = UploadedDataset

    def upload_id(self, ds: UploadedDataset) -> str:
        return ds.id

    def describe(self, ds: UploadedDataset) -> str:
        return f"dataset.id {ds.id!r}"


@dataset_kind
class Uri(DatasetKind):
    spec = UriDataset

    def uri(self, ds: UriDataset) -> str:
        return ds.uri

    def describe(self, ds: UriDataset) -> str:
        return f"dataset.uri {ds.uri!r}"
