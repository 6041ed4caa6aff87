"""The training loop, top to bottom.

Data lives on the device as tensors and is shuffled by index: no DataLoader, no per-step copy
from the host. The loss, the penalty and the first non-finite step are kept on the device and
read every CHECK_EVERY steps (with the cancel flag and the time limit), so the step itself never
waits for the host. The last partial batch of an epoch is kept, so every sample counts.

`fit` is the epoch loop, one screen; its pieces follow in the order they run (setup and its
parts: the monitor, the splits, the stepper, the sidecar; resume, an epoch's steps, its metrics
row, what follows an epoch, the finish) over one state object, `_Run`. They stay in one module
(about 530 lines) so the loop reads top to bottom. The penalties' math and the optimizers are
the registry's (worker.training.terms, worker.training.updates), shared with the stacked trainer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from service.contract.architecture import LayerPlan, metric_names, parameter_count, plan_model
from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from service.version import regtrain_version
from worker.training import checkpoints as ckpt
from worker.training.data import Prepared
from worker.training.errors import TrainingError
from worker.training.evaluation import class_report, confusion_matrix, evaluate
from worker.training.hostdata import HostBatches, keep_on_host
from worker.training.models import create_model
from worker.training.optim import create_optimizer, create_scheduler, folds_l2
from worker.training.regularization import (
    EarlyStopping,
    Penalty,
    split_parameters,
    weight_stats,
)
from worker.training.step import Stepper

log = logging.getLogger(__name__)

CHECK_EVERY = 16  # steps between reads of the loss, the cancel flag and the clock...
CHECK_SECONDS = 0.2  # ...when at least this long has passed since the last read
KEEP_EPOCH_CHECKPOINTS = 3
GAP_SAMPLES = 4096  # at most this many train samples evaluated in eval mode each epoch (gap_samples)
MIN_GAP_SAMPLES = 1024


def gap_samples(n_val: int) -> int:
    """How many train samples estimate the train side of the generalization gap each epoch: as
    many as the validation split estimates the other side with (the gap is no more precise than
    that), at least MIN_GAP_SAMPLES, at most GAP_SAMPLES; GAP_SAMPLES without a validation
    split, where the train-side loss is what early stopping watches. On a small dataset, whose
    epoch is a few dozen steps, evaluating 4096 rows cost a third of the epoch."""
    return GAP_SAMPLES if n_val == 0 else min(GAP_SAMPLES, max(MIN_GAP_SAMPLES, n_val))


def _noop(*_: Any) -> None:
    return None


@dataclass
class Callbacks:
    on_epoch: Callable[[dict[str, Any]], None] = _noop
    on_checkpoint: Callable[[ckpt.CheckpointRecord], None] = _noop
    on_checkpoint_removed: Callable[[str], None] = _noop
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class FitResult:
    status: Literal["succeeded", "cancelled"]
    epochs_completed: int
    best_epoch: int | None
    stopped_early: bool
    test_metrics: dict[str, float]  # test_<metric>, as a sweep's stacked trials report them
    weight_l2_norm: float
    weight_sparsity: float
    parameters: int
    resumed_from_epoch: int | None
    model: nn.Module = field(repr=False)
    # the test metrics of the `best` checkpoint's weights (what a user downloads), None when there
    # is no test split or no best epoch
    best_checkpoint_metrics: dict[str, Any] | None = None
    # a classification's per_class, macro_f1 and confusion_matrix on the test split ({} else)
    test_report: dict[str, Any] = field(default_factory=dict)


def use_cuda_graph(device: torch.device) -> bool:
    """CUDA graphs on CUDA unless REGTRAIN_CUDA_GRAPHS=0 (the eager path, for comparison)."""
    return device.type == "cuda" and os.environ.get("REGTRAIN_CUDA_GRAPHS", "1") != "0"


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError(
                ErrorType.DEVICE_UNAVAILABLE, "training.device is 'cuda' but this worker has no CUDA device"
            )
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class _Run:
    """One fit's state: what setup builds, and what the epochs change (best weights, last row)."""

    spec: JobSpec
    data: Prepared
    cb: Callbacks
    device: torch.device
    autocast: Any
    monitor: str
    plan: list[LayerPlan]
    model: nn.Module
    in_scope: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tracker: EarlyStopping
    shuffle: torch.Generator
    stepper: Stepper
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  # train, val, test, gap (train samples)
    folder: Path | None
    sidecar: ckpt.Sidecar
    deadline: float | None  # time.monotonic() when the time limit runs out
    time_limit_s: float | None
    best_state: dict[str, torch.Tensor] | None = None
    last_row: dict[str, Any] | None = None
    resumed_from: int | None = None

    @property
    def has_val(self) -> bool:
        return len(self.data.X_val) > 0

    def save(
        self,
        name: str,
        epoch: int,
        metrics: dict[str, Any],
        state: dict[str, torch.Tensor] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        if self.folder is None:
            return
        weights = state if state is not None else self.model.state_dict()
        rec = ckpt.write_weights(self.folder, name, weights, self.sidecar, epoch, metrics)
        if resume is not None:
            # before the callback, which may put the checkpoint elsewhere (an artifact bucket):
            # what it hands over is then complete, resume state included
            rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle.get_state()}
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state()
            ckpt.write_resume_state(self.folder, name, self.optimizer, rng, resume)
        self.cb.on_checkpoint(rec)

    def over_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def time_ran_out(self, epoch: int, during: int | None = None) -> TrainingError:
        """Keep what was trained as `final` (labelled with the last whole epoch), and say so."""
        extra = {"interrupted_in_epoch": during} if during else {}
        self.save("final", epoch, {**(self.last_row or {}), **extra})
        when = f"during epoch {during}" if during else f"after epoch {epoch}"
        return TrainingError(
            ErrorType.TIME_LIMIT,
            f"the time limit of {self.time_limit_s:g} s ran out {when}",
            epoch=during or epoch,
        )

    def evaluate(self, split: str) -> dict[str, float]:
        X, y = self.splits[split]
        return evaluate(self.model, X, y, self.data.task, self.data.standardization.target_std, self.autocast)

    def test_metrics(self) -> dict[str, Any]:
        """The model's test metrics (`test_<metric>`), and for classification the per-class
        report; {} without a test split."""
        X, y = self.splits["test"]
        if not len(X):
            return {}
        out: dict[str, Any] = {f"test_{k}": v for k, v in self.evaluate("test").items()}
        if self.data.task == "classification":
            classes = self.data.classes or list(range(self.data.shape.n_outputs))
            out.update(class_report(confusion_matrix(self.model, X, y, len(classes), self.autocast), classes))
        return out


def fit(
    spec: JobSpec,
    data: Prepared,
    work_dir: Path | None,
    callbacks: Callbacks | None = None,
    *,
    time_limit_s: float | None = None,
    sidecar_extra: dict[str, Any] | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train spec on data; checkpoints under work_dir (None: none). init_weights warm-starts the
    model (a regularization path step) instead of the seed's initialization."""
    run = _setup(spec, data, work_dir, callbacks or Callbacks(), time_limit_s, sidecar_extra, init_weights)
    start_epoch = _resume(run)
    tr, es = spec.training, spec.training.early_stopping
    status: Literal["succeeded", "cancelled"] = "succeeded"
    completed = start_epoch - 1  # the last epoch trained to its end
    # a job that had stopped early before its worker was lost has nothing left to train
    stopped_early = es is not None and run.tracker.should_stop
    epoch = completed
    for epoch in range(start_epoch, (completed if stopped_early else tr.epochs) + 1):
        t0, lr = time.perf_counter(), run.stepper.lr
        if not _train_epoch(run, epoch):
            status = "cancelled"
            break
        row = _epoch_row(run, epoch, lr, t0, train_seconds=time.perf_counter() - t0)
        run.last_row = row
        run.cb.on_epoch(row)
        _after_epoch(run, epoch, row)
        stopped_early, completed = es is not None and run.tracker.should_stop, epoch
        if stopped_early:
            break
        if run.cb.should_stop():
            status = "cancelled"
            break
        if run.over_time() and epoch < tr.epochs:
            raise run.time_ran_out(epoch)
    return _finish(run, status, completed, epoch, stopped_early)


def _setup(
    spec: JobSpec,
    data: Prepared,
    work_dir: Path | None,
    cb: Callbacks,
    time_limit_s: float | None,
    sidecar_extra: dict[str, Any] | None,
    init_weights: dict[str, torch.Tensor] | None,
) -> _Run:
    """Model, penalty, optimizer, schedule, early stopping, data on its device, and the stepper."""
    deadline = time.monotonic() + time_limit_s if time_limit_s is not None else None
    tr = spec.training
    device = resolve_device(tr.device)
    monitor = _monitor(spec, data)
    # The seed fixes the initialization and dropout masks (global RNG) and the shuffles (own generator).
    torch.manual_seed(tr.seed)
    model = create_model(spec, data.shape).to(device)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    in_scope, out_of_scope = split_parameters(model, spec.regularization.apply_to)
    optimizer = create_optimizer(spec, in_scope, out_of_scope, device)
    splits, on_host = _splits(data, device, tr.seed)
    shuffle = torch.Generator(device=splits["train"][0].device)  # the permutation lives where the data does
    shuffle.manual_seed(tr.seed)
    return _Run(
        spec=spec,
        data=data,
        cb=cb,
        device=device,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=tr.precision == "bf16"),
        monitor=monitor,
        plan=plan_model(spec, data.shape),
        model=model,
        in_scope=in_scope,
        optimizer=optimizer,
        scheduler=create_scheduler(spec, optimizer),
        tracker=EarlyStopping.for_spec(tr.early_stopping, monitor),
        shuffle=shuffle,
        stepper=_stepper(spec, data, model, in_scope, optimizer, splits, device, on_host),
        splits=splits,
        folder=work_dir / "checkpoints" if work_dir else None,
        sidecar=ckpt.Sidecar(_sidecar(spec, data, sidecar_extra)),
        deadline=deadline,
        time_limit_s=time_limit_s,
    )


def _monitor(spec: JobSpec, data: Prepared) -> str:
    """The metric early stopping (and the best checkpoint) follows; BAD_DATA if not reported."""
    es, has_val = spec.training.early_stopping, len(data.X_val) > 0
    monitor = es.monitor if es else ("val_loss" if has_val else "train_eval_loss")
    if monitor not in metric_names(data.task, has_val):
        raise TrainingError(
            ErrorType.BAD_DATA,
            f"training.early_stopping.monitor: {monitor!r} is not reported for this job; choose one of {sorted(metric_names(data.task, has_val))}",
        )
    return monitor


def _splits(
    data: Prepared, device: torch.device, seed: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], bool]:
    """train, val, test and gap (train samples evaluated each epoch) as tensors, on the device
    or, too large for it, on the host; and whether they stay on the host."""
    arrays = (data.X_train, data.y_train, data.X_val, data.y_val, data.X_test, data.y_test)
    on_host = keep_on_host(sum(a.nbytes for a in arrays), device)
    data_device = torch.device("cpu") if on_host else device

    def tensors(X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(X, device=data_device), torch.as_tensor(y, device=data_device)

    X, y = tensors(data.X_train, data.y_train)
    gap_idx = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[
        : gap_samples(len(data.X_val))
    ]
    gap_idx = gap_idx.to(data_device)
    splits = {
        "train": (X, y),
        "val": tensors(data.X_val, data.y_val),
        "test": tensors(data.X_test, data.y_test),
        "gap": (X[gap_idx].to(device), y[gap_idx].to(device)),
    }
    return splits, on_host


def _stepper(
    spec: JobSpec,
    data: Prepared,
    model: nn.Module,
    in_scope: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    on_host: bool,
) -> Stepper:
    """The step: the loss, the penalty (L2 folded into the optimizer where it can be), clipping
    and max-norm, eager or captured."""
    tr, reg = spec.training, spec.regularization
    criterion: nn.Module = (
        nn.CrossEntropyLoss(label_smoothing=reg.label_smoothing)
        if data.task == "classification"
        else nn.MSELoss()
    )
    X, y = splits["train"]
    bs = min(tr.batch_size, len(X))
    return Stepper(
        model,
        criterion,
        optimizer,
        Penalty(in_scope, reg.l1, reg.l2, reg.l1_mode, l2_in_optimizer=folds_l2(spec)),
        regression=data.task == "regression",
        grad_clip_norm=tr.grad_clip_norm,
        max_norm=reg.max_norm,
        bf16=tr.precision == "bf16",
        device=device,
        batch_size=bs,
        sample_shape=tuple(X.shape[1:]),
        target_dtype=y.dtype,
        input_dtype=X.dtype,
        use_graph=use_cuda_graph(device),
        host_batches=HostBatches(X, y, bs, device) if on_host else None,
    )


def _sidecar(spec: JobSpec, data: Prepared, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What every checkpoint's sidecar says of the run (predict reads it back)."""
    return {
        "spec": spec.model_dump(mode="json"),
        "task": data.task,
        "input_shape": list(data.input_shape),
        "classes": data.classes,
        "standardization": data.standardization.to_dict(),
        # the column preprocessing (service.data.columns), applied before the standardization
        **({"preprocessing": data.preprocessing} if data.preprocessing is not None else {}),
        # a text dataset's tokenizer (worker.training.text's JSON): predict tokenizes raw strings
        **({"text": data.text} if data.text is not None else {}),
        "seed": spec.training.seed,
        "data_sha256": data.sha256,
        "versions": {"torch": torch.__version__, "regtrain": regtrain_version()},
        **(extra or {}),
    }


def _resume(run: _Run) -> int:
    """Resume from the newest complete epoch checkpoint: same weights, optimizer moments, LR
    schedule, RNG streams and early-stopping counters as the uninterrupted run. The first
    epoch left to train."""
    folder = run.folder
    epochs_done = ckpt.epoch_checkpoints(folder) if folder else []
    if folder is None or not epochs_done:
        return 1
    k = epochs_done[-1]
    run.model.load_state_dict(ckpt.read_weights(folder / f"epoch-{k}.safetensors"))
    opt_state, rng, loop_state = ckpt.read_resume_state(folder, f"epoch-{k}")
    run.optimizer.load_state_dict(opt_state)
    if run.scheduler is not None and loop_state.get("scheduler"):
        run.scheduler.load_state_dict(loop_state["scheduler"])
    run.tracker.load_state_dict(loop_state["tracker"])
    torch.set_rng_state(rng["torch"])
    run.shuffle.set_state(rng["shuffle"])
    if "cuda" in rng and run.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"])
    if (folder / "best.safetensors").exists():
        best = ckpt.read_weights(folder / "best.safetensors")
        run.best_state = {name: v.to(run.device) for name, v in best.items()}
    run.last_row = loop_state.get("last_row")
    run.resumed_from = k
    log.info("resuming from the checkpoint of epoch %d", k)
    return k + 1


def _train_epoch(run: _Run, epoch: int) -> bool:
    """One pass over the train split; False if a cancel was asked for part-way.

    The device is read back only every CHECK_EVERY steps (and CHECK_SECONDS): each read waits
    for the GPU to drain its queue. A non-finite loss fails the job at the step it began."""
    X, y = run.splits["train"]
    n, bs = len(X), run.stepper.bs
    steps = math.ceil(n / bs)
    run.model.train()
    run.stepper.reset()
    perm = torch.randperm(n, generator=run.shuffle, device=X.device)
    last_check = time.monotonic()
    for step in range(steps):
        run.stepper.step(X, y, perm[step * bs : (step + 1) * bs])
        if step < steps - 1 and not (
            (step + 1) % CHECK_EVERY == 0 and time.monotonic() - last_check >= CHECK_SECONDS
        ):
            continue
        last_check = time.monotonic()
        bad = int(run.stepper.nonfinite)
        if bad:
            first = step + 1 - bad + 1
            raise TrainingError(
                ErrorType.DIVERGED,
                f"the loss became NaN or infinite at epoch {epoch}, step {first}: lower the "
                "learning rate, clip gradients or check the data",
                epoch=epoch,
                step=first,
            )
        if run.cb.should_stop():
            return False
        if run.over_time():
            raise run.time_ran_out(epoch - 1, during=epoch)
    return True


def _epoch_row(run: _Run, epoch: int, lr: float, t0: float, train_seconds: float) -> dict[str, Any]:
    """The epoch's metrics row, as the store records it and docs/API.md names its fields."""
    n = len(run.splits["train"][0])
    data_loss = float(run.stepper.loss_sum) / n
    pen = float(run.stepper.penalty_sum) / n
    gap_eval = run.evaluate("gap")
    row: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": data_loss + pen,
        "data_loss": data_loss,
        "penalty": pen,
        "train_eval_loss": gap_eval["loss"],
    }
    if run.has_val:
        ev = run.evaluate("val")
        row["val_loss"] = ev["loss"]
        row.update({f"val_{k}": v for k, v in ev.items() if k != "loss"})
        row["generalization_gap"] = ev["loss"] - gap_eval["loss"]
    else:
        row["val_loss"] = None
        row["generalization_gap"] = None
    row["weight_l2_norm"], row["weight_sparsity"] = weight_stats(run.in_scope)
    row["lr"] = lr
    row["seconds"] = time.perf_counter() - t0
    row["samples_per_second"] = n / train_seconds if train_seconds > 0 else None
    return row


def _after_epoch(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Early stopping's best, the LR schedule's step, and every checkpoint_every epochs an epoch
    checkpoint with the resume state (older ones beyond KEEP_EPOCH_CHECKPOINTS removed)."""
    if run.tracker.update(row[run.monitor], epoch):
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        run.save("best", epoch, row, run.best_state)
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(row["val_loss"] if run.has_val else row["train_eval_loss"])
    elif run.scheduler is not None:
        run.scheduler.step()
    every = run.spec.training.checkpoint_every
    if run.folder is None or not every or epoch % every:
        return
    loop_state = {
        "tracker": run.tracker.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler else None,
        "last_row": row,
    }
    run.save(f"epoch-{epoch}", epoch, row, resume=loop_state)
    for old in ckpt.epoch_checkpoints(run.folder)[:-KEEP_EPOCH_CHECKPOINTS]:
        ckpt.remove_checkpoint(run.folder, f"epoch-{old}")
        run.cb.on_checkpoint_removed(f"epoch-{old}")


def _best_checkpoint_test(run: _Run, test: dict[str, Any], restored: bool) -> dict[str, Any] | None:
    """The test metrics of the `best` checkpoint's weights: those just measured when they were
    restored, else measured on them and the model's own weights put back (the caller keeps them)."""
    if not test or run.best_state is None:
        return None
    if restored:
        return test
    current = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    run.model.load_state_dict(run.best_state)
    try:
        return run.test_metrics()
    finally:
        run.model.load_state_dict(current)


def _finish(
    run: _Run, status: Literal["succeeded", "cancelled"], completed: int, epoch: int, stopped_early: bool
) -> FitResult:
    """Restore the best weights if asked, test, write `final` and say what happened."""
    es = run.spec.training.early_stopping
    restore = status == "succeeded" and es is not None and es.restore_best
    if restore and run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    test = run.test_metrics()
    # the scalars with the checkpoint (its metrics row); the per-class report with the result
    final_metrics = {
        **(run.last_row or {}),
        **{k: v for k, v in test.items() if not isinstance(v, dict | list)},
    }
    if restore and run.tracker.best_epoch is not None:
        final_metrics["restored_best_epoch"] = run.tracker.best_epoch
    if status == "cancelled" and completed < epoch:
        final_metrics["interrupted_in_epoch"] = epoch
    run.save("final", completed, final_metrics)
    best_test = _best_checkpoint_test(run, test, restored=restore)
    l2n, sparsity = weight_stats(run.in_scope)
    return FitResult(
        status=status,
        epochs_completed=max(completed, 0),
        best_epoch=run.tracker.best_epoch,
        stopped_early=stopped_early,
        test_metrics={k: v for k, v in test.items() if k.startswith("test_")},
        test_report={k: v for k, v in test.items() if not k.startswith("test_")},
        best_checkpoint_metrics=best_test,
        weight_l2_norm=l2n,
        weight_sparsity=sparsity,
        parameters=parameter_count(run.plan),
        resumed_from_epoch=run.resumed_from,
        model=run.model,
    )
