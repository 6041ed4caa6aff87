"""The fast step gives the plain answers.

On CPU: the Stepper (penalty folded into the gradient, L2 into the optimizer's weight decay,
losses accumulated on the device) equals a hand-written step with the penalty in the loss.
On CUDA (bench/gpu_check.sh runs these there): the step replayed from a CUDA graph equals the
eager step, and dropout, proximal L1, max-norm, clipping, schedulers and early stopping all run
inside it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from service.contract.spec import JobSpec
from worker.training.data import prepare
from worker.training.loop import Callbacks, fit
from worker.training.optim import create_optimizer, folds_l2
from worker.training.regularization import Penalty, split_parameters
from worker.training.step import Stepper

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _spec(**over: Any) -> JobSpec:
    base: dict[str, Any] = {
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden": [64, 32]},
        "regularization": {"l1": 1e-4, "l2": 1e-3},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "training": {"epochs": 3, "batch_size": 64, "checkpoint_every": 0},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return JobSpec.model_validate(base)


def test_stepper_equals_penalty_in_the_loss() -> None:
    spec = _spec()
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fast = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fast.load_state_dict(ref.state_dict())
    X, y = torch.randn(256, 64), torch.randint(0, 10, (256,))

    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    weights = [p for p in ref.parameters() if p.ndim >= 2]
    for i in range(0, 256, 64):
        ref_opt.zero_grad()
        pen = sum(1e-4 * w.abs().sum() + 1e-3 * w.square().sum() for w in weights)
        (nn.functional.cross_entropy(ref(X[i : i + 64]), y[i : i + 64]) + pen).backward()
        ref_opt.step()

    inside, outside = split_parameters(fast, "weights")
    assert folds_l2(spec)
    opt = create_optimizer(spec, inside, outside, torch.device("cpu"))
    penalty = Penalty(inside, 1e-4, 1e-3, "subgradient", l2_in_optimizer=True)
    stepper = Stepper(
        fast,
        nn.CrossEntropyLoss(),
        opt,
        penalty,
        regression=False,
        grad_clip_norm=None,
        max_norm=None,
        bf16=False,
        device=torch.device("cpu"),
        batch_size=64,
        sample_shape=(64,),
        target_dtype=torch.int64,
        use_graph=False,
    )
    for i in range(0, 256, 64):
        stepper.step(X, y, torch.arange(i, i + 64))
    for a, b in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(stepper.nonfinite) == 0
    assert float(stepper.loss_sum) > 0 and float(stepper.penalty_sum) > 0


def _run(spec: JobSpec, graphs: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], Any]:
    monkeypatch.setenv("REGTRAIN_CUDA_GRAPHS", "1" if graphs else "0")
    rows: list[dict[str, Any]] = []
    out = fit(spec, prepare(spec), None, Callbacks(on_epoch=rows.append))
    return rows, out


CUDA_CASES = {
    "sgd-l1-l2-maxnorm": {"regularization": {"max_norm": 2.0}},
    "adam-step-scheduler-clip": {
        "optimizer": {
            "name": "adam",
            "lr": 0.003,
            "momentum": 0.0,
            "scheduler": {"type": "step", "step_size": 1, "gamma": 0.5},
        },
        "training": {"grad_clip_norm": 1.0},
    },
    "adamw-batchnorm-all": {
        "model": {"batch_norm": True},
        "regularization": {"apply_to": "all"},
        "optimizer": {"name": "adamw", "lr": 0.003, "momentum": 0.0, "weight_decay": 0.01},
    },
    "rmsprop-regression": {
        "dataset": {"name": "diabetes"},
        "optimizer": {"name": "rmsprop", "lr": 0.001, "momentum": 0.0},
        "training": {"batch_size": 32},
    },
}


@needs_cuda
@pytest.mark.parametrize("case", sorted(CUDA_CASES))
def test_cuda_graph_equals_eager(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    over = dict(CUDA_CASES[case])
    over["training"] = {**over.get("training", {}), "device": "cuda"}
    spec = _spec(**over)
    eager_rows, eager = _run(spec, False, monkeypatch)
    graph_rows, graph = _run(spec, True, monkeypatch)
    for a, b in zip(eager_rows, graph_rows, strict=True):
        for key in ("train_loss", "data_loss", "penalty", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (case, key, a["epoch"])
    for (name, a), b in zip(eager.model.state_dict().items(), graph.model.state_dict().values(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=f"{case}: {name}")


@needs_cuda
def test_cuda_graph_runs_dropout_proximal_and_early_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(
        model={"dropout": 0.5},
        regularization={"l1": 1e-3, "l2": 0.0, "l1_mode": "proximal"},
        training={"device": "cuda", "epochs": 40, "early_stopping": {"patience": 2, "min_delta": 0.05}},
    )
    rows, out = _run(spec, True, monkeypatch)
    assert out.stopped_early and len(rows) < 40
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    assert out.weight_sparsity > 0  # proximal steps give exact zeros inside the graph too
    assert out.test_metrics["test_accuracy"] > 0.85


@needs_cuda
def test_cuda_bf16_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(training={"device": "cuda", "precision": "bf16", "epochs": 10})
    _, out = _run(spec, True, monkeypatch)
    assert out.test_metrics["test_accuracy"] > 0.9


@needs_cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_stacked_graph_equals_eager(optimizer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.training.stacked import StackedTrainer

    opt = {"name": optimizer, "lr": 0.05 if optimizer == "sgd" else 0.003}
    if optimizer != "sgd":
        opt["momentum"] = 0.0
    specs = [
        _spec(optimizer=opt, regularization={"l1": l1, "l2": l2}, training={"device": "cuda"})
        for l1, l2 in [(0.0, 0.0), (1e-4, 0.0), (0.0, 1e-3), (1e-4, 1e-2)]
    ]
    data = prepare(specs[0])
    runs = []
    for graphs in ("0", "1"):
        monkeypatch.setenv("REGTRAIN_CUDA_GRAPHS", graphs)
        rows: dict[int, list[dict[str, Any]]] = {}
        trainer = StackedTrainer(specs, data)
        assert trainer.use_graph == (graphs == "1")
        trainer.fit(lambda g, r, rows=rows: rows.setdefault(g, []).append(r))
        runs.append((rows, trainer))
    (eager_rows, eager), (graph_rows, graph) = runs
    assert graph.graph is not None  # the step really was captured
    for g in range(len(specs)):
        for a, b in zip(eager_rows[g], graph_rows[g], strict=True):
            for key in ("train_loss", "penalty", "val_loss"):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), (optimizer, g, key, a["epoch"])
    for a, b in zip(eager.params, graph.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_data_kept_on_the_host_gives_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data too large for the device stays in host memory and comes in batch by batch; on the
    CPU (same generator for the shuffles) the run is the very same."""
    spec = _spec(model={"dropout": 0.3}, training={"epochs": 2, "device": "cpu"})
    resident = _run_on(spec, "0", monkeypatch)
    host = _run_on(spec, "1", monkeypatch)
    assert resident == host


def _run_on(spec: JobSpec, host: str, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.setenv("REGTRAIN_HOST_DATA", host)
    rows: list[dict[str, Any]] = []
    fit(spec, prepare(spec), None, Callbacks(on_epoch=rows.append))
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second")} for r in rows]


@needs_cuda
@pytest.mark.parametrize("graphs", ["0", "1"])
def test_cuda_data_on_the_host_trains(graphs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGTRAIN_CUDA_GRAPHS", graphs)
    spec = _spec(training={"device": "cuda", "epochs": 5})
    rows = _run_on(spec, "1", monkeypatch)
    assert len(rows) == 5 and rows[-1]["val_accuracy"] > 0.9
