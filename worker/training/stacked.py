"""Many trials of one MLP trained at once, as one stacked model on one device.

Trials that share the architecture, the data, the batch size, the epochs and the optimizer kind,
and differ only in l1, l2, weight_decay, dropout, label_smoothing, lr or seed, are the same
computation with different numbers. Stacked, each layer of G trials is one batched matmul (the
first layer one wide GEMM when the trials share their batches) and every per-trial number is a
tensor broadcast along the trial axis, so a step costs a few kernels whatever G is, and on CUDA
the whole step is captured once as a graph and replayed.

Each trial keeps its own initialization (built under its own seed, exactly as when trained
alone), its own shuffles (trials with different seeds gather their own batches), its own
optimizer state, early stopping and best weights. Differences from training alone: dropout
masks come from one random stream for the whole group, so a trial with dropout matches its solo
run in distribution, not bit for bit; a cosine schedule uses the closed form.

One module of about 600 lines, because its parts (the stacked parameters, the per-trial
hyper-parameter tensors, the captured step, the repacking of a shrinking group) are one
object's state; `fit` is its epoch loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from service.contract.architecture import plan_model
from service.contract.spec import CosineScheduler, JobSpec, MLPSpec, StepScheduler
from worker.training.data import Prepared
from worker.training.loop import CHECK_EVERY, GAP_SAMPLES, resolve_device, use_cuda_graph
from worker.training.models import ACTIVATIONS, build
from worker.training.regularization import EarlyStopping
from worker.training.step import WARMUP_STEPS


@dataclass
class TrialResult:
    best_epoch: int | None
    epochs_completed: int
    stopped_early: bool
    best_metrics: dict[str, Any]  # the metrics row of the best epoch
    last_metrics: dict[str, Any]  # the metrics row of the last epoch trained
    test_metrics: dict[str, float]
    pruned: bool = False  # stopped by fit's after_epoch (a sweep's pruner)


log = logging.getLogger(__name__)


class _Layer:
    """One stacked Linear: weight (in, G, out) for a shared first-layer input, else (G, in, out)."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], shared_input: bool) -> None:
        w = torch.stack([wt.t() for wt in weights])  # (G, in, out)
        self.shared_input = shared_input
        self.weight = nn.Parameter(w.transpose(0, 1).contiguous() if shared_input else w)
        self.bias = nn.Parameter(torch.stack(biases).unsqueeze(1))  # (G, 1, out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input and x.dim() == 2:  # (B, in) @ (in, G*out): one wide GEMM
            i, g, o = self.weight.shape
            h = (x @ self.weight.reshape(i, g * o)).view(x.shape[0], g, o).transpose(0, 1)
            return h + self.bias
        w = self.weight.transpose(0, 1) if self.shared_input else self.weight
        return torch.baddbmm(self.bias, x if x.dim() == 3 else x.expand(w.shape[0], -1, -1), w)


def _hp(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


class StackedTrainer:
    """Trains G compatible trials together on one Prepared dataset."""

    def __init__(self, trials: list[JobSpec], data: Prepared) -> None:
        self.trials = trials
        self.data = data
        base = trials[0]
        self.G = len(trials)
        self.device = resolve_device(base.training.device)
        self.task = data.task
        dev = self.device
        width = data.shape.n_features

        def flat(a: Any) -> torch.Tensor:
            return torch.as_tensor(a, device=dev).reshape(len(a), width)

        self.X, self.y = flat(data.X_train), torch.as_tensor(data.y_train, device=dev)
        self.Xv, self.yv = flat(data.X_val), torch.as_tensor(data.y_val, device=dev)
        self.Xt, self.yt = flat(data.X_test), torch.as_tensor(data.y_test, device=dev)
        self.seeds = [t.training.seed for t in trials]
        self.shared_batches = len(set(self.seeds)) == 1

        # Each trial's initial weights exactly as a solo run draws them.
        shape = data.shape.flat()
        per_trial: list[list[nn.Linear]] = []
        for t in trials:
            torch.manual_seed(t.training.seed)
            plan = plan_model(t, shape)
            model = build(plan)
            per_trial.append([m for m in model if isinstance(m, nn.Linear)])
        self.acts = [
            ACTIVATIONS[str(layer.args["fn"])]() for layer in plan_model(base, shape) if layer.kind == "act"
        ]
        n_layers = len(per_trial[0])
        self.layers = [
            _Layer(
                [per_trial[g][i].weight.detach() for g in range(self.G)],
                [per_trial[g][i].bias.detach() for g in range(self.G)],
                shared_input=(i == 0 and self.shared_batches),
            )
            for i in range(n_layers)
        ]
        for layer in self.layers:
            layer.weight.data = layer.weight.data.to(dev)
            layer.bias.data = layer.bias.data.to(dev)
        self.params = [p for layer in self.layers for p in (layer.weight, layer.bias)]
        self.axis = {id(layer.weight): 1 if layer.shared_input else 0 for layer in self.layers}
        self.axis.update({id(layer.bias): 0 for layer in self.layers})
        scope_all = base.regularization.apply_to == "all"
        self.in_scope = [
            p for layer in self.layers for p in ((layer.weight, layer.bias) if scope_all else (layer.weight,))
        ]

        r = [t.regularization for t in trials]
        o = [t.optimizer for t in trials]
        self.opt_name = base.optimizer.name
        self.l1 = _hp([x.l1 for x in r], dev)
        self.l2 = _hp([x.l2 for x in r], dev)
        self.smooth = _hp([x.label_smoothing for x in r], dev)
        self.base_lr = _hp([x.lr for x in o], dev)
        self.lr = self.base_lr.clone()
        self.wd = _hp([x.weight_decay for x in o], dev)
        self.dropout = _hp([t.model.dropout if isinstance(t.model, MLPSpec) else 0.0 for t in trials], dev)
        self.keep = (1 - self.dropout).view(self.G, 1, 1)
        self.has_dropout = bool((self.dropout > 0).any())
        self.proximal = base.regularization.l1_mode == "proximal"
        self.any_l1 = bool((self.l1 > 0).any())
        self.any_l2 = bool((self.l2 > 0).any())
        self.any_wd = bool((self.wd > 0).any())
        self.any_smoothing = bool((self.smooth > 0).any())
        self.max_norm = base.regularization.max_norm
        self.active = torch.ones(self.G, device=dev)  # 0 once a trial stopped early
        # Which trial each position of the stack holds: pruned and stopped trials are dropped
        # from the stack (repacked) so that they stop costing compute.
        self.slots = list(range(self.G))
        self.dropped_tests: dict[int, dict[str, float]] = {}
        self.state: dict[int, dict[str, torch.Tensor]] = {}
        # the optimizer's step count lives on the device (double, as torch computes bias
        # corrections), so that a captured step can count too
        self.t = torch.zeros((), device=dev, dtype=torch.float64)
        self.loss_sum = torch.zeros(self.G, device=dev, dtype=torch.float64)
        self.penalty_sum = torch.zeros(self.G, device=dev, dtype=torch.float64)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.use_graph = use_cuda_graph(dev) and self.shared_batches
        self.bs = min(base.training.batch_size, len(self.X))
        self.warm = 0
        if self.use_graph:
            self.sx = torch.zeros((self.bs, width), device=dev)
            self.sy = torch.zeros(self.bs, device=dev, dtype=self.y.dtype)
            self.side = torch.cuda.Stream(dev)

    # --- shapes ---------------------------------------------------------------------------

    def _b(self, v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """v (G,) shaped to broadcast along p's trial axis."""
        shape = [1] * p.dim()
        shape[self.axis[id(p)]] = self.G
        return v.view(shape)

    def _per_trial_sum(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Sum t (shaped like p) over everything but the trial axis: (G,)."""
        axis = self.axis[id(p)]
        return t.sum([d for d in range(t.dim()) if d != axis])

    # --- model ----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
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
        yy = y.expand(self.G, -1) if y.dim() == 1 else y
        nll = -logp.gather(-1, yy.unsqueeze(-1)).squeeze(-1).mean(-1)
        if not smoothing or not self.any_smoothing:
            return nll
        return (1 - self.smooth) * nll + self.smooth * (-logp.mean(-1)).mean(-1)

    # --- one step -------------------------------------------------------------------------

    def penalty(self) -> torch.Tensor:
        """λ₁Σ|w| + λ₂Σw² per trial (G,): one fused reduction per tensor and norm."""
        total = torch.zeros(self.G, device=self.device)
        for p in self.in_scope:
            dims = [d for d in range(p.dim()) if d != self.axis[id(p)]]
            w = p.detach()
            if self.any_l2:
                total += self.l2 * torch.linalg.vector_norm(w, 2, dim=dims).square()
            if self.any_l1:
                total += self.l1 * torch.linalg.vector_norm(w, 1, dim=dims)
        return total

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
            self.eager(self.X[idx], self.y[idx])
            return
        if self.graph is None and (len(idx) != self.bs or self.warm < WARMUP_STEPS):
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.eager(self.X[idx], self.y[idx])
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
            return
        if len(idx) != self.bs:
            self.eager(self.X[idx], self.y[idx])
            return
        if self.graph is None:
            self._capture()
            if self.graph is None:
                self.eager(self.X[idx], self.y[idx])
                return
        torch.index_select(self.X, 0, idx, out=self.sx)
        torch.index_select(self.y, 0, idx, out=self.sy)
        self.graph.replay()

    def _capture(self) -> None:
        torch.cuda.synchronize(self.device)
        for p in self.params:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.side):
                self._body(self.sx, self.sy, float(self.bs))
        except Exception as e:  # stay eager
            log.warning("CUDA graph capture of the stacked step failed (%s); training eagerly", e)
            self.use_graph = False
            for p in self.params:
                p.grad = None
            return
        self.graph = graph

    @torch.no_grad()
    def _update(self) -> None:
        self.t.add_(1)
        lr_active = self.lr * self.active  # 0 for trials that stopped early
        decoupled = self.opt_name == "adamw"
        scope = {id(p) for p in self.in_scope}
        for i, p in enumerate(self.params):
            g = p.grad
            assert g is not None
            lr = self._b(lr_active, p)
            if id(p) in scope:
                # L2 as 2λ₂w in the gradient; coupled weight decay the same way; L1 subgradient.
                # In place (addcmul_): on CPU each pass over the stacked weights costs as much
                # as the matmuls.
                if self.any_l2 or (self.any_wd and not decoupled):
                    g.addcmul_(self._b(2 * self.l2 + (0 if decoupled else self.wd), p), p)
                if self.any_l1 and not self.proximal:
                    g.addcmul_(self._b(self.l1, p), torch.sign(p))
                if decoupled and self.any_wd:
                    p.mul_(1 - lr * self._b(self.wd, p))
            st = self.state.setdefault(i, {})
            o = self.trials[0].optimizer
            if self.opt_name == "sgd":
                if o.momentum > 0:
                    if "buf" not in st:
                        st["buf"] = g.clone()
                    else:
                        st["buf"].mul_(o.momentum).add_(g)
                    g = g + o.momentum * st["buf"] if o.nesterov else st["buf"]
                p.addcmul_(lr, g, value=-1)
            elif self.opt_name in ("adam", "adamw"):
                b1, b2 = o.betas
                if "m" not in st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].lerp_(g, 1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                # bias corrections in double, as torch computes them, so a trial matches its solo run
                bc1, bc2_sqrt = 1 - b1**self.t, (1 - b2**self.t).sqrt()
                denom = (st["v"].sqrt() / bc2_sqrt).add_(o.eps)
                p.sub_((lr / bc1) * (st["m"] / denom))
            else:  # rmsprop, alpha 0.99 as torch's default
                if "v" not in st:
                    st["v"] = torch.zeros_like(p)
                st["v"].mul_(0.99).addcmul_(g, g, value=0.01)
                avg = st["v"].sqrt().add_(o.eps)
                if o.momentum > 0:
                    st.setdefault("buf", torch.zeros_like(p)).mul_(o.momentum).addcdiv_(g, avg)
                    p.sub_(lr * st["buf"])
                else:
                    p.sub_(lr * g / avg)
            if id(p) in scope and self.proximal and self.any_l1:
                thr = lr * self._b(self.l1, p)
                p.copy_(torch.sign(p) * torch.clamp(p.abs() - thr, min=0))
        if self.max_norm:
            for layer in self.layers:
                w = layer.weight  # each unit's incoming weights: the `in` axis of (.., in, .., out)
                in_axis = 0 if layer.shared_input else 1
                norms = w.norm(dim=in_axis, keepdim=True)
                w.mul_(torch.clamp(self.max_norm / (norms + 1e-7), max=1.0))

    # --- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.data.standardization
        loss = torch.zeros(self.G, device=self.device, dtype=torch.float64)
        hit = torch.zeros(self.G, device=self.device, dtype=torch.float64)
        abs_err = torch.zeros(self.G, device=self.device, dtype=torch.float64)
        for i in range(0, len(X), 4096):
            xb, yb = X[i : i + 4096], y[i : i + 4096]
            out = self.forward(xb, False)
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

    # --- the run --------------------------------------------------------------------------

    def _lr_factor(self, epoch: int) -> float:
        """The scheduler's multiplier for `epoch` (1-based), the same for every trial."""
        s = self.trials[0].optimizer.scheduler
        if isinstance(s, StepScheduler):
            return s.gamma ** ((epoch - 1) // s.step_size)
        if isinstance(s, CosineScheduler):
            t_max = s.t_max or self.trials[0].training.epochs
            return 0.5 * (1 + math.cos(math.pi * min(epoch - 1, t_max) / t_max))
        return 1.0

    def fit(
        self,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        after_epoch: Callable[[int], Iterable[int]] | None = None,
    ) -> list[TrialResult]:
        """Train every trial; `on_epoch(g, row)` gets each trial's metrics row, then
        `after_epoch(epoch)` names the trials to stop now (pruned: they train no more)."""
        base = self.trials[0].training
        dev, G = self.device, self.G
        n, bs = len(self.X), self.bs
        steps = math.ceil(n / bs)
        gens = []
        for s in sorted(set(self.seeds)):
            gen = torch.Generator(device=dev)
            gen.manual_seed(s)
            gens.append((s, gen))
        gen_of = dict(gens)
        gap_idx = {
            s: torch.randperm(n, generator=torch.Generator().manual_seed(s))[:GAP_SAMPLES].to(dev)
            for s in gen_of
        }
        has_val = len(self.Xv) > 0
        es = [t.training.early_stopping for t in self.trials]
        monitor = [e.monitor if e else ("val_loss" if has_val else "train_eval_loss") for e in es]
        # each trial's early stopping, exactly as a solo run keeps it (no patience: never stops)
        trackers = [EarlyStopping.for_spec(e, monitor[g]) for g, e in enumerate(es)]
        best_row: list[dict[str, Any]] = [{} for _ in range(G)]
        self.last_row: list[dict[str, Any]] = [{} for _ in range(G)]
        done = [False] * G
        self.pruned = [False] * G
        completed = [0] * G
        best_params = [p.detach().clone() for p in self.params]

        for epoch in range(1, base.epochs + 1):
            t0 = time.perf_counter()
            self._set_lr(epoch)
            perms = {s2: torch.randperm(n, generator=g, device=dev) for s2, g in gens}
            self.loss_sum.zero_()
            self.penalty_sum.zero_()
            for step in range(steps):
                if self.shared_batches:
                    self.step(perms[self.seeds[0]][step * bs : (step + 1) * bs])
                else:
                    self.step(torch.stack([perms[s2][step * bs : (step + 1) * bs] for s2 in self.seeds]))
                if (step + 1) % CHECK_EVERY == 0 and should_stop():
                    best_epoch = [t.best_epoch for t in trackers]
                    return self._results(best_epoch, completed, done, best_row, best_params, cancelled=True)
            rows = self._epoch_rows(epoch, time.perf_counter() - t0, gap_idx)
            for at, g in enumerate(self.slots):  # `at`: the trial's position in the stack
                if done[g]:
                    continue
                row = rows[at]
                completed[g] = epoch
                self.last_row[g] = row
                if on_epoch:
                    on_epoch(g, row)
                if trackers[g].update(row[monitor[g]], epoch):
                    best_row[g] = row
                    with torch.no_grad():
                        for bp, p in zip(best_params, self.params, strict=True):
                            m = self._b((torch.arange(self.G, device=dev) == at).float(), p).bool()
                            bp.copy_(torch.where(m, p, bp))
                if not math.isfinite(row["train_loss"]) or trackers[g].should_stop:
                    done[g] = True
                    self.active[at] = 0.0
            position = {g: at for at, g in enumerate(self.slots)}
            for g in after_epoch(epoch) if after_epoch else ():
                if not done[g]:
                    done[g] = self.pruned[g] = True
                    self.active[position[g]] = 0.0
            if all(done):
                break
            live = [at for at, g in enumerate(self.slots) if not done[g]]
            if len(self.slots) - len(live) >= max(1, len(self.slots) // 4):
                # the test metrics of the trials leaving the stack, from their kept weights
                tests = self._test_metrics(best_params)
                self.dropped_tests.update({g: tests[g] for g in self.slots if done[g]})
                best_params = self._repack(live, best_params)
        best_epoch = [t.best_epoch for t in trackers]
        return self._results(best_epoch, completed, done, best_row, best_params, cancelled=False)

    def _set_lr(self, epoch: int) -> None:
        """Every trial's learning rate for `epoch`, from the group's shared schedule."""
        f = self._lr_factor(epoch)
        schedule = self.trials[0].optimizer.scheduler
        if isinstance(schedule, CosineScheduler):
            self.lr.copy_(schedule.eta_min + (self.base_lr - schedule.eta_min) * f)
        else:
            self.lr.copy_(self.base_lr * f)

    def _epoch_rows(
        self, epoch: int, seconds: float, gap_idx: dict[int, torch.Tensor]
    ) -> list[dict[str, Any]]:
        """The epoch's metrics row of the trial at each position of the stack, as a solo run
        writes it (the same fields, each trial's own numbers)."""
        n, has_val = len(self.X), len(self.Xv) > 0
        data_loss = (self.loss_sum / n).tolist()
        pens = (self.penalty_sum / n).tolist()
        val = {k: v.tolist() for k, v in self.evaluate(self.Xv, self.yv).items()} if has_val else {}
        # one evaluation per distinct seed (its own train subset), not one per trial
        gap_loss = {s: self.evaluate(self.X[i], self.y[i])["loss"].tolist() for s, i in gap_idx.items()}
        gap = [gap_loss[s][at] for at, s in enumerate(self.seeds)]
        norms = torch.zeros(self.G, device=self.device)
        zeros = torch.zeros(self.G, device=self.device)
        count = 0
        for p in self.in_scope:
            norms += self._per_trial_sum(p.detach().square(), p)
            zeros += self._per_trial_sum((p.detach() == 0).float(), p)
            count += p.numel() // self.G
        norms_l, zeros_l = norms.sqrt().tolist(), (zeros / max(count, 1)).tolist()
        rows = []
        for at in range(len(self.slots)):
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": data_loss[at] + pens[at],
                "data_loss": data_loss[at],
                "penalty": pens[at],
                "train_eval_loss": gap[at],
                "val_loss": val["loss"][at] if has_val else None,
            }
            row.update({f"val_{k}": v[at] for k, v in val.items() if k != "loss"})
            row["generalization_gap"] = row["val_loss"] - gap[at] if has_val else None
            row["weight_l2_norm"], row["weight_sparsity"] = norms_l[at], zeros_l[at]
            row["lr"] = float(self.lr[at])
            row["seconds"] = seconds
            row["samples_per_second"] = n * self.G / seconds
            rows.append(row)
        return rows

    def _results(
        self,
        best_epoch: list[int | None],
        completed: list[int],
        done: list[bool],
        best_row: list[dict[str, Any]],
        best_params: list[torch.Tensor],
        cancelled: bool,
    ) -> list[TrialResult]:
        tests = self._test_metrics(best_params, keep_restored=True)
        tests.update(self.dropped_tests)
        return [
            TrialResult(
                best_epoch=best_epoch[g],
                epochs_completed=completed[g],
                stopped_early=done[g] and not cancelled and completed[g] < self.trials[g].training.epochs,
                pruned=self.pruned[g],
                best_metrics=best_row[g],
                last_metrics=self.last_row[g],
                test_metrics=tests.get(g, {}),
            )
            for g in range(len(self.trials))
        ]

    @torch.no_grad()
    def _test_metrics(
        self, best_params: list[torch.Tensor], keep_restored: bool = False
    ) -> dict[int, dict[str, float]]:
        """Each trial in the stack's test metrics with the weights it keeps (its best ones
        where early stopping restores them). The weights go back as they were unless
        keep_restored."""
        kept = [self.trials[g] for g in self.slots]
        restore = torch.tensor(
            [bool(t.training.early_stopping and t.training.early_stopping.restore_best) for t in kept],
            device=self.device,
        )
        saved = [] if keep_restored else [p.detach().clone() for p in self.params]
        for bp, p in zip(best_params, self.params, strict=True):
            p.copy_(torch.where(self._b(restore.float(), p).bool(), bp, p))
        test = {k: v.tolist() for k, v in self.evaluate(self.Xt, self.yt).items()} if len(self.Xt) else {}
        for p, old in zip(self.params, saved, strict=False):
            p.copy_(old)
        return {g: {f"test_{k}": v[at] for k, v in test.items()} for at, g in enumerate(self.slots)}

    @torch.no_grad()
    def _repack(self, live: list[int], best_params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Keep only the stack positions `live`: the weights, the optimizer state, the best
        weights and every per-trial number, so that stopped trials no longer cost compute.
        A CUDA graph is captured again for the smaller stack. The best weights, repacked."""
        idx = torch.tensor(live, device=self.device)
        params, best = [], []
        for i, (p, bp) in enumerate(zip(self.params, best_params, strict=True)):
            axis = self.axis[id(p)]
            params.append(nn.Parameter(p.detach().index_select(axis, idx).contiguous()))
            best.append(bp.index_select(axis, idx).contiguous())
            for k, v in self.state.get(i, {}).items():
                self.state[i][k] = v.index_select(axis, idx).contiguous()
        it = iter(params)
        for layer in self.layers:
            layer.weight, layer.bias = next(it), next(it)
        self.params = params
        self.axis = {id(layer.weight): 1 if layer.shared_input else 0 for layer in self.layers}
        self.axis.update({id(layer.bias): 0 for layer in self.layers})
        scope_all = self.trials[0].regularization.apply_to == "all"
        self.in_scope = [
            p for layer in self.layers for p in ((layer.weight, layer.bias) if scope_all else (layer.weight,))
        ]
        for name in (
            "l1",
            "l2",
            "smooth",
            "base_lr",
            "lr",
            "wd",
            "dropout",
            "active",
            "loss_sum",
            "penalty_sum",
        ):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self.G = len(live)
        self.keep = (1 - self.dropout).view(self.G, 1, 1)
        self.seeds = [self.seeds[at] for at in live]
        self.slots = [self.slots[at] for at in live]
        self.graph, self.warm = None, 0
        return best
