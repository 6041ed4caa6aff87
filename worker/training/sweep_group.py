"""One stacked group of a sweep, kept full: continuous batching.

A slot of the stack holds one (trial, fold, seed). The group trains fold by fold in passes: in
the pass of fold f, every trial whose next fold is f takes slots (one per seed); when a trial's
slots free (its epochs done, pruned, stopped early), the slots take the next (trial, seed) that
waits for fold f, else a new trial from the sweep (`SweepCallbacks.refill`), which starts at
fold f and goes on with f + 1, ..., wrapping round, in the next passes. So the group stays full
until the search has nothing more to give, and each trial gets its own start (`on_start`), its
own steps for the pruner (on its k-th fold, step = f × epochs + its epoch with f the cv index
of the group's k-th fold: as if it had started at the first), and its own outcome
(`on_trial`) as soon as its last fold ends. A unit may train some of the cv folds only
(run_sweep's `folds`). Folds stay sequential per pass (the slots of
a pass share the fold's data); a trial's next fold waits for the next pass.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from service.contract.spec import JobSpec
from service.contract.stacking import group_key, not_stackable
from service.contract.sweep_spec import SweepSpec, Trial
from worker.training.data import Prepared
from worker.training.stacked import StackedTrainer, TrialResult
from worker.training.sweep_trials import (
    Cancelled,
    Progress,
    SweepCallbacks,
    TrialOutcome,
    kept_row,
    mean_row,
    outcome_of,
    replicas,
)

MAX_WRONG_KEYS = 8  # refill answers of another group's kind in a row before the slot stays empty


@dataclass
class _Pass:
    """One fold's pass: which (trial, seed spec) each slot of the trainer took, and the
    (trial, seed spec) waiting for a free slot."""

    fold: int
    slots: list[tuple[Trial, JobSpec]]
    queue: list[tuple[Trial, JobSpec]]


class StackedGroup:
    def __init__(
        self,
        sweep: SweepSpec,
        group: list[Trial],
        folds: list[tuple[int, Prepared]],
        cb: SweepCallbacks,
        outcomes: dict[int, TrialOutcome],
        started: list[Trial],
        other_kind: list[Trial],
    ) -> None:
        """`started`: the trials refill gave are added to it; `other_kind`: those of another
        group's kind, to train after this group."""
        self.sweep, self.cb = sweep, cb
        self.folds = [data for _, data in folds]
        self.ids = [i for i, _ in folds]  # each fold's cv index (a unit may train some folds)
        self.outcomes, self.started, self.other_kind = outcomes, started, other_kind
        self.capacity = len(group) * sweep.seeds
        self.key = group_key(group[0].spec)
        self.epochs = group[0].spec.training.epochs
        self.waiting = list(group)  # not started yet
        self.trial_of: dict[int, Trial] = {}
        self.prog: dict[int, Progress] = {}
        self.todo: dict[int, list[int]] = {}  # each started trial's folds left, in its order
        self.running: dict[int, int] = defaultdict(int)  # its slots in the pass, queued included
        self.rows: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)  # this round's
        self.row_folds: dict[int, list[int]] = defaultdict(list)  # the fold of each kept row

    def run(self) -> None:
        fold = 0
        while self.waiting or any(self.todo.values()):
            if self.cb.should_stop():
                raise Cancelled
            ready = [t for t, left in self._trials() if left and left[0] == fold]
            if ready or self.waiting:
                self._train_pass(fold, ready)
            fold = (fold + 1) % len(self.folds)

    def _trials(self) -> list[tuple[Trial, list[int]]]:
        return [(self.trial_of[i], left) for i, left in self.todo.items()]

    # --- a pass ---------------------------------------------------------------------------

    def _train_pass(self, fold: int, ready: list[Trial]) -> None:
        p = _Pass(fold, [], [])
        for t in ready:
            self._queue(p, t)
        while self.waiting:
            self._begin(p, self.waiting.pop(0))
        first = [p.queue.pop(0) for _ in range(min(self.capacity, len(p.queue)))]
        for t, spec in first:
            self._take_slot(p, t, spec)
        trainer = StackedTrainer([spec for _, spec in first], self.folds[fold], per_slot_batches=True)
        trainer.fit(
            on_epoch=lambda g, row: self._on_epoch(p, g, row),
            should_stop=self.cb.should_stop,
            after_epoch=lambda _round: self._after_epoch(p),
            refill=lambda: self._refill(p),
            on_result=lambda g, r: self._on_result(p, g, r),
        )
        if self.cb.should_stop():
            raise Cancelled

    def _queue(self, p: _Pass, t: Trial) -> None:
        for spec in replicas(self.sweep, t.spec):
            p.queue.append((t, spec))
            self.running[t.index] += 1

    def _begin(self, p: _Pass, t: Trial) -> None:
        """A trial joins the group at this pass's fold: its folds from there on, wrapping."""
        n = len(self.folds)
        self.trial_of[t.index] = t
        self.prog[t.index] = Progress()
        self.todo[t.index] = [(p.fold + k) % n for k in range(n)]
        self._queue(p, t)

    def _take_slot(self, p: _Pass, t: Trial, spec: JobSpec) -> None:
        if self.prog[t.index].epochs == 0 and not any(s[0].index == t.index for s in p.slots):
            self.cb.on_start(t.index)
        p.slots.append((t, spec))

    def _refill(self, p: _Pass) -> JobSpec | None:
        """The spec for a free slot: a seed of a trial waiting for this fold, else a new trial
        from the sweep; None when there is none now."""
        while p.queue:
            t, spec = p.queue.pop(0)
            if self.prog[t.index].pruned is None:
                self._take_slot(p, t, spec)
                return spec
            self._slot_ended(t)
        for _ in range(MAX_WRONG_KEYS):
            if self.cb.budget() is not None:
                return None
            new = self.cb.refill(self.key)
            if new is None:
                return None
            self.started.append(new)
            if group_key(new.spec) != self.key or not_stackable(new.spec):
                self.other_kind.append(new)
                continue
            self._begin(p, new)
            return self._refill(p)
        return None

    # --- what the trainer reports --------------------------------------------------------

    def _on_epoch(self, p: _Pass, g: int, row: dict[str, Any]) -> None:
        t = p.slots[g][0]
        self.prog[t.index].epochs += 1
        self.rows[(t.index, row["epoch"])].append(row)

    def _after_epoch(self, p: _Pass) -> list[int]:
        """Each trial's epoch (its seeds' rows averaged) to the sweep, then halt and the pruner:
        the slots of the trials they stop."""
        n = len(self.folds)
        more = {i: e < self.epochs or len(self.todo[i]) > 1 for i, e in self.rows}
        halt = self.cb.halt() if any(more.values()) else None
        reports = []
        for (i, epoch), rows in self.rows.items():
            prog = self.prog[i]
            prog.last = mean_row(rows)
            # the fold it would be on had it started at the first: steps count what it trained
            step = self.ids[n - len(self.todo[i])] * self.epochs + epoch
            self.cb.on_epoch(i, self.ids[p.fold], step, prog.last)
            reports.append((i, step))
        stop: set[int] = set()
        for i, step in reports:
            prog = self.prog[i]
            reason = (halt if more[i] else None) or self.cb.prune(i, self.ids[p.fold], step, prog.last)
            if reason is not None and prog.pruned is None:
                prog.pruned = (step, reason)
                stop.add(i)
        self.rows.clear()
        self.cb.after_epoch()
        return [g for g, (t, _) in enumerate(p.slots) if t.index in stop]

    def _on_result(self, p: _Pass, g: int, r: TrialResult) -> None:
        t, spec = p.slots[g]
        prog = self.prog[t.index]
        if prog.pruned is None:
            prog.rows.append(kept_row(spec, r.best_metrics, r.last_metrics))
            prog.best_epochs.append(r.best_epoch)
            self.row_folds[t.index].append(p.fold)
        self._slot_ended(t)

    def _slot_ended(self, t: Trial) -> None:
        """One seed of t ended its fold; once all have, the fold is done, and the trial once
        it was its last (or the trial was pruned): its outcome now."""
        self.running[t.index] -= 1
        if self.running[t.index] > 0:
            return
        left = self.todo[t.index]
        left.pop(0)
        prog = self.prog[t.index]
        if prog.pruned is None and left:
            return
        left.clear()
        # fold order, whichever fold the trial started at (a refilled one starts anywhere)
        order = sorted(range(len(prog.rows)), key=lambda k: self.row_folds[t.index][k])
        prog.rows = [prog.rows[k] for k in order]
        prog.best_epochs = [prog.best_epochs[k] for k in order]
        self.outcomes[t.index] = outcome_of(self.sweep, t, prog, None, vectorized=True)
        self.cb.on_trial(self.outcomes[t.index])
