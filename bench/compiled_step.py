"""Would a compiled or an autograd-free step beat the eager one on this machine, and what does
compiling cost? (issue 21: the search's distance to its compute floor is per-step cost.)

One training step of the 784-feature problem's model (MLP 784-128-10, ReLU, dropout 0.15,
cross-entropy, L1 1e-6 + L2 1e-5 on the weights, fused Adam, batch 64 of 4,000 rows), three
ways in one process, each over the same batches after its warm-up, interleaved:
- eager: autograd, as the engine's solo loop and the hand loop run it;
- no autograd: the forward and the gradients written out by hand with the same kernels (what an
  engine free of autograd's bookkeeping could reach); its gradients are checked against
  autograd's on the first batch;
- compiled: torch.compile (inductor, with this machine's C++ compiler) of the forward, loss and
  backward; the seconds of its first call (the compile) are printed beside it.
Prints each way's microseconds a step, its ratio to eager, and the load average before and after
(a figure taken while another run loads the cores is void).

Usage: python -m bench.compiled_step [--steps 310] [--rounds 3] [--skip-compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ROWS, FEATURES, HIDDEN, CLASSES, BATCH = 4000, 784, 128, 10, 64
DROPOUT, L1, L2, LR = 0.15, 1e-6, 1e-5, 1e-3

Step = Callable[[torch.Tensor, torch.Tensor], None]


class Problem:
    """The model, its optimizer and the data; `penalty` is λ₁Σ|w| + λ₂Σw² over the weights."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, CLASSES)
        )
        self.params = list(self.model.parameters())
        self.weights = [self.model[0].weight, self.model[3].weight]
        self.optimizer = torch.optim.Adam(self.params, lr=LR, fused=True)
        self.X = torch.randn(ROWS, FEATURES)
        self.y = torch.randint(0, CLASSES, (ROWS,))

    def penalty(self) -> torch.Tensor:
        return sum((L1 * w.abs().sum() + L2 * (w * w).sum() for w in self.weights), torch.zeros(()))

    def batches(self, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(1)
        out = []
        while len(out) < steps:
            perm = torch.randperm(ROWS, generator=g)
            for s in range(0, ROWS - BATCH + 1, BATCH):
                idx = perm[s : s + BATCH]
                out.append((self.X[idx], self.y[idx]))
        return out[:steps]


def eager(p: Problem) -> Step:
    def loss_backward(xb: torch.Tensor, yb: torch.Tensor) -> None:
        (F.cross_entropy(p.model(xb), yb) + p.penalty()).backward()

    return _with_optimizer(p, loss_backward)


def compiled(p: Problem) -> Step:
    def loss_backward(xb: torch.Tensor, yb: torch.Tensor) -> None:
        (F.cross_entropy(p.model(xb), yb) + p.penalty()).backward()

    return _with_optimizer(p, torch.compile(loss_backward))


def manual_grads(p: Problem, xb: torch.Tensor, yb: torch.Tensor) -> list[torch.Tensor]:
    """The gradients of the loss and penalty, by hand (the kernels autograd's backward calls)."""
    m = p.model
    w1, b1, w2, b2 = m[0].weight, m[0].bias, m[3].weight, m[3].bias
    with torch.no_grad():
        a1 = torch.relu_(torch.addmm(b1, xb, w1.t()))
        keep = 1 - DROPOUT
        noise = torch.empty_like(a1).bernoulli_(keep).div_(keep)  # as F.dropout draws and scales
        d1 = a1 * noise
        logp = torch.log_softmax(torch.addmm(b2, d1, w2.t()), 1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(logp, yb, None, 1, -100)  # 1: the mean
        g = torch.ops.aten.nll_loss_backward(torch.ones_like(loss), logp, yb, None, 1, -100, total_weight)
        g = torch._log_softmax_backward_data(g, logp, 1, logp.dtype)
        gw2, gb2 = torch.mm(d1.t(), g).t(), g.sum(0)
        gh = torch.ops.aten.threshold_backward(torch.mm(g, w2).mul_(noise), a1, 0)
        gw1, gb1 = torch.mm(xb.t(), gh).t(), gh.sum(0)
        for gw, w in ((gw1, w1), (gw2, w2)):
            gw.add_(torch.sign(w), alpha=L1).add_(w, alpha=2 * L2)
    return [gw1, gb1, gw2, gb2]


def no_autograd(p: Problem) -> Step:
    def grads(xb: torch.Tensor, yb: torch.Tensor) -> None:
        for param, g in zip(p.params, manual_grads(p, xb, yb), strict=True):
            param.grad = g

    return _with_optimizer(p, grads)


def _with_optimizer(p: Problem, grads: Callable[[torch.Tensor, torch.Tensor], None]) -> Step:
    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        for param in p.params:
            param.grad = None
        grads(xb, yb)
        p.optimizer.step()

    return step


def check_grads(p: Problem, xb: torch.Tensor, yb: torch.Tensor) -> float:
    """The largest difference between the hand-written gradients and autograd's, under the same
    dropout draws (both from the same generator state)."""
    state = torch.get_rng_state()
    for param in p.params:
        param.grad = None
    (F.cross_entropy(p.model(xb), yb) + p.penalty()).backward()
    auto = [param.grad.clone() for param in p.params if param.grad is not None]
    torch.set_rng_state(state)
    by_hand = manual_grads(p, xb, yb)
    for param in p.params:
        param.grad = None
    return max(float((a - b).abs().max()) for a, b in zip(auto, by_hand, strict=True))


def run(steps: int, rounds: int, with_compile: bool) -> dict[str, Any]:
    if not with_compile:
        return _run(steps, rounds, with_compile)
    # a cold compile, as a worker's first sweep of a model would pay it: inductor's caches
    # (kept under /tmp between runs) in a folder of this run's, removed after it
    with tempfile.TemporaryDirectory(prefix="regtrain-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            return _run(steps, rounds, with_compile)
        finally:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _run(steps: int, rounds: int, with_compile: bool) -> dict[str, Any]:
    p = Problem()
    batches = p.batches(steps)
    ways: dict[str, Step] = {"eager": eager(p), "no autograd": no_autograd(p)}
    first_call: dict[str, float] = {}
    if with_compile:
        ways["compiled"] = compiled(p)
    for name, step in ways.items():
        t = time.perf_counter()
        step(*batches[0])
        first_call[name] = time.perf_counter() - t
        for xb, yb in batches[1:20]:
            step(xb, yb)
    times: dict[str, list[float]] = {name: [] for name in ways}
    load_before = os.getloadavg()
    for _ in range(rounds):
        for name, step in ways.items():
            t = time.perf_counter()
            for xb, yb in batches:
                step(xb, yb)
            times[name].append((time.perf_counter() - t) / len(batches) * 1e6)
    us = {name: statistics.median(v) for name, v in times.items()}
    return {
        "threads": torch.get_num_threads(),
        "step_us": us,
        "ratio_to_eager": {name: us["eager"] / v for name, v in us.items()},
        "first_call_s": first_call,
        "grad_max_diff": check_grads(p, *batches[0]),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=310)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-compile", action="store_true")
    args = ap.parse_args(argv)
    out = run(args.steps, args.rounds, not args.skip_compile)
    print(f"{out['threads']} torch threads; load {out['load_before'][0]:.2f} → {out['load_after'][0]:.2f}")
    print(f"hand-written gradients against autograd's: max |diff| {out['grad_max_diff']:.2e}")
    for name, us in out["step_us"].items():
        print(
            f"  {name:12} {us:8.0f} us a step   eager ÷ this {out['ratio_to_eager'][name]:5.2f}   "
            f"first call {out['first_call_s'][name]:6.2f} s"
        )
    return out


if __name__ == "__main__":
    main()
