"""`regtrain train SPEC.json --out DIR`: one job in-process, with no service.

Writes DIR/result.json and DIR/metrics.json (the documents the API serves for a job) and
DIR/checkpoints/NAME.safetensors; one progress line per epoch on stderr; exit 1 on failure,
2 on an invalid spec. Run it again on the same DIR and it resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.contract.architecture import check_feasible, known_shape
from service.contract.data_sources import SINGLE_USER
from service.contract.errors import ErrorType, SpecError
from service.contract.spec import JobSpec
from service.data.datafile import DataError
from service.settings import get_settings
from service.store.artifacts import Artifacts
from worker.job_data import local_dataset
from worker.training.errors import TrainingError
from worker.training.runner import Callbacks, run_job


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def main(spec_path: str, out_dir: str) -> int:
    try:
        raw = json.loads(Path(spec_path).read_text())
        spec = JobSpec.model_validate(raw)
        settings = get_settings()
        shape = known_shape(spec)
        if shape is not None:
            check_feasible(spec, shape, settings.max_parameters)
    except OSError as e:
        print(f"error: cannot read {spec_path}: {e.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:
        print(f"error: {spec_path} is not valid JSON: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        for err in e.errors():
            print(f"error: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    rows: list[dict[str, Any]] = (
        json.loads(metrics_path.read_text())["epochs"] if metrics_path.exists() else []
    )
    epochs = spec.training.epochs
    val_key = "val_accuracy" if (shape is None or shape.task == "classification") else "val_r2"

    def on_epoch(row: dict[str, Any]) -> None:
        rows[:] = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
        metrics_path.write_text(json.dumps({"epochs": rows}, indent=1))
        shown = [f"epoch {row['epoch']}/{epochs}", f"train_loss {_fmt(row['train_loss'])}"]
        if row.get("val_loss") is not None:
            shown += [f"val_loss {_fmt(row['val_loss'])}", f"{val_key} {_fmt(row.get(val_key))}"]
        print("  ".join(shown), file=sys.stderr, flush=True)

    started = _now()
    doc: dict[str, Any] = {"name": spec.name, "started_at": started, "spec": spec.model_dump(mode="json")}
    try:
        with ExitStack() as data:
            try:  # a dataset by URI is fetched as a worker would (an upload: from the artifact store)
                dataset_file, provenance = data.enter_context(
                    # no server: the one user's own run, under its own settings' rule
                    local_dataset(
                        Artifacts(settings),
                        settings,
                        spec,
                        tenant=SINGLE_USER,
                        allow_private=settings.admits_private_targets,
                    )
                )
            except DataError as e:
                raise TrainingError(ErrorType.BAD_DATA, str(e)) from None
            outcome = run_job(
                spec,
                out,
                Callbacks(on_epoch=on_epoch),
                datasets_dir=settings.datasets_dir,
                dataset_file=dataset_file,
                max_parameters=settings.max_parameters,
            )
        if provenance:
            outcome.result["environment"]["dataset"] = provenance
    except TrainingError as e:
        doc.update(status="failed", finished_at=_now(), result=None, error=e.to_dict())
        (out / "result.json").write_text(json.dumps(doc, indent=1))
        print(f"error ({e.type}): {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    doc.update(
        status=outcome.status,
        finished_at=_now(),
        result=outcome.result,
        error=None,
        resumed_from_epoch=outcome.resumed_from_epoch,
    )
    (out / "result.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(outcome.result["metrics"]), file=sys.stdout)
    return 0
