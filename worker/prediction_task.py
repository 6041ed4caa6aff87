"""The batch prediction task: a dataset scored with one of a job's checkpoints, written as CSV or
Parquet to the job's artifacts (POST /v1/jobs/{id}/predictions).

The same shape as the job task (worker/tasks.py): claim the leased row, make the data local
under the rules that admitted the job (worker/job_data.py: an upload's canonical file, or a URI
fetched within its deadline under the job's egress rule and its tenant's data-source grants),
score it in batches under the lease (the model's activations and the file's row groups are
bounded by BATCH rows, whatever the dataset's size), put the file, then write the final state
once. A failure names the dataset and ends the row `failed` with its error type and message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import ValidationError

from service.contract.batch_prediction import BatchPredictionSpec
from service.contract.dataset_kinds import kind_of
from service.contract.errors import ErrorType
from service.contract.spec import JobSpec
from service.data.datafile import DataError, load_canonical
from service.data.parsed import ParsedDataset
from service.data.uri import Stopped
from service.queue.broker import RUN_BATCH_PREDICTION_TASK
from service.store.artifacts import ArtifactMissing, Artifacts, checkpoint_key, predictions_key
from service.store.batch_predictions import BatchPredictions
from service.store.repository import Row
from worker import leased_task
from worker.celery_app import app
from worker.job_data import TimeLimitReached, local_dataset
from worker.lease import Lease
from worker.runtime import Runtime, runtime

if TYPE_CHECKING:  # torch: imported only where a process scores
    from worker.training.inference import Predictor

log = logging.getLogger("regtrain.worker")

# Rows scored (and written) at a time: 4096 rows of 784 features are 13 MB of inputs.
BATCH = 4096


class PredictionLease(Lease):
    """The lease on a batch prediction (`job_id` holds its id)."""

    def renew(self) -> bool | None:
        return BatchPredictions(self.store.engine).heartbeat(self.job_id, self.owner, self.lease_seconds)


@app.task(name=RUN_BATCH_PREDICTION_TASK)
def run_batch_prediction_task(prediction_id: str) -> None:
    execute(prediction_id, runtime())


def execute(prediction_id: str, rt: Runtime) -> None:
    from worker.training.errors import TrainingError

    rows = BatchPredictions(rt.store.engine)
    claim = leased_task.claim(rt, "batch prediction", prediction_id, rows.claim)
    if claim is None:
        return

    def finish(status: Literal["succeeded", "failed", "cancelled"], **values: Any) -> bool:
        return rows.finish(prediction_id, rt.name, status, **values)

    job = rt.store.get_job(claim.job_id)
    try:
        spec = BatchPredictionSpec.model_validate(claim.spec)
        job_spec = JobSpec.model_validate(job["spec"]) if job else None
    except ValidationError as e:
        finish("failed", error=leased_task.bad_spec(e))
        return
    checkpoint = rt.store.checkpoint(claim.job_id, spec.checkpoint)
    if job_spec is None or checkpoint is None:
        finish(
            "failed", error={"type": ErrorType.BAD_DATA, "message": f"checkpoint {spec.checkpoint!r} is gone"}
        )
        return
    ds = spec.dataset
    named = kind_of(ds).describe(ds)
    key = predictions_key(claim.job_id, prediction_id, spec.format)
    lease = leased_task.hold(rt, PredictionLease, prediction_id)

    def score() -> tuple[int, int] | None:
        """(the rows scored, the file's size), put; None when stopped (a cancel, a shutdown, a
        lost lease)."""
        with local_dataset(
            rt.artifacts,
            rt.settings,
            # the job's spec on this dataset: read as the job's data was, under its caps
            job_spec.model_copy(update={"dataset": ds}),
            tenant=claim.tenant,
            allow_private=claim.egress_private,
            should_stop=lease.should_stop,
        ) as (path, _):
            assert path is not None  # an upload or a URI: always a file
            data = load_canonical(path)
            with loaded(rt.artifacts, claim.job_id, checkpoint) as predictor:
                check_width(predictor, data, claim.job_id)
                out = rt.artifacts.cache_path(key)
                written = write_predictions(
                    predictor, data, _targets(data), out, spec.format, lease.should_stop
                )
                if written is None:
                    return None
                size = out.stat().st_size
                rt.artifacts.put(key, out, keep_copy=False)
                return written, size

    def engine() -> tuple[int, int] | None:
        try:
            return score()
        except (DataError, ArtifactMissing) as e:
            raise TrainingError(
                ErrorType.BAD_DATA, f"{named}: {str(e).removeprefix('dataset.uri: ')}"
            ) from None
        except TimeLimitReached as e:
            raise TrainingError(ErrorType.TIME_LIMIT, f"{named}: {e}") from None
        except Stopped:
            return None

    done = leased_task.run_engine(
        "batch prediction",
        prediction_id,
        lease,
        engine,
        lambda error: finish("failed", error=error),
        retry_infrastructure=True,
    )
    if done is not None:
        scored, size = done
        if not finish("succeeded", rows=scored, size_bytes=size) and rt.store.get_job(claim.job_id) is None:
            rt.artifacts.delete([key])  # its job was deleted while it ran: nothing stays behind
        return
    if lease.reason is not None:
        leased_task.stopped(
            rt,
            "batch prediction",
            prediction_id,
            lease,
            task=RUN_BATCH_PREDICTION_TASK,
            release=rows.release,
            cancel=lambda: finish("cancelled"),
        )


def check_width(predictor: Predictor, data: ParsedDataset, job_id: str) -> None:
    """DataError for a dataset of other columns than the model's (as many, of the same names
    for a CSV's or Parquet file's, in the same order)."""
    fitted = predictor.preprocessing
    want = len(fitted["columns"]) if fitted is not None else int(np.prod(predictor.input_shape))
    have = len(data.columns) if fitted is not None and data.columns is not None else data.n_features
    if have != want:
        raise DataError(f"{have} features, while the model of job {job_id} takes {want}")


def _targets(data: ParsedDataset) -> np.ndarray:
    """The dataset's own target column, as labels (classification) or values."""
    return data.classes[data.y] if data.task == "classification" else data.y


@contextmanager
def loaded(artifacts: Artifacts, job_id: str, row: Row) -> Iterator[Predictor]:
    """The checkpoint as a Predictor, its weights and sidecar held in the cache meanwhile."""
    from worker.training.inference import Predictor

    key = checkpoint_key(job_id, row["path"])
    sidecar = key.removesuffix(".safetensors") + ".json"
    with artifacts.cached(key, row["sha256"], companions=(sidecar,)) as weights:
        doc = json.loads(weights.with_name(weights.name.removesuffix(".safetensors") + ".json").read_text())
        yield Predictor(weights, doc)


def write_predictions(
    predictor: Predictor,
    data: ParsedDataset,
    targets: np.ndarray,
    out: Path,
    fmt: str,
    should_stop: Any = lambda: False,
) -> int | None:
    """Score the dataset in batches of BATCH rows into `out` (CSV or Parquet): `prediction`, `target` and,
    for classification, `p_<class>` per class in the order of the classes. The rows written, or
    None when `should_stop()` said so between two batches (the partial file removed)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from worker.training.inference import InputError

    classification = predictor.task == "classification"
    names = ["prediction", "target"] + ([f"p_{c}" for c in predictor.classes] if classification else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    writer: Any = None
    try:
        X = data.X
        for start in range(0, len(X), BATCH):
            if should_stop():
                return None
            try:
                chunk = predictor.prepare_rows(data, start, start + BATCH)
            except InputError as e:
                raise DataError(str(e).removeprefix("inputs: ")) from None
            if classification:
                labels, proba = predictor.predict_proba(chunk)
                columns = [pa.array(labels), pa.array(targets[start : start + BATCH].tolist())]
                columns += [pa.array(proba[:, i]) for i in range(proba.shape[1])]
            else:
                columns = [pa.array(predictor.predict(chunk)), pa.array(targets[start : start + BATCH])]
            table = pa.Table.from_arrays(columns, names=names)
            if writer is None:
                writer = (
                    pq.ParquetWriter(tmp, table.schema)
                    if fmt == "parquet"
                    else pa_csv.CSVWriter(tmp, table.schema)
                )
            writer.write_table(table)
        if writer is not None:
            writer.close()
            writer = None
        tmp.replace(out)
        return len(X)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
