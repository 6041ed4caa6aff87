"""bench/peers.py's pieces run: the problems' shapes, the split regtrain draws, the Optuna
contestant on a tiny budget, the floor and the closing rows. No timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# bench/ is no installed package: it is read from the checkout, as `python -m bench.peers` does
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import peers, peers_data, peers_optuna, peers_regtrain
from bench.peers_outcome import Outcome


def test_the_784_problem_is_shaped_like_mnist_and_deterministic() -> None:
    p = peers_data.problem("mnist784")
    assert p.X.shape == (5000, 784) and p.X.dtype == np.float32
    assert p.X.min() >= 0.0 and p.X.max() <= 1.0
    assert np.bincount(p.y).tolist() == [500] * 10
    assert np.array_equal(p.X[:50], peers_data.problem("mnist784").X[:50])
    assert peers_data.problem("digits").X.shape == (1797, 64)


def test_the_peers_split_is_the_one_regtrain_draws() -> None:
    from service.contract.spec import JobSpec
    from worker.training.data import prepare

    theirs = prepare(JobSpec.model_validate({"dataset": {"name": "digits"}, "model": {"type": "mlp"}}))
    ours = peers_data.split(peers_data.problem("digits"))
    # the same rows in the same order: the labels of each part match one for one
    assert np.array_equal(ours.y_train, theirs.y_train)
    assert np.array_equal(ours.y_val, theirs.y_val)
    assert np.array_equal(ours.y_test, theirs.y_test)
    assert np.allclose(ours.X_val, theirs.X_val, atol=1e-4)
    assert len(ours.X_full) == len(ours.X_train) + len(ours.X_val)


def test_the_optuna_contestant_searches_prunes_and_retrains() -> None:
    pytest.importorskip("optuna")
    out = peers_optuna.run("digits", trials=2, epochs=2)
    assert out.trials == 2 and 2 <= out.trial_epochs <= 4
    assert 0.0 < out.best_val <= 1.0 and 0.0 < out.test <= 1.0
    assert 0.0 < out.best_at_s <= out.wall_s
    assert Outcome.from_json(out.to_json()) == out


def test_the_sweep_regtrain_is_given_spans_the_peers_space() -> None:
    doc = peers_regtrain.sweep_doc({"name": "digits"}, 128, 32, 20)
    assert doc["space"]["optimizer.lr"] == {"log_uniform": [3e-4, 1e-2]}
    assert doc["space"]["model.dropout"] == {"uniform": [0.0, 0.3]}
    from service.contract.sweep_spec import SweepSpec

    SweepSpec.model_validate(doc)  # a sweep the API accepts


def test_rows_put_each_ratio_beside_its_target() -> None:
    def outcome(name: str, wall: float, val: float) -> Outcome:
        return Outcome(name, "mnist784", wall, wall / 2, val, val, 200, 32, 20)

    runs = {
        "regtrain": [outcome("regtrain", 5.0, 0.90)],
        "optuna script": [outcome("optuna script", 11.0, 0.902)],
    }
    rows = peers.peer_rows("mnist784", runs, gflops=150.0)
    by = {r.what.split(" (")[0]: r for r in rows}
    assert by["regtrain / optuna script, wall time"].ok is True
    assert by["regtrain − optuna script, best val"].ok is True
    floor = peers.floor_s("mnist784", 200, 150.0)
    assert floor == pytest.approx(200 * 3 * 2 * 3000 * (784 * 128 + 128 * 10) / 150e9)
    assert by["regtrain / compute floor"].measured == pytest.approx(5.0 / floor)
    # with the rate measured around regtrain's turn, the floor is at their mean, and the floor
    # at the run's first rate is shown beside it
    runs["regtrain"][0].notes["gflops_around"] = (100.0, 140.0)
    by = {r.what.split(" (")[0]: r for r in peers.peer_rows("mnist784", runs, gflops=150.0)}
    assert by["regtrain / compute floor"].measured == pytest.approx(
        5.0 / peers.floor_s("mnist784", 200, 120.0)
    )
    assert by["  … at the run's first rate"].measured == pytest.approx(5.0 / floor)


def test_the_all_rows_read_every_extra_measurement() -> None:
    extra = {
        "pruned_vs_grid": {"ratio": 0.3, "difference_points": -0.2},
        "fleet": {"ratio": 0.6, "ratio_same_threads": 0.5, "thread_speedup": 1.2},
        "engine": {"speedup": 1.3},
    }
    rows = peers.all_rows(extra)
    assert [r.ok for r in rows] == [True, True, True, None, None, True]
    assert rows[4].measured == 1.2
    assert all(r.target for r in rows)
