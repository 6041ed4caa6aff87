"""The registry's two faces held equal: each optimizer entry's trial-axis `update` (the stacked
trainer's) against its `torch_optimizer` (the solo loop's), and each regularization term over a
trial axis against its one-trial case, trial by trial."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from service.contract.spec import OptimizerSpec
from worker.training import terms
from worker.training.updates import UPDATES, trial_views

OPTIMIZERS = [
    {"name": "sgd", "lr": 0.05},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"name": "adam", "lr": 0.01, "weight_decay": 1e-2},
    {"name": "adamw", "lr": 0.01, "weight_decay": 1e-1},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "weight_decay": 1e-2},
    {"name": "rmsprop", "lr": 0.01},
]


def _grads(step: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(100 + step))


def _trials(doc: dict[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """Three trials' lr, weight decay and first step (the third enters two steps late)."""
    return [doc["lr"], doc["lr"] / 3, doc["lr"] * 2], [doc.get("weight_decay", 0.0), 0.0, 1e-3], [0, 0, 2]


def _solo_runs(
    doc: dict[str, Any], G: int, shape: tuple[int, ...], steps: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The trials' initial weights (G, *shape), and each one trained alone by its torch optimizer."""
    lrs, wds, starts = _trials(doc)
    rule = UPDATES[doc["name"]]
    init = torch.randn((G, *shape), generator=torch.Generator().manual_seed(0))
    solo = []
    for g in range(G):
        p = torch.nn.Parameter(init[g].clone())
        spec = OptimizerSpec.model_validate({**doc, "lr": lrs[g], "weight_decay": wds[g]})
        opt = rule.torch_optimizer([{"params": [p], "weight_decay": wds[g]}], spec, torch.device("cpu"))
        for s in range(starts[g], steps):
            p.grad = _grads(s, (G, *shape))[g].clone()
            opt.step()
        solo.append(p.detach())
    return init, solo


@pytest.mark.parametrize("doc", OPTIMIZERS, ids=lambda d: f"{d['name']}-{len(d)}")
def test_the_trial_axis_update_is_the_torch_optimizer_trial_by_trial(doc: dict[str, Any]) -> None:
    """Three trials with their own lr and weight decay, one of them entering two steps late
    (a refilled slot: fresh state and its own step count), each equal to its own torch run."""
    G, shape, steps = 3, (5, 4), 6
    lrs, wds, starts = _trials(doc)
    o = OptimizerSpec.model_validate(doc)
    rule = UPDATES[o.name]
    init, solo = _solo_runs(doc, G, shape, steps)

    stacked = init.clone()
    ax = terms.TrialAxis(G, {id(stacked): 0})
    st = rule.init_state(stacked, o)
    t = torch.zeros(G, dtype=torch.float64)
    lr_all, wd_all = torch.tensor(lrs), torch.tensor(wds)
    for s in range(steps):
        active = torch.tensor([float(s >= start) for start in starts])
        g = _grads(s, (G, *shape)) * ax.view(active, stacked)
        t += active.double()
        lr = lr_all * active
        if rule.decoupled:
            terms.decoupled_decay([stacked], lr * wd_all, ax)
        else:
            terms.add_scaled([g], [stacked], wd_all, ax)
        before = {k: v.clone() for k, v in st.items()}
        rule.update(stacked, g, st, o, ax.view(lr, stacked), ax.view(t.clamp(min=1), stacked))
        for k, v in st.items():  # a slot not yet entered keeps its state fresh
            v[active == 0] = before[k][active == 0]
    for g in range(G):
        torch.testing.assert_close(stacked[g], solo[g], rtol=1e-6, atol=1e-7)


def test_the_terms_over_a_trial_axis_are_their_one_trial_case() -> None:
    G = 3
    w = torch.randn(4, G, 5, generator=torch.Generator().manual_seed(1))  # trial axis 1
    b = torch.randn(G, 1, 5, generator=torch.Generator().manual_seed(2))
    ax = terms.TrialAxis(G, {id(w): 1, id(b): 0})
    l1, l2 = torch.tensor([0.0, 1e-3, 1e-2]), torch.tensor([1e-2, 0.0, 1e-3])
    values = terms.penalty_value([w, b], l1, l2, ax, None)
    gw, gb = torch.zeros_like(w), torch.zeros_like(b)
    terms.add_scaled([gw, gb], [w, b], 2 * l2, ax)
    terms.add_l1_subgradient([gw, gb], [w, b], l1, ax)
    pw, pb = w.clone(), b.clone()
    terms.proximal_l1([pw, pb], 0.5 * l1 * 30, terms.TrialAxis(G, {id(pw): 1, id(pb): 0}))
    for g in range(G):
        ws, bs = w[:, g].clone(), b[g].clone()
        one = terms.penalty_value([ws, bs], float(l1[g]), float(l2[g]), terms.SOLO, None)
        assert float(values[g]) == pytest.approx(float(one), rel=1e-6)
        gws, gbs = torch.zeros_like(ws), torch.zeros_like(bs)
        terms.add_scaled([gws, gbs], [ws, bs], 2 * float(l2[g]), terms.SOLO)
        terms.add_l1_subgradient([gws, gbs], [ws, bs], float(l1[g]), terms.SOLO)
        torch.testing.assert_close(gw[:, g], gws)
        torch.testing.assert_close(gb[g], gbs)
        terms.proximal_l1([ws, bs], float(0.5 * l1[g] * 30), terms.SOLO)
        torch.testing.assert_close(pw[:, g], ws)
        torch.testing.assert_close(pb[g], bs)


@pytest.mark.parametrize("doc", OPTIMIZERS, ids=lambda d: f"{d['name']}-{len(d)}")
def test_the_per_trial_kernel_is_the_torch_optimizer_trial_by_trial(doc: dict[str, Any]) -> None:
    """The CPU's per-trial face (torch's fused one-trial kernel on each trial's contiguous
    block): three trials, their own lr and weight decay (the terms' part), one entering two
    steps late and so not stepped before, each equal to its own torch run."""
    G, shape, steps = 3, (5, 4), 6
    lrs, wds, starts = _trials(doc)
    o = OptimizerSpec.model_validate(doc)
    rule = UPDATES[o.name]
    init, solo = _solo_runs(doc, G, shape, steps)

    stacked = torch.nn.Parameter(init.clone())
    ax = terms.TrialAxis(G, {id(stacked): 0})
    st = rule.init_state(stacked, o)
    t = torch.zeros(G, dtype=torch.float64)
    wd_all = torch.tensor(wds)
    for s in range(steps):
        live = [g for g in range(G) if s >= starts[g]]
        stacked.grad = _grads(s, (G, *shape))
        for g in live:
            t[g] += 1
        with torch.no_grad():
            if rule.decoupled:
                lr_live = torch.tensor([lrs[g] if g in live else 0.0 for g in range(G)])
                terms.decoupled_decay([stacked], lr_live * wd_all, ax)
            else:
                terms.add_scaled([stacked.grad], [stacked], wd_all, ax)
            views = [trial_views([stacked], [st], t, g) for g in live]
            if not rule.trial_kernel:
                pytest.skip(f"{o.name} has no per-trial kernel: the trial-axis update steps it")
            rule.step_trials(views, o, [lrs[g] for g in live])
    for g in range(G):
        torch.testing.assert_close(stacked.detach()[g], solo[g], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "doc", [d for d in OPTIMIZERS if d["name"] in ("sgd", "adam")], ids=lambda d: d["name"]
)
def test_a_coupled_decay_folded_into_the_kernel_is_the_terms_own_pass(doc: dict[str, Any]) -> None:
    """The stacked trainer on the CPU folds coupled weight decay (L2's 2λ₂ and the optimizer's
    own) into the fused kernel, on the tensors in scope only: the same steps as the term's own
    pass (terms.add_scaled) before the kernel. Three trials with their own decay, a weight in
    scope and a bias out of it, a trial that enters late."""
    G, steps = 3, 6
    lrs, _, starts = _trials(doc)
    decay = [2e-2, 0.0, 5e-3]
    o = OptimizerSpec.model_validate(doc)
    rule = UPDATES[o.name]
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(G, 5, 4, generator=gen), torch.randn(G, 5, generator=gen)]

    def run(folded: bool) -> list[torch.Tensor]:
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        states = [rule.init_state(p, o) for p in ps]
        t = torch.zeros(G, dtype=torch.float64)
        ax = terms.TrialAxis(G, {id(p): 0 for p in ps})
        for s in range(steps):
            live = [g for g in range(G) if s >= starts[g]]
            for i, p in enumerate(ps):
                p.grad = _grads(s + 10 * i, tuple(p.shape))
            for g in live:
                t[g] += 1
            with torch.no_grad():
                if not folded:
                    terms.add_scaled([ps[0].grad], [ps[0]], torch.tensor(decay), ax)  # type: ignore[list-item]
                views = [trial_views(ps, states, t, g) for g in live]
                rule.step_trials(
                    views,
                    o,
                    [lrs[g] for g in live],
                    [decay[g] for g in live] if folded else None,
                    [True, False] if folded else None,
                )
        return [p.detach() for p in ps]

    folded, own_pass = run(True), run(False)
    for a, b in zip(folded, own_pass, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # and the decay did something: without it the weights come out elsewhere
    decay[:] = [0.0] * G
    assert not torch.allclose(run(True)[0], folded[0])


def test_adamw_refuses_a_folded_decay() -> None:
    o = OptimizerSpec.model_validate({"name": "adamw", "lr": 0.01})
    p = torch.zeros(1, 2)
    view = trial_views([p], [UPDATES["adamw"].init_state(p, o)], torch.zeros(1, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="decoupled"):
        UPDATES["adamw"].step_trials([view], o, [0.01], [1e-2], None)
