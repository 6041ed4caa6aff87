"""Sequences of frames against the live API and worker on both backends: a generated problem
(3 classes × 200 sequences of T=40 frames of F=4 values: sines of a class-dependent frequency
plus noise, each of its own length 20..40) uploads as an NPZ with `lengths`, a `conv1d` trains to
an accuracy far above chance (1/3), predicts rows given as lists of frames, and its TorchScript
export (downloaded over HTTP) takes float64 frames and answers predict's probabilities; a GRU
trains on the same data; a row model is refused the frames (422 at model.type) and sequences
longer than the limit are refused at upload (400 naming X)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from live_service import Service

T, F, PER_CLASS = 40, 4, 200
FREQUENCIES = (0.25, 0.6, 1.1)  # radians a step, one per class


def frames(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), PER_CLASS)
    n = len(y)
    lengths = rng.integers(20, T + 1, n)
    steps = np.arange(T)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, F))
    freq = np.asarray(FREQUENCIES)[y][:, None, None]
    X = np.sin(steps * freq + phase) + 0.2 * rng.normal(size=(n, T, F))
    X[np.arange(T)[None, :] >= lengths[:, None]] = 0.0  # padding
    order = rng.permutation(n)
    return {"X": X[order].astype(np.float32), "y": y[order], "lengths": lengths[order]}


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload(service: Service, data: dict[str, np.ndarray]) -> str:
    r = service.http.post("/v1/datasets", files={"file": ("frames.npz", npz(**data))})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _spec(dataset_id: str, model: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {
        "dataset": {"id": dataset_id},
        "model": model,
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 32, "device": "cpu"},
        "split": {"validation": 0.2, "test": 0.2, "seed": 0},
    }


def test_a_conv1d_learns_frames_predicts_rows_and_exports(service: Service) -> None:
    data = frames()
    dataset_id = _upload(service, data)
    got = service.http.get(f"/v1/datasets/{dataset_id}").json()
    assert (got["n_samples"], got["n_features"], got["image_shape"]) == (600, T * F, [T, F]), got

    # a row model is refused the frames at model.type, with the reason
    r = service.http.post("/v1/jobs", json=_spec(dataset_id, {"type": "mlp", "hidden": [8]}, 1))
    assert r.status_code == 422 and "model" in r.text and "sequences of frames" in r.text, r.text

    conv1d = {"type": "conv1d", "channels": [16, 16], "kernel_size": 5, "hidden": [16]}
    job = service.submit(_spec(dataset_id, conv1d, epochs=8))
    done = service.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    accuracy = done["result"]["metrics"]["test_accuracy"]
    print(f"frames conv1d test accuracy: {accuracy:.3f} (chance 0.333)")
    assert accuracy >= 0.8

    # rows as lists of frames: each cut at its own length (predict pads it with zero frames)
    pick = range(6)
    rows = [data["X"][i, : data["lengths"][i]].tolist() for i in pick]
    p = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": rows, "probabilities": True})
    assert p.status_code == 200, p.text
    body = p.json()
    assert body["predictions"] == [int(data["y"][i]) for i in pick], body
    proba = np.asarray(body["probabilities"])
    bad = service.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[[1.0, 2.0]]]})
    assert bad.status_code == 422 and "frames of 4 values" in bad.text, bad.text

    # the TorchScript export takes the full T×F frames as numpy has them (float64), zero-padded
    r = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/best", params={"format": "torchscript"})
    assert r.status_code == 200, r.text
    scripted = torch.jit.load(io.BytesIO(r.content))
    with torch.no_grad():
        exported = torch.softmax(scripted(torch.from_numpy(data["X"][list(pick)].astype(np.float64))), 1)
    np.testing.assert_allclose(exported.numpy(), proba, atol=1e-5)


def test_a_gru_learns_frames_too(service: Service) -> None:
    dataset_id = _upload(service, frames(seed=1))
    job = service.submit(_spec(dataset_id, {"type": "rnn", "cell": "gru", "hidden": 16}, epochs=8))
    done = service.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    accuracy = done["result"]["metrics"]["test_accuracy"]
    print(f"frames GRU test accuracy: {accuracy:.3f} (chance 0.333)")
    assert accuracy >= 0.8


def test_sequences_beyond_the_limit_are_refused_at_upload(service: Service) -> None:
    data = {
        "X": np.zeros((10, 4097, 1), np.float32),
        "y": np.arange(10) % 2,
        "lengths": np.ones(10, np.int64),
    }
    r = service.http.post("/v1/datasets", files={"file": ("long.npz", npz(**data))})
    assert r.status_code == 400 and "X: sequences of 4097 frames" in r.text, r.text
