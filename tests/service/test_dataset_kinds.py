"""Dataset kinds: every dataset class a spec accepts has one registered kind, and each kind
answers the questions the rooms ask (shape known without the store, upload held, URI fetched,
how an error names it)."""

from __future__ import annotations

from typing import get_args

from service.contract.architecture import BUILTIN_SHAPES, DataShape
from service.contract.dataset_kinds import DATASET_KINDS, kind_of
from service.contract.spec import BuiltinDataset, DatasetSpec, SyntheticDataset, UploadedDataset, UriDataset


def test_every_dataset_class_of_the_spec_has_a_kind() -> None:
    classes = {get_args(member)[0] for member in get_args(get_args(DatasetSpec)[0])}
    assert classes == set(DATASET_KINDS)


def test_each_kind_answers_for_its_datasets() -> None:
    iris = BuiltinDataset.model_validate({"name": "iris"})
    synth = SyntheticDataset.model_validate({"name": "synthetic", "n_samples": 100, "n_features": 5})
    upload = UploadedDataset.model_validate({"id": "ds_1"})
    remote = UriDataset.model_validate({"uri": "https://example.com/d.csv", "target": "y"})
    assert kind_of(iris).shape(iris) == BUILTIN_SHAPES["iris"]
    shape = kind_of(synth).shape(synth)
    assert isinstance(shape, DataShape) and shape.n_features == 5 and shape.n_samples == 100
    assert kind_of(upload).shape(upload) is None and kind_of(remote).shape(remote) is None
    assert [kind_of(d).upload_id(d) for d in (iris, synth, upload, remote)] == [None, None, "ds_1", None]
    assert [kind_of(d).uri(d) for d in (iris, synth, upload, remote)] == [None, None, None, remote.uri]
    assert kind_of(upload).describe(upload) == "dataset.id 'ds_1'"
    assert kind_of(remote).describe(remote) == f"dataset.uri {remote.uri!r}"
