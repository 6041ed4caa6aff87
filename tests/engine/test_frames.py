"""Sequences of frames: an NPZ whose `lengths` (N,) makes X N×T×F frames (without it a 3-D X stays
grey images), kept through the canonical file, standardized with its padding zero, trained by a
sequence model, predicted from T×F rows and exported to TorchScript that takes float64."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import make_spec

from service.contract.architecture import DataShape, plan_model
from service.contract.errors import Conflict, SpecError
from service.data.datafile import DataError, load_canonical, parse_npz, save_canonical
from worker.training.checkpoints import read_sidecar
from worker.training.data import split_and_standardize
from worker.training.export import export
from worker.training.inference import InputError, Predictor
from worker.training.runner import run_job

LIMITS: dict[str, Any] = {"max_rows": 10_000, "max_columns": 10_000, "max_bytes": 50_000_000}


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def frames(n: int = 90, t: int = 24, f: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """3 classes of sines at class-dependent frequencies, random lengths t/2..t, junk after."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    lengths = rng.integers(t // 2, t + 1, n)
    steps = np.arange(t)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, f))
    X = np.sin(steps * (0.3 + 0.6 * y)[:, None, None] + phase) + 0.1 * rng.normal(size=(n, t, f))
    X[np.arange(t)[None, :] >= lengths[:, None]] = 5.0  # whatever the file holds past a length
    return {"X": X, "y": y, "lengths": lengths}


def test_npz_with_lengths_is_frames() -> None:
    a = frames()
    data = parse_npz(npz_bytes(**a), **LIMITS)
    assert data.X.shape == (90, 24, 3) and data.X.dtype == np.float32
    assert data.lengths is not None and data.lengths.tolist() == a["lengths"].tolist()
    assert data.image_shape == (24, 3)  # what the dataset row keeps: a (T, F) sample
    past = np.arange(24)[None, :] >= data.lengths[:, None]
    assert (data.X[past] == 0).all()  # the padding is zero whatever the file held
    shape = DataShape.of("classification", data.image_shape, 3, 90)
    assert shape.sequence == (24, 3) and shape.image_shape is None


def test_npz_without_lengths_stays_images() -> None:
    a = frames()
    data = parse_npz(npz_bytes(X=a["X"], y=a["y"]), **LIMITS)
    assert data.X.shape == (90, 1, 24, 3) and data.lengths is None and data.image_shape == (1, 24, 3)


def test_canonical_file_keeps_lengths(tmp_path: Path) -> None:
    data = parse_npz(npz_bytes(**frames()), **LIMITS)
    save_canonical(data, tmp_path / "d.npz")
    back = load_canonical(tmp_path / "d.npz")
    assert back.lengths is not None and back.lengths.tolist() == data.lengths.tolist()  # type: ignore[union-attr]
    assert (
        back.sha256()
        == data.sha256()
        != parse_npz(npz_bytes(X=frames()["X"], y=frames()["y"]), **LIMITS).sha256()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lengths": np.full(90, 3.0)}, "lengths must be integers"),
        ({"lengths": np.full(89, 3)}, "one value per sequence"),
        ({"lengths": np.full((90, 1), 3)}, "one value per sequence"),
        ({"lengths": np.r_[np.full(89, 3), 0]}, "within 1..24 (X's T); row 89 has 0"),
        ({"lengths": np.r_[np.full(89, 3), 25]}, "row 89 has 25"),
        ({"X": np.zeros((90, 72))}, "X with 'lengths' must be sequences of frames"),
        (
            {"X": np.zeros((90, 4097, 1), np.float32), "lengths": np.full(90, 3)},
            "X: sequences of 4097 frames",
        ),
    ],
)
def test_bad_lengths_are_refused(change: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse_npz(npz_bytes(**{**frames(), **change}), **LIMITS)


def test_frames_bytes_count_in_the_limit() -> None:
    with pytest.raises(DataError, match="REGTRAIN_MAX_DATASET_BYTES"):
        parse_npz(npz_bytes(**frames()), **{**LIMITS, "max_bytes": 90 * 24 * 3 * 4})


@pytest.mark.parametrize("model", [{"type": "mlp", "hidden": [8]}, {"type": "cnn", "channels": [4]}])
def test_row_and_image_models_refuse_frames_at_model_type(model: dict[str, Any]) -> None:
    shape = DataShape.of("classification", (24, 3), 3, 90)
    with pytest.raises(SpecError) as e:
        plan_model(make_spec(model=model), shape)
    assert e.value.loc == ("model", "type") and "sequences of frames (24×3)" in str(e.value)


def test_frames_are_standardized_with_their_padding_zero() -> None:
    data = parse_npz(npz_bytes(**frames()), **LIMITS)
    p = split_and_standardize(make_spec(model={"type": "conv1d", "channels": [4]}), data)
    assert p.X_train.shape[1:] == (24, 3) and p.input_shape == (24, 3) and p.shape.sequence == (24, 3)
    real = np.concatenate([x[np.any(x != 0, -1)] for x in p.X_train])
    assert abs(real.mean()) < 0.1 and abs(real.std() - 1) < 0.1  # over the real frames only
    for X in (p.X_train, p.X_val, p.X_test):
        assert all(not np.any(x[int(np.any(x != 0, -1).nonzero()[0].max()) + 1 :]) for x in X)


@pytest.mark.parametrize(
    "model",
    [
        {"type": "conv1d", "channels": [8], "kernel_size": 3, "hidden": [16]},
        {"type": "rnn", "cell": "gru", "hidden": 12},
        {"type": "transformer", "d_model": 8, "heads": 2, "layers": 1, "feedforward": 16, "max_length": 24},
    ],
)
def test_frames_train_predict_and_export(tmp_path: Path, model: dict[str, Any]) -> None:
    a = frames()
    data = parse_npz(npz_bytes(**a), **LIMITS)
    save_canonical(data, tmp_path / "ds" / "frames.npz")
    spec = make_spec(
        dataset={"id": "frames"},
        model=model,
        optimizer={"name": "adam", "lr": 0.01},
        training={"epochs": 3, "batch_size": 16},
    )
    assert run_job(spec, tmp_path / "w", datasets_dir=tmp_path / "ds").status == "succeeded"
    ckpt = tmp_path / "w" / "checkpoints"
    side = read_sidecar(ckpt, "final")
    predictor = Predictor(ckpt / "final.safetensors", side)
    # rows as T×F lists: the same row cut at its length, or padded with zero frames, is one row
    rows = [a["X"][i, : a["lengths"][i]].tolist() for i in range(6)]
    padded = [r + [[0.0] * 3] * (24 - len(r)) for r in rows]
    labels, proba = predictor.predict_proba(rows)
    np.testing.assert_allclose(predictor.predict_proba(padded)[1], proba, atol=1e-5)
    assert set(labels) <= {0, 1, 2}
    # short rows are padded to T: how many one call takes is bounded by what they are padded to
    with pytest.raises(InputError, match="at most 233016 rows of 24×3 frames"):
        predictor.predict([[[1.0, 2.0, 3.0]]] * 233_017)
    # a batch prediction reads the dataset's canonical rows: the same inputs as the rows above
    np.testing.assert_allclose(
        predictor.prepare_rows(data, 0, 6).X, predictor.prepare(np.array(padded), None).X
    )
    script = torch.jit.load(str(export(ckpt / "final.safetensors", side, "torchscript", tmp_path / "m.pt")))
    with torch.no_grad():
        out = script(torch.tensor(np.array(padded), dtype=torch.float64))
    np.testing.assert_allclose(torch.softmax(out, 1).numpy(), proba, atol=1e-4)
    # ONNX where its operators reach; where they do not, a Conflict (the route's 409) naming it
    if model["type"] == "transformer":
        with pytest.raises(Conflict, match=r"format=onnx: .*aten::.*format=torchscript"):
            export(ckpt / "final.safetensors", side, "onnx", tmp_path / "m.onnx")
        assert not list(tmp_path.glob("*.onnx*"))
    else:
        assert export(ckpt / "final.safetensors", side, "onnx", tmp_path / "m.onnx").is_file()


def test_a_worker_held_shape_file_of_frames_reads_back_as_a_sequence(tmp_path: Path) -> None:
    """A dataset by URI: the worker keeps its shape beside the canonical file (job_data)."""
    from worker.job_data import _read_shape, _write_shape

    _write_shape(tmp_path / "shape.json", parse_npz(npz_bytes(**frames()), **LIMITS))
    spec = make_spec(model={"type": "conv1d", "channels": [4]})
    shape = _read_shape(tmp_path / "shape.json", spec)
    assert (shape.sequence, shape.image_shape, shape.n_features, shape.n_outputs) == ((24, 3), None, 72, 3)
