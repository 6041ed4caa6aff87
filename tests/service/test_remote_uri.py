"""Datasets by URI, the parts that need no origin: a path that would be normalized is refused on
every route that takes a URI (it was a 500), a response's Content-Encoding is undone a bounded
piece at a time (a bomb never decodes in one call), and a tenant's remote slots run out into a
429. The origins themselves (slow, bombs) are real processes: tests/integration/test_remote_origins.py."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from fastapi.testclient import TestClient

from service.contract.errors import AtCapacity
from service.data.decoded import PIECE, BoundedDecoder
from service.data.parsed import DataError
from service.submission.remote import RemoteSlots

MLP = {"model": {"type": "mlp", "hidden": [4]}, "training": {"epochs": 1}}
NORMALIZED = [
    "s3://bucket-a/secret/../secret/x.csv",
    "s3://bucket-a/./x.csv",
    "s3://bucket-a/a//x.csv",
    "s3://bucket-a/a/x.csv/",
    "https://example.com/a/../x.csv",
    "https://example.com/a/%2e%2E/x.csv",
    "https://example.com/./x.csv",
]


@pytest.mark.parametrize("uri", NORMALIZED)
def test_dot_and_empty_segments_are_refused_with_422_naming_the_uri(client: TestClient, uri: str) -> None:
    for path in ("/v1/jobs:validate", "/v1/jobs"):
        r = client.post(path, json={**MLP, "dataset": {"uri": uri}})
        assert r.status_code == 422, (path, r.text)
        detail = r.json()["detail"][0]
        assert (
            detail["loc"][:3] == ["body", "dataset", "uri"] and "uri: the path may not hold" in detail["msg"]
        )
    r = client.post("/v1/datasets", json={"uri": uri})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "uri"] and "uri: the path may not hold" in detail["msg"]


def test_a_password_in_the_uri_is_refused_naming_it(client: TestClient) -> None:
    uri = "https://user:hunter2@example.com/x.csv"
    r = client.post("/v1/jobs:validate", json={**MLP, "dataset": {"uri": uri}})
    assert r.status_code == 422 and "password" in r.json()["detail"][0]["msg"], r.text
    r = client.post("/v1/datasets", json={"uri": uri})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "uri"], r.text


def test_a_query_may_hold_dots() -> None:
    from service.contract.spec import UriDataset

    assert UriDataset(uri="https://example.com/x.csv?next=../y").format == "csv"


def _decode(encoding: str | None, chunks: list[bytes]) -> list[bytes]:
    decoder = BoundedDecoder(encoding)
    return [piece for chunk in chunks for piece in decoder.feed(chunk)]


def test_one_layer_of_gzip_or_deflate_is_decoded_as_it_streams() -> None:
    body = b"a,b,label\n" + b"1,2,x\n" * 50_000
    packed = gzip.compress(body)
    chunks = [packed[i : i + 1000] for i in range(0, len(packed), 1000)]
    assert b"".join(_decode("gzip", chunks)) == body
    assert b"".join(_decode("identity, gzip", chunks)) == body
    assert b"".join(_decode("deflate", [zlib.compress(body)])) == body
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert b"".join(_decode("deflate", [raw.compress(body) + raw.flush()])) == body
    assert b"".join(_decode(None, [body[:10], body[10:]])) == body


def test_a_bomb_decodes_a_bounded_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (64 * PIECE))  # 64 MiB from about 64 kB
    decoder = BoundedDecoder("gzip")
    taken = 0
    for piece in decoder.feed(bomb):  # a reader stops once it has read past its limit
        assert len(piece) <= PIECE
        taken += len(piece)
        if taken > 3 * PIECE:
            break
    assert taken <= 4 * PIECE


@pytest.mark.parametrize("encoding", ["gzip, gzip", "deflate, gzip", "br", "zstd", "compress", "gzip,br"])
def test_stacked_or_unknown_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(DataError, match="Content-Encoding"):
        BoundedDecoder(encoding)


def test_a_body_that_does_not_decode_is_a_data_error() -> None:
    with pytest.raises(DataError, match="does not decode as gzip"):
        _decode("gzip", [b"not gzip at all"])


def test_a_tenant_past_its_remote_slots_gets_429_with_retry_after() -> None:
    slots = RemoteSlots(per_tenant=2)

    async def hold(tenant: str, release: asyncio.Event) -> None:
        with slots.slot(tenant):
            await release.wait()

    async def scenario() -> None:
        release = asyncio.Event()
        held = [asyncio.create_task(hold("a", release)) for _ in range(2)]
        await asyncio.sleep(0)
        assert slots.open("a") == 2
        with pytest.raises(AtCapacity) as refused, slots.slot("a"):
            pass
        assert refused.value.retry_after_s > 0
        with slots.slot("b"):  # another tenant's slots are its own
            assert slots.open("b") == 1
        release.set()
        await asyncio.gather(*held)
        assert slots.open("a") == 0
        with slots.slot("a"):
            pass

    asyncio.run(scenario())
