"""Progress of a job or a sweep being waited for: a tqdm.auto bar where tqdm is installed (a
widget in Jupyter, a bar in a terminal), a plain line per epoch or per finished trial otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel

if TYPE_CHECKING:
    from regtrain_client.models import Sweep

BAR_WIDTH = 20
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def tqdm_class() -> Any:
    """tqdm.auto's tqdm, or None where tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def shown_metrics(row: dict[str, Any]) -> list[str]:
    """The losses and the validation metric: accuracy, else the first error measure."""
    shown = [k for k in ("train_loss", "val_loss") if row.get(k) is not None]
    shown += [k for k in ("val_accuracy", "val_r2", "val_mse", "val_mae") if row.get(k) is not None][:1]
    return shown


def epoch_line(row: BaseModel | dict[str, Any], epochs: int | None) -> str:
    """`epoch  3/20 [###-----] train_loss 0.4100 val_loss 0.3800 val_accuracy 0.9100`."""
    r = row.model_dump() if isinstance(row, BaseModel) else dict(row)
    epoch = int(r["epoch"])
    head = f"epoch {epoch:>{len(str(epochs or epoch))}}"
    if epochs:
        filled = round(BAR_WIDTH * min(epoch / epochs, 1.0))
        head += f"/{epochs} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}]"
    return " ".join([head, *(f"{k} {r[k]:.4f}" for k in shown_metrics(r))])


def trial_event_line(t: dict[str, Any]) -> str:
    """One line per trial event of a sweep's stream: started, an epoch, pruned, ended."""
    head = f"trial {t.get('index')}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in (t.get("params") or {}).items())
    status, p = t.get("status"), t.get("progress")
    if t.get("event") == "started":
        # the worker names where the sweep's units run: a fleet's trials start on several
        where = f" on {t['worker']}" if t.get("worker") else ""
        return f"{head} started{where} (unit {t.get('unit')}): {params}"
    if p and (t.get("event") == "epoch" or (status == "running" and not t.get("event"))):
        values = ", ".join(f"{k} {_short(v)}" for k, v in p.items() if k not in ("fold", "epoch", "step"))
        return f"{head} fold {p.get('fold', 0) + 1} epoch {p.get('epoch')}: {values}"
    if status in ("running", "queued"):
        return f"{head} {status}: {params}"
    if status == "pruned":
        return f"{head} pruned at epoch {t.get('pruned_at_epoch')}: {t.get('reason')}"
    if status == "succeeded":
        return f"{head} succeeded: score {_short(t.get('score'))} ({t.get('epochs_trained')} epochs) {params}"
    error = t.get("error") or {}
    return f"{head} {status}" + (f": {error.get('type')}: {error.get('message')}" if error else "")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def sweep_progress_line(sweep: Sweep) -> str:
    done = sum(t.status in FINISHED for t in sweep.trials)
    line = f"sweep {sweep.id} {sweep.status}: {done}/{len(sweep.trials)} trials finished"
    if sweep.best is not None and sweep.best.metrics:
        line += "; best " + ", ".join(f"{k}={v}" for k, v in sweep.best.params.items())
    return line


class EpochProgress:
    """One job's epochs: a bar of `epochs` steps with the latest metrics, or a line each."""

    def __init__(self, out: TextIO, epochs: int | None, desc: str | None = None) -> None:
        self.out = out
        self.epochs = epochs
        tqdm = tqdm_class()
        self.bar = tqdm(total=epochs, desc=desc, unit="epoch", file=out) if tqdm else None

    def update(self, row: BaseModel | dict[str, Any]) -> None:
        r = row.model_dump() if isinstance(row, BaseModel) else dict(row)
        if self.bar is None:
            print(epoch_line(r, self.epochs), file=self.out, flush=True)
            return
        self.bar.set_postfix({k: f"{r[k]:.4f}" for k in shown_metrics(r)}, refresh=False)
        self.bar.update(int(r["epoch"]) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SweepProgress:
    """A sweep's finished trials: a bar over its trials, or a line whenever one ends."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        tqdm = tqdm_class()
        self.bar = tqdm(unit="trial", file=out) if tqdm else None

    def update(self, sweep: Sweep) -> None:
        if self.bar is None:
            print(sweep_progress_line(sweep), file=self.out, flush=True)
            return
        done = sum(t.status in FINISHED for t in sweep.trials)
        self.bar.total = len(sweep.trials)
        self.bar.set_description(f"sweep {sweep.name or sweep.id} {sweep.status}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
