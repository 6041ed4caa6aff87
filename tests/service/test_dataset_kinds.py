"""Dataset kinds: every dataset class a spec accepts is a registered kind, each kind answers the
questions the rooms ask (shape known without the store, upload held, object fetched, how an
error names it), and the rooms ask only the registry: a kind registered by a test module alone
is validated, documented, planned and queued over HTTP, and no module outside the kinds' own
narrows on a kind's class."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import Field, ValidationError

from service.contract.architecture import BUILTIN_SHAPES, DataShape
from service.contract.dataset_kinds import DATASET_KINDS, DatasetKind, dataset_kind, kind_of, kinds
from service.contract.spec import (
    BuiltinDataset,
    JobSpec,
    Strict,
    SyntheticDataset,
    UploadedDataset,
    UriDataset,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_spec_accepts_exactly_the_registered_kinds_in_their_order() -> None:
    one_of = JobSpec.model_json_schema()["properties"]["dataset"]["oneOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in one_of] == [k.spec.__name__ for k in kinds()]
    assert [k.tag for k in kinds()] == ["builtin", "synthetic", "uploaded", "uri"]
    assert set(DATASET_KINDS) == {BuiltinDataset, SyntheticDataset, UploadedDataset, UriDataset}


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
    assert [kind_of(d).remote(d) for d in (iris, synth, upload)] == [None, None, None]
    assert kind_of(remote).remote(remote) is remote
    assert kind_of(upload).describe(upload) == "dataset.id 'ds_1'"
    assert kind_of(remote).describe(remote) == f"dataset.uri {remote.uri!r}"


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"uri": "ftp://x"}, ("dataset", "uri", "uri")),
        ({"name": "nope"}, ("dataset", "builtin", "name")),
        ({"id": "a b"}, ("dataset", "uploaded", "id")),
        ({"name": "synthetic", "n_samples": 1}, ("dataset", "synthetic", "n_samples")),
        ({}, ("dataset", "builtin", "name")),  # the fallback kind names the field it lacks
        (5, ("dataset",)),
    ],
)
def test_a_request_is_read_as_the_kind_that_claims_it(raw: object, loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate({"dataset": raw, "model": {"type": "mlp"}})
    assert [err["loc"] for err in e.value.errors()] == [loc]


# --- a kind that only this module knows --------------------------------------------------


class ZerosDataset(Strict):
    """A throwaway kind: n rows of f constant features, two classes."""

    zeros: int = Field(ge=10, le=1000)
    features: int = Field(3, ge=1, le=100)
    task: Literal["classification"] = "classification"


class Zeros(DatasetKind):
    tag = "zeros"
    spec = ZerosDataset

    def claims(self, raw: dict[str, object]) -> bool:
        return "zeros" in raw

    def shape(self, ds: ZerosDataset) -> DataShape:
        return DataShape.of("classification", (ds.features,), 2, ds.zeros)

    def describe(self, ds: ZerosDataset) -> str:
        return f"dataset.zeros {ds.zeros}"


@pytest.fixture
def zeros_kind() -> Iterator[type[Zeros]]:
    dataset_kind(Zeros)
    yield Zeros
    DATASET_KINDS.pop(ZerosDataset)


def test_a_kind_registered_elsewhere_is_a_dataset_like_the_built_in_ones(zeros_kind: type[Zeros]) -> None:
    spec = JobSpec.model_validate({"dataset": {"zeros": 40, "features": 7}, "model": {"type": "mlp"}})
    assert isinstance(spec.dataset, ZerosDataset) and kind_of(spec.dataset).tag == "zeros"
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate({"dataset": {"zeros": 1}, "model": {"type": "mlp"}})
    assert [err["loc"] for err in e.value.errors()] == [("dataset", "zeros", "zeros")]
    refs = [r["$ref"] for r in JobSpec.model_json_schema()["properties"]["dataset"]["oneOf"]]
    assert refs[-1] == "#/$defs/ZerosDataset"


def test_a_kind_registered_elsewhere_is_planned_and_queued_over_http(
    zeros_kind: type[Zeros], make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    spec = {"dataset": {"zeros": 40, "features": 7}, "model": {"type": "mlp", "hidden": [4]}}
    plan = client.post("/v1/jobs:validate", json=spec)
    assert plan.status_code == 200, plan.text
    # the planner counted the parameters of the shape the kind gave: 7·4+4 + 4·2+2
    assert plan.json()["parameters"] == 42 and plan.json()["n_features"] == 7
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["dataset"] == {"zeros": 40, "features": 7, "task": "classification"}
    bad = client.post("/v1/jobs", json={**spec, "dataset": {"zeros": 40, "features": 0}})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "dataset", "features"]
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "ZerosDataset" in schemas


def test_a_422_names_a_kinds_field_even_where_its_tag_is_spelt_like_one(client: TestClient) -> None:
    # the URI kind's tag is `uri`, and so is one of its fields: pydantic's loc is
    # dataset.uri.format, the request's field is dataset.format
    r = client.post(
        "/v1/jobs",
        json={"dataset": {"uri": "https://e.com/d.csv", "format": "xls"}, "model": {"type": "mlp"}},
    )
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "dataset", "format"]]


def test_after_unregistering_a_kind_its_datasets_are_refused(zeros_kind: type[Zeros]) -> None:
    DATASET_KINDS.pop(ZerosDataset)
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"dataset": {"zeros": 40}, "model": {"type": "mlp"}})
    dataset_kind(Zeros)  # for the fixture to take out


# --- no room narrows on a kind ------------------------------------------------------------

# The modules that may name a kind's class in isinstance (or a class pattern): the kinds'.
KIND_MODULES = {"service/contract/dataset_kinds.py", "service/contract/spec.py"}


def _narrowings(tree: ast.AST, classes: set[str]) -> list[int]:
    found = []
    for node in ast.walk(tree):
        call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if call and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
            if names & classes:
                found.append(node.lineno)
        if isinstance(node, ast.MatchClass):
            cls = node.cls
            name = cls.id if isinstance(cls, ast.Name) else cls.attr if isinstance(cls, ast.Attribute) else ""
            if name in classes:
                found.append(node.lineno)
    return found


def test_no_room_narrows_on_a_dataset_kind() -> None:
    classes = {cls.__name__ for cls in DATASET_KINDS}
    offenders = []
    for folder in ("service", "worker"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in KIND_MODULES:
                continue
            for line in _narrowings(ast.parse(path.read_text()), classes):
                offenders.append(f"{rel}:{line}")
    assert offenders == [], "ask service.contract.dataset_kinds.kind_of(ds) instead"


def test_the_narrowing_check_sees_one() -> None:
    tree = ast.parse(
        "if isinstance(ds, (spec.UriDataset, int)):\n    pass\nmatch ds:\n    case BuiltinDataset():\n        pass\n"
    )
    assert _narrowings(tree, {"UriDataset", "BuiltinDataset"}) == [1, 4]
