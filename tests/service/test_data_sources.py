"""REGTRAIN_DATA_SOURCES: which s3:// objects a tenant may read, by whole path segments, never
the artifacts location; and a dataset by URI whose parse fails says where, never what the file
holds (both unit-level; the real API and worker on moto's S3 are in
tests/integration/test_data_sources_s3.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.contract.data_sources import data_sources
from service.contract.spec import UriDataset
from service.data import uri as dataset_uri
from service.data.parsed import DataError
from service.settings import Settings

GRANTS = "tenant-a:s3://bucket-a/pre,*:s3://shared-public/,tenant-b:s3://arts/regtrain/datasets/"


def _sources(grants: str | None = GRANTS, keys: str | None = "tenant-a:ka,tenant-b:kb") -> Settings:
    return Settings(data_sources=grants, api_keys=keys, artifacts_url="s3://arts/regtrain")


@pytest.mark.parametrize(
    ("tenant", "uri"),
    [
        ("tenant-a", "s3://bucket-a/pre/x.csv"),
        ("tenant-a", "s3://bucket-a/pre/deeper/x.csv"),
        ("tenant-a", "s3://bucket-a/pre"),  # a grant may name one object
        ("tenant-a", "s3://shared-public/x.csv"),
        ("tenant-b", "s3://shared-public/any/thing.parquet"),
        ("tenant-a", "https://example.org/x.csv"),  # not this rule's: the egress rule judges it
    ],
)
def test_a_granted_object_is_admitted(tenant: str, uri: str) -> None:
    assert data_sources(_sources()).refusal(tenant, uri) is None


@pytest.mark.parametrize(
    ("tenant", "uri"),
    [
        ("tenant-b", "s3://bucket-a/pre/x.csv"),  # another tenant's grant
        ("tenant-a", "s3://bucket-a/prefix-other/x.csv"),  # a prefix of the name, not a segment
        ("tenant-a", "s3://bucket-a/other/x.csv"),
        ("tenant-a", "s3://other-bucket/secret/payroll.csv"),
        ("tenant-a", "s3://shared-public-2/x.csv"),  # a bucket whose name starts alike
        ("tenant-a", "s3://bucket-a/pre/../secret/x.csv"),
        ("tenant-a", "s3://bucket-a/pre/%2e%2e/secret/x.csv"),
        ("tenant-a", "s3://bucket-a/pre/./x.csv"),
        ("tenant-a", "s3://bucket-a/pre//x.csv"),
        ("tenant-a", "s3://bucket-a/"),
        # the artifacts location, even where a grant covers it (tenant-b's does)
        ("tenant-b", "s3://arts/regtrain/datasets/ds-1.npz"),
        ("tenant-a", "s3://arts/regtrain/jobs/j/best.safetensors"),
    ],
)
def test_anything_else_is_refused(tenant: str, uri: str) -> None:
    assert data_sources(_sources()).refusal(tenant, uri) is not None


def test_the_refusal_names_no_grant() -> None:
    reason = data_sources(_sources()).refusal("tenant-b", "s3://bucket-a/pre/x.csv")
    assert reason is not None and "bucket-a" not in reason and "tenant-a" not in reason


def test_unset_grants_open_to_the_single_user_of_a_keyless_server_only() -> None:
    keyless = data_sources(_sources(grants=None, keys=None))
    assert keyless.refusal("default", "s3://any-bucket/x.csv") is None
    assert keyless.refusal("default", "s3://arts/regtrain/datasets/ds-1.npz") is not None
    keyed = data_sources(_sources(grants=None))
    assert keyed.refusal("tenant-a", "s3://any-bucket/x.csv") is not None
    assert keyed.refusal("default", "s3://any-bucket/x.csv") is not None
    # set, even empty of grants for this tenant: the grants alone decide
    assert data_sources(_sources(keys=None)).refusal("default", "s3://any-bucket/x.csv") is not None


@pytest.mark.parametrize(
    "bad", ["s3://bucket/x", "tenant-a:https://example.org/", "a:s3://b/x,,", ":s3://b/"]
)
def test_a_malformed_setting_stops_the_process(bad: str) -> None:
    with pytest.raises(ValidationError):
        Settings(data_sources=bad)


def test_the_deprecated_webhook_name_still_sets_the_egress_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGTRAIN_API_KEYS", "t:k")
    assert Settings().admits_private_targets is False
    monkeypatch.setenv("REGTRAIN_WEBHOOK_PRIVATE_TARGETS", "true")
    assert Settings().admits_private_targets is True
    monkeypatch.setenv("REGTRAIN_EGRESS_PRIVATE_TARGETS", "false")  # the new name wins
    assert Settings().admits_private_targets is False
    monkeypatch.delenv("REGTRAIN_API_KEYS")
    monkeypatch.delenv("REGTRAIN_WEBHOOK_PRIVATE_TARGETS")
    monkeypatch.delenv("REGTRAIN_EGRESS_PRIVATE_TARGETS")
    assert Settings().admits_private_targets is True  # one user, no keys: loopback for local work


def _parse_error(tmp_path: Path, name: str, content: bytes, target: str = "label") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    ds = UriDataset(uri=f"s3://bucket-a/pre/{name}", target=target)
    fetched = dataset_uri.Fetched(path, "0" * 64, len(content))
    with pytest.raises(DataError) as e:
        dataset_uri.parse(ds, fetched, max_rows=10**6, max_columns=100, max_bytes=10**8)
    return str(e.value)


def _rows(n: int = 20) -> list[str]:
    return [f"{i},{i % 2}" for i in range(n)]


def test_a_parse_error_of_an_object_says_where_but_not_what_it_holds(tmp_path: Path) -> None:
    csv = "\n".join(["income,label", *_rows(5), "salary-of-the-ceo,", *_rows()]) + "\n"
    message = _parse_error(tmp_path, "payroll.csv", csv.encode())
    assert "line 7" in message and "label" in message
    assert "salary" not in message

    ragged = "\n".join(["a,label", *_rows(3), "1,2,secret-cell", *_rows()]) + "\n"
    message = _parse_error(tmp_path, "ragged.csv", ragged.encode())
    assert "ragged" in message and "secret" not in message

    single = "\n".join(["a,label", *(f"{i},only-class-secret" for i in range(20))]) + "\n"
    message = _parse_error(tmp_path, "single.csv", single.encode())
    assert "single class" in message and "secret" not in message

    header = "\n".join(["secret_column,other", *_rows()]) + "\n"
    message = _parse_error(tmp_path, "header.csv", header.encode(), target="label")
    assert "label" in message and "secret_column" not in message


def test_an_upload_still_names_the_value(tmp_path: Path) -> None:
    """The tenant's own bytes: the value helps it find the line, and tells it nothing new."""
    from service.data.datafile import parse_upload

    csv = "\n".join(["income,label", *_rows(5), "1,2,salary", *_rows()]) + "\n"
    with pytest.raises(DataError, match="salary"):
        parse_upload("up.csv", csv.encode(), "label", None, max_rows=10**6, max_columns=100)
