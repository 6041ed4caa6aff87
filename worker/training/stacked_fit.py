"""The stacked trainer's epoch loop, slot by slot, with continuous batching.

Each round trains every slot of the stack one epoch of its own: a slot's epoch count, learning
rate (its schedule position), shuffle stream (its seed's, from the round it entered, so its
batches are those of its solo run) and early stopping are its own. After a round: each slot's
metrics row (`on_epoch`), the slots whose trial ended (epochs done, stopped early, diverged,
or named by `after_epoch`: pruned) get their result (`on_result`), then `refill` may put a new
trial in each free slot, in place. Empty slots are dropped once a quarter of the stack is empty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from service.contract.spec import JobSpec
from worker.training.loop import CHECK_EVERY, gap_samples
from worker.training.regularization import EarlyStopping
from worker.training.stacked import StackedTrainer, TrialResult


@dataclass
class _Slot:
    """What one trial of the stack has trained, wherever in the stack it sits."""

    tracker: EarlyStopping
    monitor: str
    stream: tuple[int, int]  # (seed, round it entered): the shuffle stream it draws from
    epoch: int = 0  # epochs trained
    best_row: dict[str, Any] = field(default_factory=dict)
    last_row: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    pruned: bool = False


class _Fit:
    def __init__(
        self,
        tr: StackedTrainer,
        on_epoch: Callable[[int, dict[str, Any]], None] | None,
        should_stop: Callable[[], bool],
        after_epoch: Callable[[int], Iterable[int]] | None,
        refill: Callable[[], JobSpec | None] | None,
        on_result: Callable[[int, TrialResult], None] | None,
    ) -> None:
        self.tr = tr
        self.on_epoch, self.should_stop, self.after_epoch = on_epoch, should_stop, after_epoch
        self.refill, self.on_result = refill, on_result
        self.n = len(tr.X)
        self.epochs = tr.base.training.epochs
        self.has_val = len(tr.Xv) > 0
        self.slot: dict[int, _Slot] = {}  # by trial index
        self.results: dict[int, TrialResult] = {}
        self.streams: dict[tuple[int, int], torch.Generator] = {}
        self.gap_idx: dict[int, torch.Tensor] = {}
        self.best = [p.detach().clone() for p in tr.params]
        self.round = 0
        for g in tr.slots:
            self._enter(g)

    def _enter(self, g: int) -> None:
        """A trial takes a slot now: its early stopping and its shuffle stream start."""
        spec = self.tr.trials[g]
        seed, es = spec.training.seed, spec.training.early_stopping
        monitor = es.monitor if es else ("val_loss" if self.has_val else "train_eval_loss")
        key = (seed, self.round)
        if key not in self.streams:
            gen = torch.Generator(device=self.tr.device)
            gen.manual_seed(seed)
            self.streams[key] = gen
        if seed not in self.gap_idx:
            cpu = torch.Generator().manual_seed(seed)
            gap = gap_samples(len(self.tr.Xv))
            self.gap_idx[seed] = torch.randperm(self.n, generator=cpu)[:gap].to(self.tr.device)
        self.slot[g] = _Slot(EarlyStopping.for_spec(es, monitor), monitor, key)

    def live(self) -> list[int]:
        return [at for at, g in enumerate(self.tr.slots) if not self.slot[g].done]

    def run(self) -> list[TrialResult]:
        while self.live():
            self.round += 1
            t0 = time.perf_counter()
            if not self._train_round():
                return self._all_results(cancelled=True)
            ended = self._close_round(time.perf_counter() - t0)
            if ended:
                self._finish(ended)
                self._refill()
            self._maybe_repack()
            # after every round too, not only every CHECK_EVERY steps: a group that refills
            # may train a whole search of a small dataset's short epochs
            if self.live() and self.should_stop():
                return self._all_results(cancelled=True)
        return self._all_results(cancelled=False)

    # --- a round --------------------------------------------------------------------------

    def _batches(self) -> Callable[[int], torch.Tensor]:
        """Each live stream's permutation for this round; the rows of step s: (B,) when every
        live slot draws from one stream (and no per-slot batches were asked for), else (G, B)."""
        tr, bs = self.tr, self.tr.bs
        live = self.live()
        keys = sorted({self.slot[tr.slots[at]].stream for at in live})
        perms = {k: torch.randperm(self.n, generator=self.streams[k], device=tr.device) for k in keys}
        if len(keys) == 1 and not tr.per_slot_batches:
            perm = perms[keys[0]]
            return lambda s: perm[s * bs : (s + 1) * bs]
        # a slot whose trial ended draws any live stream's rows (its lr is 0)
        rows = torch.stack([perms.get(self.slot[g].stream, perms[keys[0]]) for g in tr.slots])
        return lambda s: rows[:, s * bs : (s + 1) * bs]

    def _train_round(self) -> bool:
        """Every slot one epoch of its own; False when a cancel was asked for part-way."""
        tr = self.tr
        tr.set_lr([self.slot[g].epoch + 1 for g in tr.slots])
        batch = self._batches()
        tr.loss_sum.zero_()
        tr.penalty_sum.zero_()
        for step in range(math.ceil(self.n / tr.bs)):
            tr.step(batch(step))
            if (step + 1) % CHECK_EVERY == 0 and self.should_stop():
                return False
        return True

    def _close_round(self, seconds: float) -> list[int]:
        """Each live slot's row, its early stopping and best weights; then the pruner. The
        positions whose trial ended this round."""
        tr = self.tr
        rows = self._rows(seconds)
        ended: list[int] = []
        for at in self.live():
            s = self.slot[tr.slots[at]]
            s.epoch += 1
            row = {**rows[at], "epoch": s.epoch}
            s.last_row = row
            if self.on_epoch:
                self.on_epoch(tr.slots[at], row)
            if s.tracker.update(row[s.monitor], s.epoch):
                s.best_row = row
                tr.keep_best(self.best, at)
            if not math.isfinite(row["train_loss"]) or s.tracker.should_stop:
                s.done = True
                ended.append(at)
        position = {g: at for at, g in enumerate(tr.slots)}
        for g in self.after_epoch(self.round) if self.after_epoch else ():
            if g in position and not self.slot[g].done:
                self.slot[g].done = self.slot[g].pruned = True
                ended.append(position[g])
        for at in self.live():
            if self.slot[tr.slots[at]].epoch >= self.epochs:
                self.slot[tr.slots[at]].done = True
                ended.append(at)
        for at in ended:
            tr.active[at] = 0.0
        return sorted(ended)

    def _rows(self, seconds: float) -> list[dict[str, Any]]:
        """The round's metrics row of the trial at each position of the stack, as a solo run
        writes it (the same fields, each trial's own numbers; "epoch" is set by the caller)."""
        tr, n = self.tr, self.n
        data_loss = (tr.loss_sum / n).tolist()
        pens = (tr.penalty_sum / n).tolist()
        val = {k: v.tolist() for k, v in tr.evaluate(tr.Xv, tr.yv).items()} if self.has_val else {}
        # one evaluation per distinct seed (its own train subset), not one per trial
        gap_loss = {
            s: tr.evaluate(tr.X[self.gap_idx[s]], tr.y[self.gap_idx[s]])["loss"].tolist()
            for s in set(tr.seeds)
        }
        gap = [gap_loss[s][at] for at, s in enumerate(tr.seeds)]
        norms, sparsity = tr.weight_stats()
        lrs = tr.lr.tolist()
        rows = []
        for at in range(len(tr.slots)):
            row: dict[str, Any] = {
                "epoch": 0,
                "train_loss": data_loss[at] + pens[at],
                "data_loss": data_loss[at],
                "penalty": pens[at],
                "train_eval_loss": gap[at],
                "val_loss": val["loss"][at] if self.has_val else None,
            }
            row.update({f"val_{k}": v[at] for k, v in val.items() if k != "loss"})
            row["generalization_gap"] = row["val_loss"] - gap[at] if self.has_val else None
            row["weight_l2_norm"], row["weight_sparsity"] = norms[at], sparsity[at]
            row["lr"] = lrs[at]
            row["seconds"] = seconds
            row["samples_per_second"] = n * tr.G / seconds
            rows.append(row)
        return rows

    # --- trials that end, slots that refill ----------------------------------------------

    def _result(self, g: int, test: dict[str, float], cancelled: bool) -> TrialResult:
        s = self.slot[g]
        return TrialResult(
            best_epoch=s.tracker.best_epoch,
            epochs_completed=s.epoch,
            stopped_early=s.done and not cancelled and s.epoch < self.epochs,
            pruned=s.pruned,
            best_metrics=s.best_row,
            last_metrics=s.last_row,
            test_metrics=test,
        )

    def _finish(self, ended: list[int]) -> None:
        """The results of the trials that ended, with their test metrics from the weights
        they keep (one evaluation of those trials only, from copies of their weights)."""
        tests = self.tr.test_metrics(self.best, positions=ended)
        for at in ended:
            g = self.tr.slots[at]
            self.results[g] = self._result(g, tests.get(g, {}), cancelled=False)
            if self.on_result:
                self.on_result(g, self.results[g])

    def _refill(self) -> None:
        """A new trial in each free slot, as long as `refill` has one."""
        if self.refill is None:
            return
        for at, g in enumerate(self.tr.slots):
            if not self.slot[g].done:
                continue
            spec = self.refill()
            if spec is None:
                return
            new = self.tr.load_slot(at, spec)
            self.tr.keep_best(self.best, at)
            self._enter(new)

    def _maybe_repack(self) -> None:
        live = self.live()
        empty = len(self.tr.slots) - len(live)
        if live and empty >= max(1, len(self.tr.slots) // 4):
            self.best = self.tr.repack(live, self.best)

    def _all_results(self, cancelled: bool) -> list[TrialResult]:
        """Every trial's result, those still in the stack from their kept weights (left
        restored in the stack)."""
        tests = self.tr.test_metrics(self.best, keep_restored=True)
        for g in self.tr.slots:
            if g not in self.results:
                self.results[g] = self._result(g, tests.get(g, {}), cancelled)
        return [self.results[g] for g in range(len(self.tr.trials))]


def fit(
    tr: StackedTrainer,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    after_epoch: Callable[[int], Iterable[int]] | None = None,
    refill: Callable[[], JobSpec | None] | None = None,
    on_result: Callable[[int, TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Train every trial of `tr`: `on_epoch(g, row)` gets each trial's metrics row (g: its
    index in tr.trials, "epoch" its own count), then `after_epoch(round)` names the trials to
    stop now (pruned); `on_result(g, result)` as each trial ends; `refill()` a new trial for a
    free slot (or None). One result per trial, in tr.trials' order (refilled ones last)."""
    return _Fit(tr, on_epoch, should_stop, after_epoch, refill, on_result).run()
