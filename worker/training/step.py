"""One optimization step, run eagerly or replayed from a CUDA graph.

A small model on a GPU is bound by kernel launches and host syncs, not arithmetic: the
tutorial's MLP runs 16x faster at batch 64 when its whole step (forward, loss, backward,
penalty, clipping, optimizer, proximal L1, max-norm) is captured once as a CUDA graph and
replayed. The step never reads a value back: the loss, the penalty and a count of non-finite
losses accumulate on the device and the loop reads them every few steps.

Graph mode (CUDA only): the batch goes through static input buffers, so every replayed step has
the full batch size; the last partial batch of an epoch runs eagerly on the same model and
optimizer state (no sample is dropped). The graph bakes in the learning rate, so it is
captured again when a scheduler changes it. If capture fails, the step stays eager.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from worker.training.hostdata import HostBatches
from worker.training.optim import step_function
from worker.training.regularization import Penalty, apply_max_norm

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before capture (lazy optimizer state, cuBLAS)


class Stepper:
    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        penalty: Penalty,
        *,
        regression: bool,
        grad_clip_norm: float | None,
        max_norm: float | None,
        bf16: bool,
        device: torch.device,
        batch_size: int,
        sample_shape: tuple[int, ...],
        target_dtype: torch.dtype,
        use_graph: bool,
        host_batches: HostBatches | None = None,
        input_dtype: torch.dtype = torch.float32,  # int64: token ids of a text dataset
    ) -> None:
        self.model, self.criterion, self.optimizer, self.penalty = model, criterion, optimizer, penalty
        self.optimizer_step = step_function(optimizer)
        # what optimizer.zero_grad(set_to_none=True) clears, without its per-call profiler
        # record and group walk (8 us a call on a 2-core VM; a small model's step is ~1 ms)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self.regression = regression
        self.grad_clip_norm, self.max_norm = grad_clip_norm, max_norm
        self.device = device
        self.bs = batch_size
        self.host_batches = host_batches  # data kept on the host: batches come through pinned buffers
        # autocast's weight cache must be off under graph capture
        self.bf16 = bf16
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.penalty_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.nonfinite = torch.zeros((), device=device, dtype=torch.int64)
        self.use_graph = use_graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_lr: float | None = None
        self.warm = 0
        if self.use_graph:
            self.sx = torch.zeros((batch_size, *sample_shape), device=device, dtype=input_dtype)
            self.sy = torch.zeros(batch_size, device=device, dtype=target_dtype)
            self.side = torch.cuda.Stream(device)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def reset(self) -> None:
        """Zero the accumulators in place: a captured graph holds these very tensors."""
        self.loss_sum.zero_()
        self.penalty_sum.zero_()
        self.nonfinite.zero_()

    def _autocast(self) -> Any:
        if not self.bf16:
            return contextlib.nullcontext()  # a disabled autocast still costs 5 us to enter and exit
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.use_graph)

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    def _body(self, xb: torch.Tensor, yb: torch.Tensor, weight: float) -> None:
        with self._autocast():
            out = self.model(xb)
        out = out.float()
        loss = self.criterion(out.squeeze(-1) if self.regression else out, yb)
        loss.backward()
        if self.penalty.active:
            # the penalty at the weights the gradient is taken at, then its gradient
            self.penalty_sum.add_(self.penalty.value(), alpha=weight)
            self.penalty.add_gradient()
        if self.grad_clip_norm:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm, foreach=True)
        self.optimizer_step()
        if self.penalty.proximal:
            self.penalty.proximal_step(self.lr)
        if self.max_norm:
            apply_max_norm(self.model, self.max_norm)
        loss = loss.detach()
        self.loss_sum.add_(loss, alpha=weight)
        self.nonfinite.add_(torch.isfinite(loss).logical_not())

    def eager(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self.zero_grad()
        self._body(xb, yb, float(len(xb)))

    def _eager_on_side_stream(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        # Warm-up, capture and partial batches share one stream: cuBLAS keeps a workspace
        # (about 64 MB on Hopper) per stream it runs on.
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            self.eager(xb, yb)
        torch.cuda.current_stream().wait_stream(self.side)

    def _batch(
        self, X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.host_batches:
            return self.host_batches.get(idx)
        # index_select, not X[idx]: on the CPU advanced indexing costs about 5x as much (150 vs
        # 30 us for a batch of 64 rows of 784), a sizeable share of a small model's step
        return torch.index_select(X, 0, idx), torch.index_select(y, 0, idx)

    def step(self, X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        """Train on X[idx], y[idx]."""
        if not self.use_graph:
            self.eager(*self._batch(X, y, idx))
            return
        if len(idx) != self.bs or self.warm < WARMUP_STEPS:
            self._eager_on_side_stream(*self._batch(X, y, idx))
            self.warm += 1
            return
        if self.graph is None or self.graph_lr != self.lr:
            self._capture()
            if self.graph is None:
                self._eager_on_side_stream(*self._batch(X, y, idx))
                return
        if self.host_batches:
            xb, yb = self.host_batches.get(idx)
            self.sx.copy_(xb)
            self.sy.copy_(yb)
        else:
            torch.index_select(X, 0, idx, out=self.sx)
            torch.index_select(y, 0, idx, out=self.sy)
        self.graph.replay()

    def _capture(self) -> None:
        self.graph = None
        torch.cuda.synchronize(self.device)
        # Backward under capture must allocate the gradients from the graph's pool.
        self.zero_grad()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.side):
                self._body(self.sx, self.sy, float(self.bs))
        except Exception as e:  # an op that cannot be captured: stay on the eager path
            log.warning("CUDA graph capture failed (%s); training eagerly", e)
            self.use_graph = False
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.graph, self.graph_lr = graph, self.lr
