"""The proofs of docs/REGULARIZATION.md (numbered as there), against the engine's own code."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from engine_helpers import make_spec, penalty_term, without_timing
from torch import nn

from service.contract.architecture import BUILTIN_SHAPES
from service.contract.spec import JobSpec
from worker.training.data import Prepared
from worker.training.errors import TrainingError
from worker.training.loop import Callbacks, FitResult, fit
from worker.training.models import create_model
from worker.training.optim import create_optimizer, folds_l2
from worker.training.regularization import (
    EarlyStopping,
    Penalty,
    apply_max_norm,
    split_parameters,
    weight_stats,
)

CPU = torch.device("cpu")
Prepare = Callable[[JobSpec], Prepared]


def mlp(hidden: list[int], **model: Any) -> tuple[JobSpec, nn.Sequential]:
    spec = make_spec(model={"type": "mlp", "hidden": hidden, **model})
    torch.manual_seed(0)
    return spec, create_model(spec, BUILTIN_SHAPES["iris"])


def cnn() -> tuple[JobSpec, nn.Sequential]:
    spec = make_spec(dataset={"name": "digits"}, model={"type": "cnn", "channels": [4, 8], "hidden": [16, 8]})
    torch.manual_seed(0)
    return spec, create_model(spec, BUILTIN_SHAPES["digits"])


def weights_of(model: nn.Module) -> list[torch.Tensor]:
    """Every Linear and Conv2d weight, the tensors regularization must cover."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def ids(tensors: list[torch.Tensor]) -> set[int]:
    return {id(t) for t in tensors}


def run_fit(spec: JobSpec, data: Prepared, **kw: Any) -> tuple[FitResult, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    out = fit(spec, data, kw.pop("work_dir", None), Callbacks(on_epoch=rows.append), **kw)
    return out, rows


def initial_model(spec: JobSpec, data: Prepared) -> nn.Sequential:
    """The model fit() starts from: it seeds torch with training.seed and builds the plan."""
    torch.manual_seed(spec.training.seed)
    return create_model(spec, data.shape)


def engine_parts(
    spec: JobSpec, model: nn.Module
) -> tuple[list[nn.Parameter], list[nn.Parameter], Penalty, torch.optim.Optimizer]:
    """Scope, penalty and optimizer put together as fit() puts them."""
    reg = spec.regularization
    inside, outside = split_parameters(model, reg.apply_to)
    penalty = Penalty(inside, reg.l1, reg.l2, reg.l1_mode, l2_in_optimizer=folds_l2(spec))
    return inside, outside, penalty, create_optimizer(spec, inside, outside, CPU)


def zero_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


# --- 1. L2 ---------------------------------------------------------------------------------


def test_1_l2_penalty_is_lambda_sum_of_squares_with_gradient_2_lambda_w() -> None:
    _, model = mlp([8, 8, 8])
    lam = 0.03
    inside, _ = split_parameters(model, "weights")
    penalty = Penalty(inside, 0.0, lam, "subgradient")
    expected = lam * sum(float((w.detach().double() ** 2).sum()) for w in weights_of(model))
    assert float(penalty.value()) == pytest.approx(expected, rel=1e-5)
    assert float(penalty_term(penalty).detach()) == pytest.approx(expected, rel=1e-5)
    # not the tutorial's λ·‖w‖ (the norm, not its square)
    assert expected != pytest.approx(lam * sum(float(w.detach().norm()) for w in weights_of(model)), rel=1e-3)

    grads = torch.autograd.grad(penalty_term(penalty), inside)
    for w, g in zip(inside, grads, strict=True):
        torch.testing.assert_close(g, 2 * lam * w.detach())
    zero_grads(model)
    penalty.add_gradient()
    for w in inside:
        torch.testing.assert_close(w.grad, 2 * lam * w.detach())


def test_1_reported_penalty_is_l2_of_the_weights(prepared: Prepare) -> None:
    """Through fit(): with a vanishing learning rate the weights stay at their initial values, so
    the epoch's reported penalty is λ·Σw² of the initial weight matrices."""
    lam = 0.01
    spec = make_spec(
        regularization={"l2": lam},
        optimizer={"name": "sgd", "lr": 1e-12},
        training={"epochs": 1, "checkpoint_every": 0},
    )
    data = prepared(spec)
    expected = lam * sum(
        float((w.detach().double() ** 2).sum()) for w in weights_of(initial_model(spec, data))
    )
    _, rows = run_fit(spec, data)
    assert rows[0]["penalty"] == pytest.approx(expected, rel=1e-5)
    assert rows[0]["train_loss"] == pytest.approx(rows[0]["data_loss"] + expected, rel=1e-5)


# --- 2. L1 ---------------------------------------------------------------------------------


def test_2_l1_gradient_is_lambda_sign_w() -> None:
    _, model = mlp([8, 8])
    lam = 0.02
    inside, _ = split_parameters(model, "weights")
    penalty = Penalty(inside, lam, 0.0, "subgradient")
    expected = lam * sum(float(w.detach().abs().sum()) for w in weights_of(model))
    assert float(penalty.value()) == pytest.approx(expected, rel=1e-5)
    for w, g in zip(inside, torch.autograd.grad(penalty_term(penalty), inside), strict=True):
        torch.testing.assert_close(g, lam * torch.sign(w.detach()))
    zero_grads(model)
    penalty.add_gradient()
    for w in inside:
        torch.testing.assert_close(w.grad, lam * torch.sign(w.detach()))


def test_2_elastic_net_adds_both_gradients() -> None:
    _, model = mlp([8])
    inside, _ = split_parameters(model, "weights")
    penalty = Penalty(inside, 0.01, 0.02, "subgradient")
    zero_grads(model)
    penalty.add_gradient()
    for w in inside:
        torch.testing.assert_close(w.grad, 0.01 * torch.sign(w.detach()) + 0.04 * w.detach())


def test_2_proximal_l1_is_softshrink_and_gives_exact_zeros() -> None:
    lr, lam = 0.1, 0.5
    spec, model = mlp([32, 32])
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l1": lam, "l1_mode": "proximal"},
        optimizer={"name": "sgd", "lr": lr},
    )
    inside, outside, penalty, optimizer = engine_parts(spec, model)
    before = [w.detach().clone() for w in inside]
    bias_before = [b.detach().clone() for b in outside]
    zero_grads(model)  # zero data gradient
    penalty.add_gradient()  # proximal mode adds no subgradient
    assert all(torch.count_nonzero(w.grad) == 0 for w in inside)
    optimizer.step()
    penalty.proximal_step(optimizer.param_groups[0]["lr"])
    for w, w0 in zip(inside, before, strict=True):
        shrunk = torch.nn.functional.softshrink(w0, lr * lam)
        torch.testing.assert_close(w.detach(), shrunk, rtol=0, atol=0)
        manual = torch.sign(w0) * torch.clamp(w0.abs() - lr * lam, min=0)
        torch.testing.assert_close(w.detach(), manual)
    zeros = sum(int((w == 0).sum()) for w in inside)
    assert zeros > 0
    assert weight_stats(inside)[1] == pytest.approx(zeros / sum(w.numel() for w in inside))
    for b, b0 in zip(outside, bias_before, strict=True):  # biases are out of scope
        assert torch.equal(b.detach(), b0)


def test_2_proximal_training_gives_sparsity_and_subgradient_does_not(prepared: Prepare) -> None:
    common = {"optimizer": {"name": "sgd", "lr": 0.05}, "training": {"epochs": 3, "checkpoint_every": 0}}
    prox = make_spec(regularization={"l1": 0.2, "l1_mode": "proximal"}, **common)
    sub = make_spec(regularization={"l1": 0.2, "l1_mode": "subgradient"}, **common)
    _, prox_rows = run_fit(prox, prepared(prox))
    _, sub_rows = run_fit(sub, prepared(sub))
    assert prox_rows[-1]["weight_sparsity"] > 0.2
    assert sub_rows[-1]["weight_sparsity"] == 0.0


# --- 3. SGD weight decay = 2λ is L2 of λ -----------------------------------------------------


def sgd_steps(l2: float, weight_decay: float, explicit: bool = False, steps: int = 8) -> list[torch.Tensor]:
    """Parameters after `steps` sgd+momentum steps through the engine's optimizer and penalty;
    explicit: the reference instead, loss + λ·Σw² differentiated by autograd, no decay."""
    spec, model = mlp([16, 16])
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l2": 0.0 if explicit else l2},
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": weight_decay},
    )
    inside, _, penalty, optimizer = engine_parts(spec, model)
    reference = Penalty(inside, 0.0, l2, "subgradient")
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        (loss + penalty_term(reference) if explicit else loss).backward()
        penalty.add_gradient()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_3_sgd_weight_decay_2_lambda_equals_l2_lambda() -> None:
    lam = 0.05
    reference = sgd_steps(l2=lam, weight_decay=0.0, explicit=True)
    a = sgd_steps(l2=lam, weight_decay=0.0)
    b = sgd_steps(l2=0.0, weight_decay=2 * lam)
    plain = sgd_steps(l2=0.0, weight_decay=0.0)
    for pr, pa, pb in zip(reference, a, b, strict=True):
        torch.testing.assert_close(pa, pr, rtol=0, atol=1e-6)
        torch.testing.assert_close(pb, pr, rtol=0, atol=1e-6)
    assert max(float((pa - pp).abs().max()) for pa, pp in zip(a, plain, strict=True)) > 1e-3
    # the tutorial's factor: weight_decay = λ is half the L2 of λ
    half = sgd_steps(l2=0.0, weight_decay=lam)
    assert max(float((pa - ph).abs().max()) for pa, ph in zip(a, half, strict=True)) > 1e-4


@pytest.mark.parametrize("clip", [None, 1e6], ids=["plain", "with-clipping"])
def test_3_fit_with_l2_equals_fit_with_weight_decay(prepared: Prepare, clip: float | None) -> None:
    """Spec A {l2: λ} against spec B {weight_decay: 2λ}, sgd with momentum 0.9, same seed. A clip
    threshold far above the gradient norm changes no number but keeps the L2 out of the
    optimizer (it must be clipped with the data's gradient), so both of the engine's paths for
    L2 are held to weight decay."""
    lam = 0.01
    training = {"epochs": 4, "checkpoint_every": 0, "grad_clip_norm": clip}
    common = {"model": {"type": "mlp", "hidden": [32], "dropout": 0.3}, "training": training}
    a = make_spec(
        regularization={"l2": lam}, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, **common
    )
    b = make_spec(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 2 * lam}, **common)
    none = make_spec(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, **common)
    out_a, _ = run_fit(a, prepared(a))
    out_b, _ = run_fit(b, prepared(b))
    out_none, _ = run_fit(none, prepared(none))
    sa, sb, sn = (o.model.state_dict() for o in (out_a, out_b, out_none))
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-5)
    assert max(float((sa[k] - sn[k]).abs().max()) for k in sa) > 1e-4


# --- 4. AdamW is not Adam + L2 -------------------------------------------------------------


def adam_like(
    name: str, l2: float, weight_decay: float, zero_data: bool, steps: int, explicit: bool = False
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(before, after) `steps` steps of adam or adamw through the engine's optimizer and penalty;
    explicit: loss + λ·Σw² by autograd instead of the engine's L2."""
    spec, model = mlp([16])
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l2": 0.0 if explicit else l2},
        optimizer={"name": name, "lr": 0.01, "weight_decay": weight_decay},
    )
    before = [p.detach().clone() for p in model.parameters()]
    inside, _, penalty, optimizer = engine_parts(spec, model)
    reference = Penalty(inside, 0.0, l2, "subgradient")
    gen = torch.Generator().manual_seed(2)
    X, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    for _ in range(steps):
        optimizer.zero_grad()
        if zero_data:
            zero_grads(model)
        else:
            loss = nn.functional.cross_entropy(model(X), y)
            (loss + penalty_term(reference) if explicit else loss).backward()
        penalty.add_gradient()
        optimizer.step()
    return before, [p.detach().clone() for p in model.parameters()]


def test_4_adamw_differs_from_adam_plus_l2() -> None:
    wd = 0.1
    _, reference = adam_like("adam", wd / 2, 0.0, zero_data=False, steps=10, explicit=True)
    _, adamw = adam_like("adamw", 0.0, wd, zero_data=False, steps=10)
    _, adam_l2 = adam_like("adam", wd / 2, 0.0, zero_data=False, steps=10)
    _, adam_coupled = adam_like("adam", 0.0, wd, zero_data=False, steps=10)
    assert max(float((a - b).abs().max()) for a, b in zip(adamw, reference, strict=True)) > 1e-4
    # the engine's adam + l2 is loss + λ·Σw²; adam's weight_decay is coupled: an L2 of wd/2
    for r, a, b in zip(reference, adam_l2, adam_coupled, strict=True):
        torch.testing.assert_close(a, r, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, r, rtol=0, atol=1e-5)
    # adamw with an l2 keeps both: the explicit L2 is not folded into the decoupled decay
    _, adamw_l2 = adam_like("adamw", wd / 2, wd, zero_data=False, steps=10)
    assert max(float((a - b).abs().max()) for a, b in zip(adamw, adamw_l2, strict=True)) > 1e-4


def test_4_one_adamw_step_with_zero_data_gradient_decays_the_weights() -> None:
    lr, wd = 0.01, 0.1
    before, after = adam_like("adamw", 0.0, wd, zero_data=True, steps=1)
    _, model = mlp([16])
    for p, w0, w1 in zip(model.parameters(), before, after, strict=True):
        if p.ndim >= 2:
            torch.testing.assert_close(w1, w0 * (1 - lr * wd), rtol=1e-6, atol=1e-8)
            assert not torch.equal(w1, w0)
        else:  # biases are out of the decay's scope
            assert torch.equal(w1, w0)


# --- 5. Scope ------------------------------------------------------------------------------


def test_5_default_scope_leaves_biases_and_batch_norm_alone() -> None:
    spec, model = mlp([8, 8], batch_norm=True)
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l2": 0.1, "l1": 0.1},
        optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 0.3},
    )
    inside, outside = split_parameters(model, "weights")
    assert ids(inside) == ids(weights_of(model))
    bn = [p for m in model.modules() if isinstance(m, nn.BatchNorm1d) for p in m.parameters()]
    biases = [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(bn) == 4
    assert ids(outside) == ids(bn) | ids(biases)

    _, _, _, optimizer = engine_parts(spec, model)
    groups = optimizer.param_groups
    assert len(groups) == 2
    assert ids(groups[0]["params"]) == ids(inside) and groups[0]["weight_decay"] >= 0.3
    assert ids(groups[1]["params"]) == ids(outside) and groups[1]["weight_decay"] == 0.0

    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    grads = {id(p): p.grad.clone() for p in model.parameters()}
    Penalty(inside, 0.1, 0.1, "subgradient").add_gradient()
    for p in outside:
        assert torch.equal(p.grad, grads[id(p)])
    for p in inside:
        assert not torch.equal(p.grad, grads[id(p)])


def test_5_one_step_with_zero_data_gradient_moves_only_the_weights() -> None:
    """Penalty and decay together, as fit() composes them: with no data gradient, one plain sgd
    step gives w·(1 − lr·(wd + 2λ₂)) − lr·λ₁·sign(w) for weights and leaves the rest alone."""
    lr, l1, l2, wd = 0.1, 0.01, 0.05, 0.3
    spec, model = mlp([8, 8], batch_norm=True)
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l1": l1, "l2": l2},
        optimizer={"name": "sgd", "lr": lr, "weight_decay": wd},
    )
    inside, outside, penalty, optimizer = engine_parts(spec, model)
    with torch.no_grad():
        for p in outside:  # BatchNorm starts at 1 and 0: make every value visible
            p.add_(torch.randn(p.shape))
    before = {id(p): p.detach().clone() for p in model.parameters()}
    zero_grads(model)
    penalty.add_gradient()
    optimizer.step()
    for p in outside:
        assert torch.equal(p.detach(), before[id(p)])
    for p in inside:
        w0 = before[id(p)]
        torch.testing.assert_close(p.detach(), w0 * (1 - lr * (wd + 2 * l2)) - lr * l1 * torch.sign(w0))


def test_5_apply_to_all_includes_biases_and_norm_parameters() -> None:
    spec, model = mlp([8], batch_norm=True)
    spec = make_spec(
        model=spec.model.model_dump(),
        regularization={"l2": 0.1, "apply_to": "all"},
        optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 0.3},
    )
    inside, outside = split_parameters(model, "all")
    assert outside == [] and ids(inside) == ids(list(model.parameters()))
    _, _, penalty, optimizer = engine_parts(spec, model)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] >= 0.3
    zero_grads(model)
    Penalty(inside, 0.0, 0.1, "subgradient").add_gradient()
    for p in model.parameters():
        torch.testing.assert_close(p.grad, 0.2 * p.detach())
    before = [p.detach().clone() for p in model.parameters()]
    zero_grads(model)
    penalty.add_gradient()
    optimizer.step()
    for p, p0 in zip(model.parameters(), before, strict=True):  # every tensor decays: wd + 2λ₂
        torch.testing.assert_close(p.detach(), p0 * (1 - 0.1 * (0.3 + 0.2)))


def test_5_reported_penalty_counts_only_the_weights(prepared: Prepare) -> None:
    """Through fit(), with a vanishing learning rate: the penalty reported for an MLP with
    batch norm is λ·Σw² over its weight matrices only (no bias, no BatchNorm parameter)."""
    spec = make_spec(
        model={"type": "mlp", "hidden": [8], "batch_norm": True},
        regularization={"l2": 0.5},
        optimizer={"name": "sgd", "lr": 1e-12},
        training={"epochs": 1, "checkpoint_every": 0},
    )
    data = prepared(spec)
    model = initial_model(spec, data)
    _, rows = run_fit(spec, data)
    only_weights = 0.5 * sum(float((w.detach().double() ** 2).sum()) for w in weights_of(model))
    assert rows[0]["penalty"] == pytest.approx(only_weights, rel=1e-5)


# --- 6. Every layer -------------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda: mlp([8, 8, 8])[1], lambda: cnn()[1]], ids=["mlp3", "cnn"])
def test_6_every_weight_matrix_and_kernel_is_in_scope(build: Callable[[], nn.Module]) -> None:
    model = build()
    inside, _ = split_parameters(model, "weights")
    expected = weights_of(model)
    assert len(expected) >= 4
    assert ids(inside) == ids(expected)
    zero_grads(model)
    Penalty(inside, 0.0, 0.1, "subgradient").add_gradient()
    for w in expected:  # every layer, not only the first
        torch.testing.assert_close(w.grad, 0.2 * w.detach())
    lam = 0.1
    value = float(Penalty(inside, 0.0, lam, "subgradient").value())
    assert value == pytest.approx(
        lam * sum(float((w.detach().double() ** 2).sum()) for w in expected), rel=1e-5
    )


# --- 7. Dropout ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_7_inverted_dropout_in_train_identity_in_eval(p: float) -> None:
    _, model = mlp([8], dropout=p)
    drop = next(m for m in model if isinstance(m, nn.Dropout))
    x = torch.rand(200_000) + 0.5  # no zeros of its own
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    zero = y == 0
    assert float(zero.float().mean()) == pytest.approx(p, abs=0.01)
    torch.testing.assert_close(y[~zero], x[~zero] / (1 - p))
    drop.eval()
    assert torch.equal(drop(x), x)


def test_7_eval_is_deterministic_and_train_is_not() -> None:
    _, model = mlp([64, 64], dropout=0.5)
    x = torch.randn(32, 4)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_7_no_dropout_on_the_output() -> None:
    for model in (mlp([8, 8], dropout=0.5)[1], cnn()[1]):
        last = max(i for i, m in enumerate(model) if isinstance(m, nn.Linear))
        assert last == len(model) - 1
    spec = make_spec(
        dataset={"name": "digits"},
        model={"type": "cnn", "channels": [4], "hidden": [8], "dropout": 0.5, "dropout2d": 0.5},
    )
    model = create_model(spec, BUILTIN_SHAPES["digits"])
    kinds = [type(m) for m in model]
    assert kinds[-1] is nn.Linear and kinds[-2] is nn.Dropout and kinds[-3] is nn.ReLU


# --- 8. Label smoothing ----------------------------------------------------------------------


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    c = logits.shape[1]
    target = (1 - eps) * nn.functional.one_hot(y, c).double() + eps / c
    return -(target * torch.log_softmax(logits.double(), 1)).sum(1).mean()


def test_8_label_smoothing_equals_the_hand_written_target(prepared: Prepare) -> None:
    """The epoch's data_loss, at a vanishing learning rate and one full batch, is the engine's
    criterion on the initial model: it must equal (1−ε)·onehot + ε/C cross entropy."""
    eps = 0.2
    spec = make_spec(
        regularization={"label_smoothing": eps},
        optimizer={"name": "sgd", "lr": 1e-12},
        training={"epochs": 1, "batch_size": 1000, "checkpoint_every": 0},
    )
    data = prepared(spec)
    model = initial_model(spec, data)
    with torch.no_grad():
        logits = model(torch.as_tensor(data.X_train))
    y = torch.as_tensor(data.y_train)
    expected = float(smoothed_ce(logits, y, eps))
    _, rows = run_fit(spec, data)
    assert rows[0]["data_loss"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(float(smoothed_ce(logits, y, 0.0)), rel=1e-3)
    torch.testing.assert_close(
        nn.CrossEntropyLoss(label_smoothing=eps)(logits.double(), y), smoothed_ce(logits, y, eps)
    )


# --- 9. Gradient clipping --------------------------------------------------------------------


def test_9_clipping_as_used_bounds_the_global_norm() -> None:
    _, model = mlp([32, 32])
    X, y = torch.randn(64, 4) * 100, torch.randint(0, 3, (64,))

    def grads(max_norm: float | None) -> list[torch.Tensor]:
        model.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        if max_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
        return [p.grad.clone() for p in model.parameters()]

    raw = grads(None)
    norm = float(torch.stack([g.norm() for g in raw]).norm())
    assert norm > 1
    clipped = grads(0.5)
    assert float(torch.stack([g.norm() for g in clipped]).norm()) <= 0.5 * (1 + 1e-5)
    for a, b in zip(raw, grads(norm * 2), strict=True):  # below the threshold: unchanged
        assert torch.equal(a, b)


def test_9_fit_clips_the_global_gradient_norm(prepared: Prepare) -> None:
    """One full-batch plain-SGD step with lr 1: the weights move by exactly the clipped gradient."""
    c = 0.01
    common = {
        "optimizer": {"name": "sgd", "lr": 1.0},
        "training": {"epochs": 1, "batch_size": 1000, "checkpoint_every": 0},
    }
    spec = make_spec(training={**common["training"], "grad_clip_norm": c}, optimizer=common["optimizer"])
    data = prepared(spec)
    start = [p.detach().clone() for p in initial_model(spec, data).parameters()]
    out, _ = run_fit(spec, data)
    step = torch.stack(
        [(p.detach() - s).norm() for p, s in zip(out.model.parameters(), start, strict=True)]
    ).norm()
    assert float(step) <= c * (1 + 1e-4)
    assert float(step) == pytest.approx(c, rel=1e-3)  # the raw gradient is larger: it was clipped

    # the L2's gradient is clipped together with the data's: the step still moves exactly c
    with_l2 = make_spec(
        training={**common["training"], "grad_clip_norm": c},
        optimizer=common["optimizer"],
        regularization={"l2": 0.5},
    )
    out_l2, _ = run_fit(with_l2, data)
    step_l2 = torch.stack(
        [(p.detach() - s).norm() for p, s in zip(out_l2.model.parameters(), start, strict=True)]
    ).norm()
    assert float(step_l2) == pytest.approx(c, rel=1e-3)

    unclipped = make_spec(**common)
    loose = make_spec(training={**common["training"], "grad_clip_norm": 1e6}, optimizer=common["optimizer"])
    a, _ = run_fit(unclipped, data)
    b, _ = run_fit(loose, data)
    raw_step = torch.stack(
        [(p.detach() - s).norm() for p, s in zip(a.model.parameters(), start, strict=True)]
    ).norm()
    assert float(raw_step) > 10 * c
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


# --- 10. Max-norm ----------------------------------------------------------------------------


def test_10_max_norm_caps_every_row_and_kernel() -> None:
    _, model = cnn()
    c = 0.3
    with torch.no_grad():
        for w in weights_of(model):
            w.mul_(10)
            w[0].mul_(1e-3)  # one small unit, already under the cap
    small = [w[0].detach().clone() for w in weights_of(model)]
    apply_max_norm(model, c)
    for w, s in zip(weights_of(model), small, strict=True):
        norms = w.detach().reshape(w.shape[0], -1).norm(dim=1)
        assert float(norms.max()) <= c * (1 + 1e-5)
        assert float(norms[1:].min()) == pytest.approx(c, rel=1e-4)  # the large ones hit the cap
        torch.testing.assert_close(w[0].detach(), s)  # under the cap: unchanged


def test_10_fit_keeps_rows_under_max_norm(prepared: Prepare) -> None:
    c = 0.5
    spec = make_spec(
        model={"type": "mlp", "hidden": [32, 32]},
        regularization={"max_norm": c},
        optimizer={"name": "sgd", "lr": 0.5, "momentum": 0.9},
        training={"epochs": 3, "checkpoint_every": 0},
    )
    out, _ = run_fit(spec, prepared(spec))
    for w in weights_of(out.model):
        assert float(w.detach().norm(dim=1).max()) <= c * (1 + 1e-5)


# --- 11. Early stopping ----------------------------------------------------------------------


def feed(tracker: EarlyStopping, values: list[float]) -> list[bool]:
    """should_stop after each evaluation."""
    out = []
    for epoch, v in enumerate(values, start=1):
        tracker.update(v, epoch)
        out.append(tracker.should_stop)
    return out


def test_11_stops_after_exactly_patience_bad_evaluations() -> None:
    t = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    assert feed(t, [1.0, 0.9, 0.95, 0.92, 0.91]) == [False, False, False, False, True]
    assert t.best == 0.9 and t.best_epoch == 2
    t = EarlyStopping("val_loss", "min", patience=2, min_delta=0.0)
    assert feed(t, [1.0, 1.1, 0.5, 0.6, 0.7]) == [False, False, False, False, True]  # an improvement resets


def test_11_min_delta_and_mode() -> None:
    t = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    assert feed(t, [1.0, 0.95, 0.91]) == [False, False, True]  # improvements under 0.1 do not count
    assert t.best == 1.0
    t = EarlyStopping("val_loss", "min", patience=2, min_delta=0.1)
    assert feed(t, [1.0, 0.85, 0.8, 0.74]) == [False, False, False, False]
    assert t.best_epoch == 4
    t = EarlyStopping("val_accuracy", "max", patience=2, min_delta=0.0)
    assert feed(t, [0.5, 0.6, 0.55, 0.6]) == [False, False, False, True]
    assert t.best == 0.6 and t.best_epoch == 2
    t = EarlyStopping("val_loss", "min", patience=1, min_delta=0.0)
    assert feed(t, [float("nan")]) == [True]  # NaN never counts as the best


def test_11_state_round_trips() -> None:
    t = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    feed(t, [1.0, 2.0])
    u = EarlyStopping("val_loss", "min", patience=3, min_delta=0.0)
    u.load_state_dict(copy.deepcopy(t.state_dict()))
    assert (u.best, u.best_epoch, u.bad_evaluations) == (1.0, 1, 1)


def test_11_fit_stops_at_epoch_one_plus_patience(prepared: Prepare) -> None:
    spec = make_spec(
        optimizer={"name": "sgd", "lr": 1e-6},
        training={"epochs": 20, "checkpoint_every": 0, "early_stopping": {"patience": 3, "min_delta": 1.0}},
    )
    out, rows = run_fit(spec, prepared(spec))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert out.stopped_early and out.best_epoch == 1 and out.epochs_completed == 4


def test_11_monitor_not_reported_is_refused(prepared: Prepare) -> None:
    spec = make_spec(training={"early_stopping": {"monitor": "val_r2"}})
    with pytest.raises(TrainingError) as info:
        run_fit(spec, prepared(spec))
    assert info.value.type == "bad_data" and "val_r2" in info.value.message


# --- 12. Regularization lowers the generalization gap ------------------------------------------

OVERFIT: dict[str, Any] = {
    "dataset": {
        "name": "synthetic",
        "n_samples": 500,
        "n_features": 20,
        "n_classes": 2,
        "noise": 0.3,
        "seed": 0,
    },
    "split": {"validation": 0.5, "test": 0.3, "seed": 0},
    "optimizer": {"name": "adam", "lr": 0.001},
    "training": {"epochs": 60, "batch_size": 32, "seed": 0, "checkpoint_every": 0},
}


@pytest.fixture(scope="module")
def unregularized_gap(prepared: Prepare) -> float:
    spec = make_spec(model={"type": "mlp", "hidden": [512]}, **OVERFIT)
    _, rows = run_fit(spec, prepared(spec))
    gap = rows[-1]["generalization_gap"]
    assert gap > 0.3  # the task does overfit: 100 noisy samples, 11k parameters
    return gap


@pytest.mark.parametrize(
    ("model", "regularization"),
    [
        ({"type": "mlp", "hidden": [512]}, {"l2": 0.01}),
        ({"type": "mlp", "hidden": [512]}, {"l1": 0.003}),
        ({"type": "mlp", "hidden": [512], "dropout": 0.7}, {}),
    ],
    ids=["l2", "l1", "dropout"],
)
def test_12_regularization_lowers_the_generalization_gap(
    prepared: Prepare, unregularized_gap: float, model: dict[str, Any], regularization: dict[str, Any]
) -> None:
    spec = make_spec(model=model, regularization=regularization, **OVERFIT)
    _, rows = run_fit(spec, prepared(spec))
    gap = rows[-1]["generalization_gap"]
    assert gap == pytest.approx(rows[-1]["val_loss"] - rows[-1]["train_eval_loss"])
    assert gap < 0.8 * unregularized_gap


# --- 13. Determinism -----------------------------------------------------------------------------


def test_13_same_spec_and_seed_give_identical_metrics(prepared: Prepare) -> None:
    spec = make_spec(
        dataset={"name": "digits"},
        model={"type": "mlp", "hidden": [32], "dropout": 0.3},
        regularization={"l1": 1e-4, "l2": 1e-4},
        training={"epochs": 3, "checkpoint_every": 0},
    )
    _, first = run_fit(spec, prepared(spec))
    _, second = run_fit(spec, prepared(spec))
    assert without_timing(first) == without_timing(second)
    other = make_spec(**{**spec.model_dump(), "training": {**spec.training.model_dump(), "seed": 1}})
    _, third = run_fit(other, prepared(other))
    assert without_timing(third) != without_timing(first)
