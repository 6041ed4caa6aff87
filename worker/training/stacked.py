"""Many trials of one MLP trained at once, as one stacked model on one device.

Trials that share the architecture, the data, the batch size, the epochs and the optimizer kind,
and differ only in l1, l2, weight_decay, dropout, label_smoothing, lr or seed, are the same
computation with different numbers. Stacked, each layer of G trials is one batched matmul (the
first layer one wide GEMM when the trials share their batches) and every per-trial number is a
(G,) tensor broadcast along the trial axis, so a step costs a few kernels whatever G is, and on
CUDA the whole step is captured once as a graph and replayed. The penalties and the optimizer
updates are the registry's (worker.training.terms, worker.training.updates), the same the solo
loop reads.

A position of the stack is a slot: the trial it holds keeps its own initialization (built under
its own seed, exactly as when trained alone), its own shuffles, optimizer state (moments and
step count), learning-rate schedule position, early stopping and best weights, and its own
epoch count. When a trial ends (its epochs done, stopped early, pruned) fit's `refill` may hand
a new trial for its slot: it is written into the same tensors in place (a captured graph stays
valid) and starts at its own epoch 1 (continuous batching). Slots left empty are dropped from
the stack (repacked) once a quarter of it is empty, so that they stop costing compute.

Differences from training alone: dropout masks come from one random stream for the whole group,
so a trial with dropout matches its solo run in distribution, not bit for bit; a cosine schedule
uses the closed form. The epoch loop is worker.training.stacked_fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from service.contract.architecture import plan_model
from service.contract.spec import JobSpec, OptimizerSpec
from service.contract.trial_axis import PER_TRIAL, per_trial_values
from worker.training import terms, updates
from worker.training.data import Prepared
from worker.training.loop import resolve_device, use_cuda_graph
from worker.training.models import ACTIVATIONS, build
from worker.training.step import WARMUP_STEPS
from worker.training.updates import UPDATES, scheduled_lr

log = logging.getLogger(__name__)


@dataclass
class TrialResult:
    best_epoch: int | None
    epochs_completed: int
    stopped_early: bool
    best_metrics: dict[str, Any]  # the metrics row of the best epoch
    last_metrics: dict[str, Any]  # the metrics row of the last epoch trained
    test_metrics: dict[str, float]
    pruned: bool = False  # stopped by fit's after_epoch (a sweep's pruner)


class _Layer:
    """One stacked Linear: weight (G, out, in), each trial's nn.Linear weight, contiguous. The
    trial axis is 0 for every parameter, so that a trial's slice is one contiguous block: the
    per-trial reductions (penalties, norms) and updates read memory in order. A shared first-layer
    input is one wide GEMM against the weight seen as (G·out, in)."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], shared_input: bool) -> None:
        self.shared_input = shared_input
        self.weight = nn.Parameter(torch.stack(weights))  # (G, out, in)
        self.bias = nn.Parameter(torch.stack(biases).unsqueeze(1))  # (G, 1, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            out = _StackedLinear.apply(x, self.weight, self.bias, self.shared_input)
            assert isinstance(out, torch.Tensor)
            return out
        return stacked_linear(self.weight, self.bias, x, self.shared_input)


class _StackedLinear(torch.autograd.Function):
    """stacked_linear with its gradients computed in the layout the parameters keep: the weight's
    gradient as grad_outᵀ @ x straight into (G, out, in) (autograd's own backward of the
    transposed weight makes x ᵀ @ grad_out and then copies it transposed: on the CPU the
    784-128 layer's backward took 1.5 ms where this takes 0.7), as nn.Linear's backward does for
    one trial."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, shared_input: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.shared = shared_input and x.dim() == 2
        return stacked_linear(weight, bias, x, shared_input)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g, o, i = weight.shape
        gx = gw = gb = None
        if ctx.needs_input_grad[1]:
            if ctx.shared:  # every trial saw the rows x (B, in): one wide GEMM (G·out, B) @ (B, in)
                gw = (grad.transpose(0, 1).reshape(x.shape[0], g * o).t() @ x).view(g, o, i)
            else:
                gw = torch.bmm(grad.transpose(1, 2), x if x.dim() == 3 else x.expand(g, -1, -1))
        if ctx.needs_input_grad[2]:
            gb = grad.sum(1, keepdim=True)
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(grad, weight)
            gx = gx if x.dim() == 3 else gx.sum(0)
        return gx, gw, gb, None


def stacked_linear(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, shared_input: bool
) -> torch.Tensor:
    """x through G Linears at once: weight (G, out, in), bias (G, 1, out); x (B, in) shared by
    every trial (one wide GEMM on a GPU, G batched ones on the CPU) or (G, B, in). (G, B, out)."""
    g, o, i = weight.shape
    if shared_input and x.dim() == 2 and x.device.type == "cuda":  # (B, in) @ (in, G·out): one wide GEMM
        h = (x @ weight.view(g * o, i).t()).view(x.shape[0], g, o).transpose(0, 1)
        return h + bias
    # On the CPU, G products of the shared rows (a stride-0 batch, no copy) with the bias added in
    # the GEMM beat the wide one: 64×784 rows through 8 stacked 784-128 layers ran at 169-178
    # GFLOPS batched against 131-138 wide on a 2-core VM (2 threads), a grid's whole step 12%
    # faster; and the output comes out (G, B, out) contiguous for the ops after it.
    xs = x if x.dim() == 3 else x.expand(g, -1, -1)
    return torch.baddbmm(bias, xs, weight.transpose(1, 2))


Weights = list[tuple[torch.Tensor, torch.Tensor]]  # (weight, bias) of each layer, for some trials


def initial_linears(spec: JobSpec, data: Prepared, keep_rng: bool = False) -> list[nn.Linear]:
    """The trial's Linear layers exactly as a solo run initializes them (under its seed, on the
    CPU). keep_rng: leave the global random streams as they were (a slot refilled mid-training:
    the CUDA generator a captured graph's dropout reads is not reseeded)."""
    if not keep_rng:
        torch.manual_seed(spec.training.seed)
        return [m for m in build(plan_model(spec, data.shape.flat())) if isinstance(m, nn.Linear)]
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(spec.training.seed)
        return [m for m in build(plan_model(spec, data.shape.flat())) if isinstance(m, nn.Linear)]


def _within(p: torch.Tensor, tensors: Sequence[torch.Tensor]) -> bool:
    return any(p is q for q in tensors)  # by identity: == on tensors compares values


# the per-trial numbers of a slot, read from its spec: (G,) tensors along the trial axis
HYPER = tuple(p.name for p in PER_TRIAL)


class StackedTrainer:
    """Trains G compatible trials together on one Prepared dataset (`fit`: stacked_fit.fit).
    `per_slot_batches`: every slot gathers its own batches from the start (a group that will be
    refilled: its slots' shuffles drift apart, and a captured graph is kept)."""

    # the per-trial numbers (HYPER: service.contract.trial_axis), one per position of the stack
    l1: torch.Tensor
    l2: torch.Tensor
    smooth: torch.Tensor
    base_lr: torch.Tensor
    wd: torch.Tensor
    dropout: torch.Tensor

    def __init__(self, trials: list[JobSpec], data: Prepared, *, per_slot_batches: bool = False) -> None:
        self.trials = list(trials)
        self.data = data
        base = trials[0]
        self.base = base
        self.G = len(trials)
        self.device = resolve_device(base.training.device)
        self.task = data.task
        self._data_tensors(data)
        self.seeds = [t.training.seed for t in trials]
        self.use_graph = use_cuda_graph(self.device)
        # eagerly the batches can change form between steps at no cost; a captured graph
        # keeps the form it was captured with
        self.per_slot_batches = per_slot_batches and self.use_graph
        shared = len(set(self.seeds)) == 1 and not self.per_slot_batches
        self._build_layers(trials, data, shared)
        self.rule = UPDATES[base.optimizer.name]
        self.proximal = base.regularization.l1_mode == "proximal"
        self.max_norm = base.regularization.max_norm
        self._hyper_tensors(trials)
        self.state = {i: self.rule.init_state(p, base.optimizer) for i, p in enumerate(self.params)}
        self.slots = list(range(self.G))  # the trial (index into self.trials) at each position
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_mode: str | None = None
        self.bs = min(base.training.batch_size, len(self.X))
        self.warm = 0
        self.static: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.use_graph:
            self.side = torch.cuda.Stream(self.device)

    # --- setup ----------------------------------------------------------------------------

    def _data_tensors(self, data: Prepared) -> None:
        dev, width = self.device, data.shape.n_features

        def flat(a: Any) -> torch.Tensor:
            return torch.as_tensor(a, device=dev).reshape(len(a), width)

        self.X, self.y = flat(data.X_train), torch.as_tensor(data.y_train, device=dev)
        self.Xv, self.yv = flat(data.X_val), torch.as_tensor(data.y_val, device=dev)
        self.Xt, self.yt = flat(data.X_test), torch.as_tensor(data.y_test, device=dev)

    def _build_layers(self, trials: list[JobSpec], data: Prepared, shared: bool) -> None:
        per_trial = [initial_linears(t, data) for t in trials]
        shape = data.shape.flat()
        self.acts = [
            ACTIVATIONS[str(layer.args["fn"])]()
            for layer in plan_model(self.base, shape)
            if layer.kind == "act"
        ]
        self.layers = [
            _Layer(
                [lin[i].weight.detach() for lin in per_trial],
                [lin[i].bias.detach() for lin in per_trial],
                shared_input=(i == 0 and shared),
            )
            for i in range(len(per_trial[0]))
        ]
        for layer in self.layers:
            layer.weight.data = layer.weight.data.to(self.device)
            layer.bias.data = layer.bias.data.to(self.device)
        self._index_params()

    def _index_params(self) -> None:
        """The parameter list (every one's trial axis is 0), the tensors the penalties cover,
        and a scratch buffer per parameter for the step's intermediates."""
        self.params = [p for layer in self.layers for p in (layer.weight, layer.bias)]
        self.ax = terms.TrialAxis(self.G, {id(p): 0 for p in self.params})
        scope_all = self.base.regularization.apply_to == "all"
        self.in_scope = [
            p for layer in self.layers for p in ((layer.weight, layer.bias) if scope_all else (layer.weight,))
        ]
        self.scratch = [torch.empty_like(p) for p in self.params]
        self._views: list[updates.TrialViews] | None = None
        self._decayed = [_within(p, self.in_scope) for p in self.params]  # in the decay's scope
        self.scope_scratch = [buf for buf, d in zip(self.scratch, self._decayed, strict=True) if d]

    def _hyper_tensors(self, trials: list[JobSpec]) -> None:
        dev = self.device
        values = [per_trial_values(t) for t in trials]
        for name in HYPER:
            setattr(self, name, torch.tensor([v[name] for v in values], dtype=torch.float32, device=dev))
        self.lr = self.base_lr.clone()
        self.keep = (1 - self.dropout).view(self.G, 1, 1)
        self.active = torch.ones(self.G, device=dev)  # 0 once a slot's trial ended
        # the optimizer's step count per slot lives on the device (double, as torch computes
        # bias corrections), so that a captured step can count too, and a refilled slot afresh
        self.t = torch.zeros(self.G, device=dev, dtype=torch.float64)
        self.loss_sum = torch.zeros(self.G, device=dev, dtype=torch.float64)
        self.penalty_sum = torch.zeros(self.G, device=dev, dtype=torch.float64)
        self._terms_in_use(values)

    def _terms_in_use(self, values: list[dict[str, float]]) -> None:
        """Which terms the step computes (sticky: a refill may add one, never remove one; a
        captured graph is captured again when one is added)."""
        before = tuple(getattr(self, f"any_{k}", False) for k in ("l1", "l2", "wd", "smoothing", "dropout"))
        self.any_l1 = before[0] or any(v["l1"] > 0 for v in values)
        self.any_l2 = before[1] or any(v["l2"] > 0 for v in values)
        self.any_wd = before[2] or any(v["wd"] > 0 for v in values)
        self.any_smoothing = before[3] or any(v["smooth"] > 0 for v in values)
        self.has_dropout = before[4] or any(v["dropout"] > 0 for v in values)
        after = (self.any_l1, self.any_l2, self.any_wd, self.any_smoothing, self.has_dropout)
        if after != before and getattr(self, "graph", None) is not None:
            self.graph, self.warm = None, 0

    # --- a slot's trial -------------------------------------------------------------------

    @torch.no_grad()
    def load_slot(self, at: int, spec: JobSpec) -> int:
        """Put a new trial in position `at`, in place: its seed's initial weights, its
        hyper-parameters, fresh optimizer state and step count. Its index in self.trials."""
        self.trials.append(spec)
        g = len(self.trials) - 1
        self.slots[at] = g
        self.seeds[at] = spec.training.seed
        for layer, lin in zip(self.layers, initial_linears(spec, self.data, keep_rng=True), strict=True):
            layer.weight[at].copy_(lin.weight.detach())
            layer.bias[at].copy_(lin.bias.detach().unsqueeze(0))
        values = per_trial_values(spec)
        for name in HYPER:
            getattr(self, name)[at] = values[name]
        self.keep[at] = 1 - values["dropout"]
        self.active[at] = 1.0
        self.t[at] = 0.0
        for i, p in enumerate(self.params):
            for buf in self.state[i].values():
                buf.select(self.ax.axes[id(p)], at).zero_()
        self._terms_in_use([values])
        return g

    def set_lr(self, epochs_of: list[int]) -> None:
        """Each slot's learning rate for its own next epoch (1-based `epochs_of[at]`)."""
        o, epochs = self.base.optimizer, self.base.training.epochs
        lrs = [
            scheduled_lr(o, epochs, e, float(b))
            for e, b in zip(epochs_of, self.base_lr.tolist(), strict=True)
        ]
        self.lr.copy_(torch.tensor(lrs, dtype=torch.float32))

    # --- model ----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, train: bool, weights: Weights | None = None) -> torch.Tensor:
        """(G, B, out); `weights` ((weight, bias) per layer, for some G' trials): evaluate those
        in place of the stack's own (no dropout then)."""
        if weights is not None:
            h = x
            for i, (w, b) in enumerate(weights):
                h = stacked_linear(w, b, h, self.layers[i].shared_input)
                h = self.acts[i](h) if i < len(weights) - 1 else h
            return h
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.acts[i](h)
                if train and self.has_dropout:
                    h = h * (torch.rand_like(h) < self.keep) / self.keep  # inverted dropout, p per trial
        return h  # (G, B, out)

    def losses(self, out: torch.Tensor, y: torch.Tensor, smoothing: bool) -> torch.Tensor:
        """Per-trial mean loss (G,), label smoothing per trial as CrossEntropyLoss defines it."""
        if self.task == "regression":
            return (out.squeeze(-1) - y).square().mean(-1)
        logp = torch.log_softmax(out, -1)
        yy = y.expand(out.shape[0], -1) if y.dim() == 1 else y
        nll = -logp.gather(-1, yy.unsqueeze(-1)).squeeze(-1).mean(-1)
        if not smoothing or not self.any_smoothing:
            return nll
        return (1 - self.smooth) * nll + self.smooth * (-logp.mean(-1)).mean(-1)

    # --- one step -------------------------------------------------------------------------

    def penalty(self) -> torch.Tensor:
        """λ₁Σ|w| + λ₂Σw² per trial (G,)."""
        l1 = self.l1 if self.any_l1 else 0.0
        l2 = self.l2 if self.any_l2 else 0.0
        return terms.penalty_value(self.in_scope, l1, l2, self.ax, self.device, self.scope_scratch)

    def _body(self, xb: torch.Tensor, yb: torch.Tensor, weight: float) -> None:
        """One optimization step of every trial; losses and penalties accumulate on the device."""
        loss = self.losses(self.forward(xb, True), yb, True)
        loss.sum().backward()  # trials are independent: each gets its own gradient
        with torch.no_grad():
            self.penalty_sum.add_(self.penalty().double(), alpha=weight)
            self.loss_sum.add_(loss.detach().double(), alpha=weight)
        self._update()

    def eager(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        for p in self.params:
            p.grad = None
        self._body(xb, yb, float(xb.shape[-2]))

    def step(self, idx: torch.Tensor) -> None:
        """Train every trial on its rows idx ((B,) shared by all trials, or (G, B))."""
        if not self.use_graph:
            self.eager(*self._gather(idx))
            return
        mode = "shared" if idx.dim() == 1 else "per-slot"
        if self.graph is not None and self.graph_mode != mode:
            self.graph, self.warm = None, 0
        if idx.shape[-1] != self.bs or (self.graph is None and self.warm < WARMUP_STEPS):
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.eager(*self._gather(idx))
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
            return
        if self.graph is None and not self._capture(idx):
            self.eager(*self._gather(idx))
            return
        assert self.graph is not None
        sx, sy = self.static[mode]
        torch.index_select(self.X, 0, idx.reshape(-1), out=sx.view(-1, self.X.shape[1]))
        torch.index_select(self.y, 0, idx.reshape(-1), out=sy.view(-1))
        self.graph.replay()

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows idx ((B,) or (G, B)) of the train split: index_select on the flat indices
        (on the CPU about 5x cheaper than advanced indexing)."""
        flat = idx.reshape(-1)
        xb = torch.index_select(self.X, 0, flat).view(*idx.shape, self.X.shape[1])
        return xb, torch.index_select(self.y, 0, flat).view(idx.shape)

    def _capture(self, idx: torch.Tensor) -> bool:
        mode = "shared" if idx.dim() == 1 else "per-slot"
        if mode not in self.static or self.static[mode][0].shape[: idx.dim()] != idx.shape:
            self.static[mode] = (
                torch.zeros((*idx.shape, self.X.shape[1]), device=self.device),
                torch.zeros(idx.shape, device=self.device, dtype=self.y.dtype),
            )
        sx, sy = self.static[mode]
        torch.cuda.synchronize(self.device)
        for p in self.params:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.side):
                self._body(sx, sy, float(self.bs))
        except Exception as e:  # stay eager
            log.warning("CUDA graph capture of the stacked step failed (%s); training eagerly", e)
            self.use_graph = False
            for p in self.params:
                p.grad = None
            return False
        self.graph, self.graph_mode = graph, mode
        return True

    @torch.no_grad()
    def _update(self) -> None:
        """The registry's terms and update over the trial axis; a slot whose trial ended has
        lr 0 (its weights stay as they are until it is refilled or dropped)."""
        self.t.add_(1)
        lr_active = self.lr * self.active
        o, ax = self.base.optimizer, self.ax
        scope = self.in_scope
        grads = [p.grad for p in scope]
        coupled = self.any_wd and not self.rule.decoupled
        kernel = self._trial_kernel()
        decay = 2 * self.l2 + (self.wd if coupled else 0) if self.any_l2 or coupled else None
        # L2's gradient is coupled whatever the optimizer: it rides in the kernel's decay unless
        # the kernel's decay is decoupled (AdamW) or there is no kernel
        if decay is not None and (not kernel or self.rule.decoupled):
            terms.add_scaled(grads, scope, decay, ax)  # type: ignore[arg-type]
            decay = None
        if self.any_l1 and not self.proximal:
            terms.add_l1_subgradient(grads, scope, self.l1, ax, self.scope_scratch)  # type: ignore[arg-type]
        if self.rule.decoupled and self.any_wd:
            terms.decoupled_decay(scope, lr_active * self.wd, ax)
        if kernel:
            self._step_trials(o, lr_active, decay)
        else:
            states = [self.state[i] for i in range(len(self.params))]
            self.rule.update_all(self.params, states, o, lr_active, self.t, ax, self.scratch)
        if self.proximal and self.any_l1:
            terms.proximal_l1(scope, lr_active * self.l1, ax)
        if self.max_norm:
            for layer in self.layers:  # each unit's incoming weights: the `in` axis
                terms.cap_unit_norms(layer.weight, self.max_norm, incoming=[2])

    def _trial_kernel(self) -> bool:
        """Whether the step goes trial by trial through the registry's fused kernel: on the
        CPU, where the entry has one (one pass over the parameters and the state, where the
        trial-axis update makes about eight; on CUDA the captured graph makes those passes free
        of launches)."""
        return (
            self.device.type == "cpu"
            and self.rule.trial_kernel
            and all(p.grad is not None and p.grad.is_contiguous() for p in self.params)
        )

    def _step_trials(self, o: OptimizerSpec, lr_active: torch.Tensor, decay: torch.Tensor | None) -> None:
        """Each live trial's update through the fused kernel, `decay` (coupled weight decay,
        L2's 2λ₂ included, per trial) folded into it on the tensors in scope: a pass over every
        weight fewer. A trial whose slot is empty is not stepped at all."""
        if self._views is None:  # each position's blocks: views stay valid until a repack
            states = [self.state[i] for i in range(len(self.params))]
            self._views = [updates.trial_views(self.params, states, self.t, at) for at in range(self.G)]
        lrs = lr_active.tolist()
        live = [at for at, a in enumerate(self.active.tolist()) if a]
        # the gradients are new tensors each step
        views = [replace(self._views[at], grads=[p.grad[at] for p in self.params]) for at in live]  # type: ignore[index]
        decays = decay.tolist() if decay is not None else None
        self.rule.step_trials(
            views,
            o,
            [lrs[at] for at in live],
            [decays[at] for at in live] if decays is not None else None,
            self._decayed,
        )

    # --- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(
        self, X: torch.Tensor, y: torch.Tensor, weights: Weights | None = None
    ) -> dict[str, torch.Tensor]:
        """Each trial's metrics on (X, y), (G,) tensors (or (G',) for `weights`, as forward's)."""
        st = self.data.standardization
        G = self.G if weights is None else weights[0][0].shape[0]
        loss = torch.zeros(G, device=self.device, dtype=torch.float64)
        hit = torch.zeros(G, device=self.device, dtype=torch.float64)
        abs_err = torch.zeros(G, device=self.device, dtype=torch.float64)
        for i in range(0, len(X), 4096):
            xb, yb = X[i : i + 4096], y[i : i + 4096]
            out = self.forward(xb, False, weights)
            loss += self.losses(out, yb, False).double() * len(xb)
            if self.task == "classification":
                hit += (out.argmax(-1) == yb).double().sum(-1)
            else:
                abs_err += (out.squeeze(-1) - yb).abs().double().sum(-1)
        n = max(len(X), 1)
        if self.task == "classification":
            return {"loss": loss / n, "accuracy": hit / n}
        mse = loss / n * st.target_std**2
        var = float(y.double().var(unbiased=False)) * st.target_std**2 if len(y) else 0.0
        r2 = 1 - mse / var if var > 0 else torch.zeros_like(mse)
        return {"loss": loss / n, "mse": mse, "mae": abs_err / n * st.target_std, "r2": r2}

    def weight_stats(self) -> tuple[list[float], list[float]]:
        """Each slot's (L2 norm, fraction of exact zeros) of the tensors in scope."""
        norms = torch.zeros(self.G, device=self.device)
        zeros = torch.zeros(self.G, device=self.device)
        count = 0
        for p in self.in_scope:
            norms += self.ax.total(p.detach().square(), p)
            zeros += self.ax.total((p.detach() == 0).float(), p)
            count += p.numel() // self.G
        return norms.sqrt().tolist(), (zeros / max(count, 1)).tolist()

    @torch.no_grad()
    def test_metrics(
        self, best_params: list[torch.Tensor], keep_restored: bool = False, positions: list[int] | None = None
    ) -> dict[int, dict[str, float]]:
        """The test metrics (by trial index) of the trials at `positions` of the stack (None:
        every one) with the weights each keeps (its best ones where early stopping restores
        them). Only those trials are evaluated, from copies of their weights: the stack is left
        as it was, unless keep_restored (every position: the kept weights are left in the stack)."""
        at = list(range(len(self.slots))) if positions is None else positions
        restore = torch.tensor(
            [self._restores(self.trials[self.slots[a]]) for a in at], device=self.device, dtype=torch.bool
        )
        if keep_restored:
            assert positions is None, "the kept weights are left in the stack for every position"
            for bp, p in zip(best_params, self.params, strict=True):
                p.copy_(torch.where(self.ax.view(restore.float(), p).bool(), bp, p))
            weights = None
        else:
            idx = torch.tensor(at, device=self.device)
            kept = [
                torch.where(
                    restore.view(-1, *[1] * (p.dim() - 1)), bp.index_select(0, idx), p.index_select(0, idx)
                )
                for bp, p in zip(best_params, self.params, strict=True)
            ]
            weights = list(zip(kept[0::2], kept[1::2], strict=True))
        test = (
            {k: v.tolist() for k, v in self.evaluate(self.Xt, self.yt, weights).items()}
            if len(self.Xt)
            else {}
        )
        return {self.slots[a]: {f"test_{k}": v[j] for k, v in test.items()} for j, a in enumerate(at)}

    @staticmethod
    def _restores(spec: JobSpec) -> bool:
        es = spec.training.early_stopping
        return bool(es and es.restore_best)

    @torch.no_grad()
    def keep_best(self, best_params: list[torch.Tensor], at: int) -> None:
        """Copy position `at`'s weights into best_params (its best epoch so far)."""
        for bp, p in zip(best_params, self.params, strict=True):
            axis = self.ax.axes[id(p)]
            bp.select(axis, at).copy_(p.detach().select(axis, at))

    @torch.no_grad()
    def repack(self, live: list[int], best_params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Keep only the stack positions `live`: the weights, the optimizer state, the best
        weights and every per-trial number, so that empty slots no longer cost compute.
        A CUDA graph is captured again for the smaller stack. The best weights, repacked."""
        idx = torch.tensor(live, device=self.device)
        params, best = [], []
        for i, (p, bp) in enumerate(zip(self.params, best_params, strict=True)):
            axis = self.ax.axes[id(p)]
            params.append(nn.Parameter(p.detach().index_select(axis, idx).contiguous()))
            best.append(bp.index_select(axis, idx).contiguous())
            for k, v in self.state[i].items():
                self.state[i][k] = v.index_select(axis, idx).contiguous()
        it = iter(params)
        for layer in self.layers:
            layer.weight, layer.bias = next(it), next(it)
        for name in (*HYPER, "lr", "active", "t", "loss_sum", "penalty_sum"):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self.G = len(live)
        self._index_params()
        self.keep = (1 - self.dropout).view(self.G, 1, 1)
        self.seeds = [self.seeds[at] for at in live]
        self.slots = [self.slots[at] for at in live]
        self.graph, self.warm = None, 0
        return best

    def fit(
        self,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        after_epoch: Callable[[int], Iterable[int]] | None = None,
        refill: Callable[[], JobSpec | None] | None = None,
        on_result: Callable[[int, TrialResult], None] | None = None,
    ) -> list[TrialResult]:
        """Train every trial (worker.training.stacked_fit.fit says how); one result per trial
        of self.trials, refilled ones included."""
        from worker.training.stacked_fit import fit

        return fit(self, on_epoch, should_stop, after_epoch, refill, on_result)
