"""Data files against the live API and worker: hostile files are refused with a 400 while the
API's resident memory (read from /proc during each request) barely moves, a large CSV costs
about its own size, and DELETE removes a trained job's files."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_service import Service
from regtrain_client import Client, NotFound

MB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _peak_growth(pid: int, request: Callable[[], httpx.Response]) -> tuple[httpx.Response, int, float]:
    """The response, the API's RSS growth over its RSS before (sampled every 5 ms), and seconds."""
    before, peak, done = _rss(pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    try:
        r = request()
    finally:
        seconds = time.perf_counter() - t
        done.set()
        sampler.join()
    return r, max(0, peak[0] - before), seconds


def _bomb() -> bytes:
    """X declares 600 MB of float64 in its .npy header; the file is under 1 MB."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (75_000, 1000)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            for _ in range(35):
                f.write(bytes(16 * MB))
        y = io.BytesIO()
        np.save(y, np.zeros(75_000))
        zf.writestr("y.npy", y.getvalue())
    return buf.getvalue()


def _upload(service: Service, name: str, raw: bytes, **form: str) -> Callable[[], httpx.Response]:
    return lambda: service.http.post("/v1/datasets", files={"file": (name, raw)}, data=form)


def test_hostile_files_are_400_and_cost_the_api_nothing(service: Service) -> None:
    pid = service.api.pid
    warm = _upload(service, "warm.csv", b"a,y\n" + b"".join(f"{i},{i % 2}\n".encode() for i in range(20)))
    assert warm().status_code == 201  # the first upload loads pyarrow; count only what parsing costs
    bare = io.BytesIO()
    np.save(bare, np.zeros((1000, 10)))
    good = io.BytesIO()
    np.savez(good, X=np.zeros((1000, 10)), y=np.arange(1000) % 2)
    labels = b"a,y\n" + b"".join(f"{i},{['0', '1e30', '2e30'][i % 3]}\n".encode() for i in range(30))
    cases: list[tuple[str, bytes, int, str]] = [
        ("bomb.npz", _bomb(), 400, "REGTRAIN_MAX_DATASET_BYTES"),
        ("bare.npz", bare.getvalue(), 400, "a bare .npy array"),
        ("cut.npz", good.getvalue()[:5000], 400, "truncated or damaged"),
        ("noxy.npz", good.getvalue().replace(b"X.npy", b"Z.npy"), 400, "must hold arrays 'X' and 'y'"),
        (
            "gaps.csv",
            b"a,b,y\n" + b"1,inf,\n" * 20,
            400,
            "column 'b' holds infinite values (first at line 2); target column 'y' has 20 missing values",
        ),
        ("labels.csv", labels, 201, ""),
    ]
    for name, raw, status, message in cases:
        r, growth, seconds = _peak_growth(pid, _upload(service, name, raw))
        print(f"{name}: {r.status_code}, API RSS +{growth / MB:.1f} MB, {seconds * 1000:.0f} ms")
        assert r.status_code == status, (name, r.text)
        assert message in r.text, (name, r.text)
        assert growth < 50 * MB, (name, growth)
        if name == "labels.csv":
            assert r.json()["n_classes"] == 3


def test_a_20_mb_csv_costs_about_its_size(service: Service) -> None:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    X = rng.normal(size=(90_000, 24))
    np.savetxt(out, np.column_stack([X, np.arange(90_000) % 4]), fmt=["%.6f"] * 24 + ["%d"], delimiter=",")
    raw = b",".join(f"f{i}".encode() for i in range(24)) + b",label\n" + out.getvalue()
    assert 19 * MB < len(raw) < 22 * MB
    r, growth, seconds = _peak_growth(service.api.pid, _upload(service, "big.csv", raw))
    print(f"{len(raw) / MB:.1f} MB CSV: {r.status_code}, API RSS +{growth / MB:.0f} MB, {seconds:.2f} s")
    assert r.status_code == 201, r.text
    assert r.json()["n_samples"] == 90_000 and r.json()["n_classes"] == 4
    assert growth < 3 * len(raw)


def test_delete_a_trained_job_and_its_dataset(service: Service) -> None:
    csv = b"a,b,label\n" + b"".join(f"{i * 0.1:.1f},{i % 5},{[3, 7][i % 2]}\n".encode() for i in range(60))
    ds = service.http.post("/v1/datasets", files={"file": ("ints.csv", csv)}).json()
    job = service.submit({"dataset": {"id": ds["id"]}, "model": {"type": "mlp", "hidden": [8]},
                          "training": {"epochs": 3, "checkpoint_every": 1}})  # fmt: skip
    assert service.http.delete(f"/v1/datasets/{ds['id']}").status_code == 409  # the job needs it
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]
    p = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[0.0, 1.0], [5.0, 2.0]]}).json()
    assert all(type(v) is int and v in (3, 7) for v in p["predictions"]), p
    work_dir = Path(service.env["REGTRAIN_DATA_DIR"]) / "jobs" / job["id"]
    assert (work_dir / "checkpoints" / "best.safetensors").is_file()
    client = Client(service.url, retries=0)
    client.job(job["id"]).delete()  # the Python client's DELETE
    assert not work_dir.exists()
    assert service.http.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best").status_code == 404
    with pytest.raises(NotFound):
        client.delete(job["id"])
    client.delete_dataset(ds["id"])
    assert service.http.get(f"/v1/datasets/{ds['id']}").status_code == 404
