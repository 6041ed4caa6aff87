"""The training loop, top to bottom.

Data lives on the device as tensors and is shuffled by index: no DataLoader, no per-step copy
from the host. The loss, the penalty and the first non-finite step are kept on the device and
read every CHECK_EVERY steps (with the cancel flag and the time limit), so the step itself never
waits for the host. The last partial batch of an epoch is kept, so every sample counts.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from service.contract.architecture import metric_names, parameter_count, plan_model
from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from worker.training import checkpoints as ckpt
from worker.training.data import Prepared
from worker.training.errors import TrainingError
from worker.training.hostdata import HostBatches, keep_on_host
from worker.training.models import build
from worker.training.optim import create_optimizer, create_scheduler, folds_l2
from worker.training.regularization import (
    EarlyStopping,
    Penalty,
    split_parameters,
    weight_stats,
)
from worker.training.step import Stepper

CHECK_EVERY = 16  # steps between reads of the loss, the cancel flag and the clock...
CHECK_SECONDS = 0.2  # ...when at least this long has passed since the last read
KEEP_EPOCH_CHECKPOINTS = 3
EVAL_CHUNK = 8192
GAP_SAMPLES = 4096  # train samples evaluated in eval mode each epoch, for the generalization gap


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
    test_metrics: dict[str, float]
    weight_l2_norm: float
    weight_sparsity: float
    parameters: int
    resumed_from_epoch: int | None
    model: nn.Module = field(repr=False)


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


@torch.no_grad()
def evaluate(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, task: str, target_std: float, autocast: Any
) -> dict[str, float]:
    """Loss and task metrics in eval mode (no dropout, running batch-norm statistics).
    Regression errors are reported in the target's own units, the loss in standardized units."""
    model.eval()
    device = next(model.parameters()).device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    abs_err = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(0, len(X), EVAL_CHUNK):
        # a no-op for data on the device; a chunk at a time for data kept on the host
        xb = X[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        yb = y[i : i + EVAL_CHUNK].to(device, non_blocking=True)
        with autocast:
            out = model(xb)
        out = out.float()
        if task == "classification":
            loss += nn.functional.cross_entropy(out, yb, reduction="sum")
            correct += (out.argmax(1) == yb).sum()
        else:
            err = out.squeeze(-1) - yb
            loss += err.square().sum()
            abs_err += err.abs().sum()
    n = len(X)
    mean_loss = float(loss) / n
    if task == "classification":
        return {"loss": mean_loss, "accuracy": float(correct) / n}
    mse = mean_loss * target_std**2
    var = float(y.double().var(unbiased=False)) * target_std**2
    return {
        "loss": mean_loss,
        "mse": mse,
        "mae": float(abs_err) / n * target_std,
        "r2": 1 - mse / var if var > 0 else 0.0,
    }


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
    cb = callbacks or Callbacks()
    t_start = time.monotonic()
    tr, reg = spec.training, spec.regularization
    device = resolve_device(tr.device)
    task = data.task
    has_val = len(data.X_val) > 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tr.precision == "bf16")

    monitor = (
        tr.early_stopping.monitor if tr.early_stopping else ("val_loss" if has_val else "train_eval_loss")
    )
    if monitor not in metric_names(task, has_val):
        raise TrainingError(
            ErrorType.BAD_DATA,
            f"training.early_stopping.monitor: {monitor!r} is not reported for this job; choose one of {sorted(metric_names(task, has_val))}",
        )

    # The seed fixes the initialization and dropout masks (global RNG) and the shuffles (own generator).
    torch.manual_seed(tr.seed)
    plan = plan_model(spec, data.shape)
    model = build(plan).to(device)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    in_scope, out_of_scope = split_parameters(model, reg.apply_to)
    penalty = Penalty(in_scope, reg.l1, reg.l2, reg.l1_mode, l2_in_optimizer=folds_l2(spec))
    optimizer = create_optimizer(spec, in_scope, out_of_scope, device)
    scheduler = create_scheduler(spec, optimizer)
    arrays = (data.X_train, data.y_train, data.X_val, data.y_val, data.X_test, data.y_test)
    on_host = keep_on_host(sum(a.nbytes for a in arrays), device)
    data_device = torch.device("cpu") if on_host else device
    shuffle = torch.Generator(device=data_device)  # the permutation lives where the data does
    shuffle.manual_seed(tr.seed)
    es = tr.early_stopping
    tracker = EarlyStopping(
        monitor, es.mode if es else "min", es.patience if es else 1 << 30, es.min_delta if es else 0.0
    )
    if task == "classification":
        criterion: nn.Module = nn.CrossEntropyLoss(label_smoothing=reg.label_smoothing)
    else:
        criterion = nn.MSELoss()

    def tensors(X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(X, device=data_device), torch.as_tensor(y, device=data_device)

    X, y = tensors(data.X_train, data.y_train)
    Xv, yv = tensors(data.X_val, data.y_val)
    Xt, yt = tensors(data.X_test, data.y_test)
    n, bs = len(X), min(tr.batch_size, len(X))
    steps = math.ceil(n / bs)
    gap_idx = torch.randperm(n, generator=torch.Generator().manual_seed(tr.seed))[:GAP_SAMPLES]
    Xg, yg = X[gap_idx.to(data_device)].to(device), y[gap_idx.to(data_device)].to(device)

    folder = work_dir / "checkpoints" if work_dir else None
    sidecar_base = {
        "spec": spec.model_dump(mode="json"),
        "task": task,
        "input_shape": list(data.input_shape),
        "classes": data.classes,
        "standardization": data.standardization.to_dict(),
        "seed": tr.seed,
        "data_sha256": data.sha256,
        "versions": {"torch": torch.__version__, "regtrain": ckpt.regtrain_version()},
        **(sidecar_extra or {}),
    }

    def save(
        name: str,
        epoch: int,
        metrics: dict[str, Any],
        state: dict[str, torch.Tensor] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        if folder is None:
            return
        rec = ckpt.write_weights(
            folder,
            name,
            state if state is not None else model.state_dict(),
            {**sidecar_base, "epoch": epoch, "metrics": metrics},
        )
        if resume is not None:
            # before the callback, which may put the checkpoint elsewhere (an artifact bucket):
            # what it hands over is then complete, resume state included
            ckpt.write_resume_state(folder, name, optimizer, rng_state(), resume)
        cb.on_checkpoint(rec)

    def rng_state() -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
        if device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    # Resume from the newest complete epoch checkpoint: same weights, optimizer moments, LR
    # schedule, RNG streams and early-stopping counters as the uninterrupted run.
    start_epoch, resumed_from, best_state, last_row = 1, None, None, None
    epochs_done = ckpt.epoch_checkpoints(folder) if folder else []
    if epochs_done:
        k = epochs_done[-1]
        model.load_state_dict(ckpt.read_weights(folder / f"epoch-{k}.safetensors"))  # type: ignore[operator]
        opt_state, rng, loop_state = ckpt.read_resume_state(folder, f"epoch-{k}")  # type: ignore[arg-type]
        optimizer.load_state_dict(opt_state)
        if scheduler is not None and loop_state.get("scheduler"):
            scheduler.load_state_dict(loop_state["scheduler"])
        tracker.load_state_dict(loop_state["tracker"])
        torch.set_rng_state(rng["torch"])
        shuffle.set_state(rng["shuffle"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"])
        if (folder / "best.safetensors").exists():  # type: ignore[operator]
            best_state = {
                k2: v.to(device) for k2, v in ckpt.read_weights(folder / "best.safetensors").items()
            }  # type: ignore[operator]
        last_row = loop_state.get("last_row")
        start_epoch, resumed_from = k + 1, k

    def stop_requested() -> bool:
        return bool(cb.should_stop())

    def over_time() -> bool:
        return time_limit_s is not None and time.monotonic() - t_start > time_limit_s

    def finish_interrupted(epoch: int, during: int | None = None) -> None:
        # weights part-way through epoch `during` are labelled with the last whole epoch
        save("final", epoch, {**(last_row or {}), **({"interrupted_in_epoch": during} if during else {})})

    stepper = Stepper(
        model,
        criterion,
        optimizer,
        penalty,
        regression=task == "regression",
        grad_clip_norm=tr.grad_clip_norm,
        max_norm=reg.max_norm,
        bf16=tr.precision == "bf16",
        device=device,
        batch_size=bs,
        sample_shape=tuple(X.shape[1:]),
        target_dtype=y.dtype,
        use_graph=use_cuda_graph(device),
        host_batches=HostBatches(X, y, bs, device) if on_host else None,
    )
    status: Literal["succeeded", "cancelled"] = "succeeded"
    completed = start_epoch - 1  # the last epoch trained to its end
    # a job that had stopped early before its worker was lost has nothing left to train
    stopped_early = es is not None and tracker.should_stop
    last_epoch = completed if stopped_early else tr.epochs
    epoch = completed
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.perf_counter()
        lr = stepper.lr
        model.train()
        stepper.reset()
        perm = torch.randperm(n, generator=shuffle, device=data_device)
        last_check = time.monotonic()
        for step in range(steps):
            stepper.step(X, y, perm[step * bs : (step + 1) * bs])
            # Read the device back only every CHECK_EVERY steps (and CHECK_SECONDS): each
            # read waits for the GPU to drain its queue.
            if step == steps - 1 or (
                (step + 1) % CHECK_EVERY == 0 and time.monotonic() - last_check >= CHECK_SECONDS
            ):
                last_check = time.monotonic()
                bad = int(stepper.nonfinite)
                if bad:
                    first = step + 1 - bad + 1
                    raise TrainingError(
                        ErrorType.DIVERGED,
                        f"the loss became NaN or infinite at epoch {epoch}, step {first}: lower the "
                        "learning rate, clip gradients or check the data",
                        epoch=epoch,
                        step=first,
                    )
                if stop_requested():
                    status = "cancelled"
                    break
                if over_time():
                    finish_interrupted(epoch - 1, during=epoch)
                    raise TrainingError(
                        ErrorType.TIME_LIMIT,
                        f"the time limit of {time_limit_s:g} s ran out during epoch {epoch}",
                        epoch=epoch,
                    )
        if status == "cancelled":
            break
        loss_sum, pen_sum = stepper.loss_sum, stepper.penalty_sum
        train_seconds = time.perf_counter() - t0

        data_loss = float(loss_sum) / n
        pen = float(pen_sum) / n
        gap_eval = evaluate(model, Xg, yg, task, data.standardization.target_std, autocast)
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": data_loss + pen,
            "data_loss": data_loss,
            "penalty": pen,
            "train_eval_loss": gap_eval["loss"],
        }
        if has_val:
            ev = evaluate(model, Xv, yv, task, data.standardization.target_std, autocast)
            row["val_loss"] = ev["loss"]
            row.update({f"val_{k2}": v for k2, v in ev.items() if k2 != "loss"})
            row["generalization_gap"] = ev["loss"] - gap_eval["loss"]
        else:
            row["val_loss"] = None
            row["generalization_gap"] = None
        row["weight_l2_norm"], row["weight_sparsity"] = weight_stats(in_scope)
        row["lr"] = lr
        row["seconds"] = time.perf_counter() - t0
        row["samples_per_second"] = n / train_seconds if train_seconds > 0 else None
        last_row = row
        cb.on_epoch(row)

        if tracker.update(row[monitor], epoch):
            best_state = {k2: v.detach().clone() for k2, v in model.state_dict().items()}
            save("best", epoch, row, best_state)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(row["val_loss"] if has_val else row["train_eval_loss"])
        elif scheduler is not None:
            scheduler.step()
        stopped_early = es is not None and tracker.should_stop
        completed = epoch

        if folder is not None and tr.checkpoint_every and epoch % tr.checkpoint_every == 0:
            loop_state = {
                "tracker": tracker.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "last_row": row,
            }
            save(f"epoch-{epoch}", epoch, row, resume=loop_state)
            for old in ckpt.epoch_checkpoints(folder)[:-KEEP_EPOCH_CHECKPOINTS]:
                ckpt.remove_checkpoint(folder, f"epoch-{old}")
                cb.on_checkpoint_removed(f"epoch-{old}")
        if stopped_early:
            break
        if stop_requested():
            status = "cancelled"
            break
        if over_time() and epoch < tr.epochs:
            finish_interrupted(epoch)
            raise TrainingError(
                ErrorType.TIME_LIMIT,
                f"the time limit of {time_limit_s:g} s ran out after epoch {epoch}",
                epoch=epoch,
            )
    if status == "succeeded" and es is not None and es.restore_best and best_state is not None:
        model.load_state_dict(best_state)

    test: dict[str, float] = {}
    if len(Xt):
        ev = evaluate(model, Xt, yt, task, data.standardization.target_std, autocast)
        test = {f"test_{k2}": v for k2, v in ev.items()}
    final_metrics = {**(last_row or {}), **test}
    if status == "succeeded" and es is not None and es.restore_best and tracker.best_epoch is not None:
        final_metrics["restored_best_epoch"] = tracker.best_epoch
    if status == "cancelled" and completed < epoch:
        final_metrics["interrupted_in_epoch"] = epoch
    save("final", completed, final_metrics)
    l2n, sparsity = weight_stats(in_scope)
    return FitResult(
        status=status,
        epochs_completed=max(completed, 0),
        best_epoch=tracker.best_epoch,
        stopped_early=stopped_early,
        test_metrics=test,
        weight_l2_norm=l2n,
        weight_sparsity=sparsity,
        parameters=parameter_count(plan),
        resumed_from_epoch=resumed_from,
        model=model,
    )
