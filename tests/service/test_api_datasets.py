"""Dataset uploads: CSV, Parquet and NPZ in, a canonical file under a server-made name out."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.data.datafile import load_canonical


def _csv(rows: int = 30) -> bytes:
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label"]
    for i in range(rows):
        a, b, c = rng.normal(size=3)
        lines.append(f"{a:.3f},{b:.3f},{c:.3f},{['cat', 'dog'][i % 2]}")
    return ("\n".join(lines) + "\n").encode()


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload(client: TestClient, name: str, raw: bytes, **form: str) -> Any:
    return client.post("/v1/datasets", files={"file": (name, raw)}, data=form)


def test_csv_upload_answers_201_and_trains_by_id(client: TestClient) -> None:
    r = _upload(client, "../../etc/pets.csv", _csv(), target="label")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert {k: ds[k] for k in ("name", "task", "n_samples", "n_features", "n_classes")} == {
        "name": "pets.csv", "task": "classification", "n_samples": 30, "n_features": 3, "n_classes": 2,
    }  # fmt: skip
    assert len(ds["sha256"]) == 64 and ds["id"].startswith("ds-")
    settings = client.app.state.settings  # type: ignore[attr-defined]
    stored = load_canonical(settings.datasets_dir / f"{ds['id']}.npz")
    assert stored.X.shape == (30, 3) and stored.sha256() == ds["sha256"]
    assert sorted(p.name for p in settings.datasets_dir.iterdir()) == [f"{ds['id']}.npz"]
    spec = {"dataset": {"id": ds["id"]}, "model": {"type": "mlp", "hidden": [4]}}
    v = client.post("/v1/jobs:validate", json=spec).json()
    assert v["parameters"] == 3 * 4 + 4 + 4 * 2 + 2
    assert client.post("/v1/jobs", json=spec).status_code == 202
    cnn = {"dataset": {"id": ds["id"]}, "model": {"type": "cnn"}}
    assert client.post("/v1/jobs", json=cnn).json()["detail"][0]["loc"] == ["body", "model", "type"]
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_npz_images_upload_and_regression_task(client: TestClient) -> None:
    X = np.random.default_rng(0).normal(size=(20, 1, 8, 8)).astype(np.float32)
    r = _upload(client, "imgs.npz", _npz(X=X, y=np.arange(20) % 3))
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["image_shape"] == [1, 8, 8] and ds["n_features"] == 64 and ds["n_classes"] == 3
    spec = {"dataset": {"id": ds["id"]}, "model": {"type": "cnn", "channels": [4], "hidden": [8]}}
    assert client.post("/v1/jobs:validate", json=spec).status_code == 200
    reg = _upload(client, "r.npz", _npz(X=X.reshape(20, -1), y=np.linspace(0, 1, 20)), task="regression")
    assert reg.status_code == 201 and reg.json()["task"] == "regression"
    assert reg.json()["n_classes"] is None


def test_list_datasets_shows_uploads_and_builtins(client: TestClient) -> None:
    up = _upload(client, "pets.csv", _csv()).json()
    listed = client.get("/v1/datasets").json()["datasets"]
    assert listed[0]["id"] == up["id"] and listed[0]["builtin"] is False
    builtin = {d["name"]: d for d in listed if d["builtin"]}
    assert set(builtin) == {"digits", "iris", "wine", "breast_cancer", "diabetes"}
    assert builtin["digits"]["image_shape"] == [1, 8, 8] and builtin["diabetes"]["task"] == "regression"


def test_bad_uploads_are_refused_with_4xx(client: TestClient) -> None:
    pickled = io.BytesIO()
    np.savez(pickled, X=np.array([{"a": 1}] * 12, dtype=object), y=np.zeros(12))
    cases = {
        "ragged.csv": b"a,b,y\n1,2,0\n1,2\n" + b"1,2,1\n" * 12,
        "text.csv": b"a,b,y\n" + b"1,x,0\n" * 12,
        "empty.csv": b"",
        "headeronly.csv": b"a,b,y\n",
        "binary.csv": bytes(range(256)) * 4,
        "pickle.npz": pickled.getvalue(),
        "noy.npz": _npz(X=np.zeros((12, 2))),
        "broken.npz": b"PK\x03\x04 not really a zip",
        "oneclass.csv": b"a,y\n" + b"1,0\n" * 12,
    }
    for name, raw in cases.items():
        r = _upload(client, name, raw)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.json()["detail"], name
    assert _upload(client, "pets.csv", _csv(), target="nope").status_code == 400
    assert _upload(client, "pets.csv", _csv(), task="clustering").status_code == 422
    assert client.post("/v1/datasets", data={"target": "y"}).status_code == 422  # no file
    assert [d for d in client.get("/v1/datasets").json()["datasets"] if not d["builtin"]] == []


def test_npz_problems_are_400_naming_them(client: TestClient) -> None:
    bare = io.BytesIO()
    np.save(bare, np.zeros((20, 3)))
    good = _npz(X=np.arange(60.0).reshape(20, 3), y=np.arange(20) % 2)
    cases = {
        "bare.npz": (bare.getvalue(), "a bare .npy array, not an NPZ archive"),
        "cut.npz": (good[: len(good) // 2], "truncated or damaged"),
        "other.npz": (_npz(A=np.zeros((20, 3)), y=np.zeros(20)), "must hold arrays 'X' and 'y'"),
    }
    for name, (raw, message) in cases.items():
        r = _upload(client, name, raw)
        assert r.status_code == 400 and message in r.json()["detail"], (name, r.text)
        assert r.json()["detail"].startswith(f"{name}: ")


def test_npz_over_the_byte_limit_is_refused_from_its_header(make_client: Any) -> None:
    client = make_client(max_dataset_bytes=10_000)
    r = _upload(client, "big.npz", _npz(X=np.zeros((2000, 10), np.float32), y=np.arange(2000) % 2))
    assert r.status_code == 400 and "REGTRAIN_MAX_DATASET_BYTES" in r.json()["detail"], r.text


def test_parquet_upload_keeps_integer_classes(client: TestClient) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"a": rng.normal(size=40), "b": rng.normal(size=40), "y": np.arange(40) % 4 * 10}), buf
    )
    r = _upload(client, "train.parquet", buf.getvalue(), target="y")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["n_samples"], ds["n_features"], ds["n_classes"]) == (40, 2, 4)
    stored = load_canonical(client.app.state.settings.datasets_dir / f"{ds['id']}.npz")  # type: ignore[attr-defined]
    assert stored.classes.tolist() == [0, 10, 20, 30]


def test_too_large_upload_is_413(make_client: Any) -> None:
    client = make_client(max_upload_bytes=1000)
    r = _upload(client, "big.csv", _csv(rows=200))
    assert r.status_code == 413 and "detail" in r.json()
    huge = b"x" * (2 * 1024 * 1024)
    assert _upload(client, "huge.csv", huge).status_code == 413  # refused by declared length
    assert _upload(client, "small.csv", _csv(rows=12)).status_code == 201


def test_other_tenants_datasets_are_invisible(make_client: Any) -> None:
    client = make_client(api_keys="alpha:key-a,beta:key-b")
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    ds = client.post("/v1/datasets", files={"file": ("p.csv", _csv())}, headers=a).json()
    assert client.get(f"/v1/datasets/{ds['id']}", headers=b).status_code == 404
    spec = {"dataset": {"id": ds["id"]}, "model": {"type": "mlp"}}
    r = client.post("/v1/jobs", json=spec, headers=b)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "dataset", "id"]
    assert client.post("/v1/jobs", json=spec, headers=a).status_code == 202
