"""Dataset kinds: what the API, the planner and the workers ask of the dataset a spec names,
through one interface, registered per kind (built-in, synthetic, an upload, an object by URI)
instead of an isinstance chain in each room.

The registry is also what a spec's `dataset` is validated against (spec.DatasetSpec): the kinds
registered when a spec is validated, each under its tag, in the order they registered (the
order of the OpenAPI schema's `oneOf`). A new kind is its spec class (a Strict model), one
registered class here (or in a module of its own that registers itself on import, listed in
BUILTIN_MODULES), and its loader on the worker (worker.training.data.LOADERS, by tag); no other
room names a kind (tests/service/test_dataset_kinds.py holds that).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from pydantic import BaseModel

from service.contract.architecture import BUILTIN_SHAPES, DataShape
from service.contract.spec import BuiltinDataset, SyntheticDataset, UploadedDataset, UriDataset


class DatasetKind:
    """The questions every kind answers; the defaults are those of a dataset with no file."""

    tag: ClassVar[str]  # the union tag pydantic puts in an error's loc (`body.dataset.<tag>.…`)
    spec: ClassVar[type[BaseModel]]
    # The kind a request's object that no kind claims is read as (its errors then name the
    # field it lacks, not "no kind"): one kind at most.
    fallback: ClassVar[bool] = False

    def claims(self, raw: dict[str, Any]) -> bool:
        """Whether a request's object is one of this kind's (before it is validated)."""
        return False

    def shape(self, ds: Any) -> DataShape | None:
        """Its shape when known without the store or a download (built-in, synthetic)."""
        return None

    def upload_id(self, ds: Any) -> str | None:
        """The id of the tenant's upload it is (held while a job or sweep trains on it; its
        shape is the stored one)."""
        return None

    def remote(self, ds: Any) -> UriDataset | None:
        """The object by reference a worker fetches (under the tenant's data sources and the
        egress rule) and how it is read; its shape is known only once read."""
        return None

    def uri(self, ds: Any) -> str | None:
        """The URI of the object it reads, if it reads one."""
        remote = self.remote(ds)
        return None if remote is None else remote.uri

    def describe(self, ds: Any) -> str:
        """How an error names it: the field and its value."""
        return f"dataset.name {ds.name!r}"


# spec class -> kind, in the order of registration (a dict keeps it)
DATASET_KINDS: dict[type[Any], DatasetKind] = {}

# Modules of kinds of their own that register on import (none of the built-in kinds needs one).
BUILTIN_MODULES: tuple[str, ...] = ()


def dataset_kind(cls: type[DatasetKind]) -> type[DatasetKind]:
    """Register a kind for specs of its `spec` class (one instance; kinds hold no state)."""
    if any(k.tag == cls.tag for c, k in DATASET_KINDS.items() if c is not cls.spec):
        raise ValueError(f"dataset kind {cls.tag!r} is registered already")
    DATASET_KINDS[cls.spec] = cls()
    return cls


def kinds() -> list[DatasetKind]:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return list(DATASET_KINDS.values())


def kind_of(ds: Any) -> DatasetKind:
    return DATASET_KINDS[type(ds)]


def tag_of(value: Any) -> str | None:
    """The kind a spec's `dataset` is (pydantic's discriminator): a validated spec's by its
    class, a request's object by the kind that claims it, else the fallback kind."""
    if isinstance(value, BaseModel):
        kind = DATASET_KINDS.get(type(value))
        return None if kind is None else kind.tag
    if not isinstance(value, dict):
        return None
    registered = kinds()
    claimed = next((k for k in registered if not k.fallback and k.claims(value)), None)
    claimed = claimed or next((k for k in registered if k.fallback), None)
    return None if claimed is None else claimed.tag


@dataset_kind
class Builtin(DatasetKind):
    tag = "builtin"
    spec = BuiltinDataset
    fallback = True  # `{}` is refused as a built-in without a name

    def shape(self, ds: BuiltinDataset) -> DataShape:
        return BUILTIN_SHAPES[ds.name]


@dataset_kind
class Synthetic(DatasetKind):
    tag = "synthetic"
    spec = SyntheticDataset

    def claims(self, raw: dict[str, Any]) -> bool:
        return raw.get("name") == "synthetic"

    def shape(self, ds: SyntheticDataset) -> DataShape:
        return DataShape.of(ds.task, (ds.n_features,), ds.n_classes, ds.n_samples)


@dataset_kind
class Uploaded(DatasetKind):
    tag = "uploaded"
    spec = UploadedDataset

    def claims(self, raw: dict[str, Any]) -> bool:
        return "id" in raw and "uri" not in raw  # both: read as an object by URI

    def upload_id(self, ds: UploadedDataset) -> str:
        return ds.id

    def describe(self, ds: UploadedDataset) -> str:
        return f"dataset.id {ds.id!r}"


@dataset_kind
class Uri(DatasetKind):
    tag = "uri"
    spec = UriDataset

    def claims(self, raw: dict[str, Any]) -> bool:
        return "uri" in raw

    def remote(self, ds: UriDataset) -> UriDataset:
        return ds

    def describe(self, ds: UriDataset) -> str:
        return f"dataset.uri {ds.uri!r}"
