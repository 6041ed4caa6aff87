"""REGTRAIN_TEXT_MAX_TOKENS, _MAX_VOCABULARY and _MAX_BYTES at admission: a text job is planned
at the server's bounds, and what cannot run under them answers 422 naming the field (the worker
side, fitting and parsing at the same settings: tests/engine/test_text_tokenizer.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient


def _corpus() -> bytes:
    words = {"a": ["goal", "match", "team"], "b": ["bake", "sauce", "dinner"]}
    lines = ["review,label"]
    for i in range(30):
        for label, w in words.items():
            lines.append(f"the {w[i % 3]} {w[(i + 1) % 3]} day{i},{label}")
    return ("\n".join(lines) + "\n").encode()


def _upload(client: TestClient) -> str:
    r = client.post("/v1/datasets", files={"file": ("t.csv", _corpus())}, data={"target": "label"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _spec(dataset_id: str, **model: Any) -> dict[str, Any]:
    return {"dataset": {"id": dataset_id}, "model": {"type": "rnn", "hidden": 8, "embedding_dim": 8, **model}}


def test_a_text_job_is_planned_at_the_servers_tokens(make_client: Callable[..., TestClient]) -> None:
    client = make_client(text_max_tokens=64)
    ds = _upload(client)
    r = client.post("/v1/jobs:validate", json=_spec(ds))
    assert r.status_code == 200, r.text
    assert r.json()["n_features"] == 64
    transformer = {"type": "transformer", "d_model": 8, "heads": 2, "layers": 1, "feedforward": 8}
    ok = client.post("/v1/jobs:validate", json={**_spec(ds), "model": {**transformer, "max_length": 64}})
    assert ok.status_code == 200, ok.text
    longer = make_client(text_max_tokens=100)
    ds = _upload(longer)
    r = longer.post("/v1/jobs", json={**_spec(ds), "model": {**transformer, "max_length": 64}})
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "model", "max_length"]]


def test_a_text_models_embedding_is_counted_at_the_servers_vocabulary(
    make_client: Callable[..., TestClient],
) -> None:
    small, large = make_client(text_max_vocabulary=100), make_client(text_max_vocabulary=1000)
    counts = []
    for client in (small, large):
        r = client.post("/v1/jobs:validate", json=_spec(_upload(client)))
        assert r.status_code == 200, r.text
        counts.append(r.json()["parameters"])
    assert counts[1] - counts[0] == (1000 - 100) * 8  # the embedding table's rows × embedding_dim
    capped = make_client(text_max_vocabulary=50_000, max_parameters=100_000)
    r = capped.post("/v1/jobs", json=_spec(_upload(capped)))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "model"]


def test_text_beyond_the_servers_kept_bytes_is_refused_at_submit(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(text_max_bytes=100)  # the corpus's column holds more
    ds = _upload(client)
    r = client.post("/v1/jobs", json=_spec(ds))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "dataset", "columns"]]
    assert "REGTRAIN_TEXT_MAX_BYTES" in detail[0]["msg"] and "review" in detail[0]["msg"]
    # the marker is the store's, not the document's (API.md's column fields only)
    shown = client.get(f"/v1/datasets/{ds}").json()["columns"]
    assert set(shown[0]) == {"name", "type", "missing", "distinct", "categories"}
