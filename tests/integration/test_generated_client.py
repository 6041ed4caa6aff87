"""A client nobody wrote by hand: openapi-python-client, run on the live server's /openapi.json,
generates without a warning, and its client submits a job, polls it until it has succeeded
and reads its metrics, every answer parsed into the generated models (none dropped, none
`parsed=None`)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from live_service import FINISHED, Service

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["embedded"], indirect=True)]

PACKAGE = "regtrain_openapi"  # not regtrain_client, the hand-written client's name
TINY = {"name": "generated-client", "dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [8]},
        "training": {"epochs": 2, "batch_size": 128}}  # fmt: skip


def generate(service: Service, folder: Path) -> str:
    """Run the generator as a user would on the server's schema; what it printed."""
    schema = service.http.get("/openapi.json").json()
    (folder / "openapi.json").write_text(json.dumps(schema))
    config = {"project_name_override": "regtrain-openapi", "package_name_override": PACKAGE}
    (folder / "config.json").write_text(json.dumps(config))
    bin_dir = Path(sys.executable).parent
    run = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", "openapi.json",
         "--output-path", "client", "--config", "config.json"],
        cwd=folder,
        # its post hooks run `ruff` on the code it wrote: this venv's, found on PATH
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output


@pytest.fixture
def generated(service: Service, tmp_path: Path) -> Iterator[tuple[str, dict[str, ModuleType]]]:
    output = generate(service, tmp_path)
    sys.path.insert(0, str(tmp_path / "client"))
    try:
        names = ["client", "models", *(f"api.{tag}.{op}" for tag, op in [
            ("jobs", "create_job"), ("jobs", "get_job"), ("jobs", "list_jobs"), ("jobs", "job_metrics"),
            ("jobs", "checkpoint_sidecar"),
            ("sweeps", "create_sweep"), ("sweeps", "get_sweep"), ("sweeps", "list_sweeps")])]  # fmt: skip
        yield output, {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
    finally:
        sys.path.remove(str(tmp_path / "client"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_operation_ids_are_unique_route_names(service: Service) -> None:
    """A generator names its functions after them: create_job, get_job, ..."""
    schema = service.http.get("/openapi.json").json()
    ids = Counter(op["operationId"] for path in schema["paths"].values() for op in path.values())
    assert max(ids.values()) == 1
    assert {"create_job", "get_job", "job_metrics", "create_sweep", "get_sweep"} <= set(ids)


def test_the_generated_client_submits_polls_and_reads_metrics(
    service: Service, generated: tuple[str, dict[str, ModuleType]]
) -> None:
    output, mod = generated
    # Before: "Attempted to generate duplicate models with name JobSpec", and Job, JobList,
    # Sweep and SweepList dropped with every response that returns them.
    assert "warning" not in output.lower(), output
    models = mod["models"]
    for name in ("Job", "JobList", "Sweep", "SweepList", "JobSpec", "SweepSpec", "Metrics", "Sidecar"):
        assert hasattr(models, name), name

    client = mod["client"].Client(base_url=service.url, raise_on_unexpected_status=True, timeout=30)
    with client:
        created = mod["api.jobs.create_job"].sync_detailed(client=client, body=models.JobSpec.from_dict(TINY))
        assert created.status_code == 202, created.content
        job = created.parsed
        assert isinstance(job, models.Job) and job.status == models.JobStatus.QUEUED
        assert job.spec["training"]["epochs"] == 2  # the filled spec: a free-form object

        deadline = time.monotonic() + 180
        while job.status not in FINISHED and time.monotonic() < deadline:
            time.sleep(0.3)
            job = mod["api.jobs.get_job"].sync(job.id, client=client)
            assert isinstance(job, models.Job)
        assert job.status == models.JobStatus.SUCCEEDED, job.error
        assert job.progress.epoch == 2 and job.finished_at is not None

        metrics = mod["api.jobs.job_metrics"].sync(job.id, client=client)
        assert isinstance(metrics, models.Metrics)
        assert [row["epoch"] for row in metrics.epochs] == [1, 2]
        assert all(0 <= row["val_accuracy"] <= 1 for row in metrics.epochs)
        sidecar = mod["api.jobs.checkpoint_sidecar"].sync(job.id, "best", client=client)
        assert isinstance(sidecar, models.Sidecar)
        assert sidecar.input_shape == [64] and sidecar.classes == list(range(10))

        listed = mod["api.jobs.list_jobs"].sync(client=client)
        assert isinstance(listed, models.JobList) and job.id in {j.id for j in listed.jobs}
        sweeps = mod["api.sweeps.list_sweeps"].sync(client=client)
        assert isinstance(sweeps, models.SweepList)
