"""/metrics as a Prometheus server scrapes it, from a fleet of its own (PostgreSQL, Redis with a
queue prefix, a worker on the cpu queue only), so that every count is exact: each status and
each queue has a sample from the first scrape on, 0 included, and after a DELETE the jobs gauge
and the duration histogram each count what their help text says they count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_service import Service, base_env, fleet_backend
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

TINY = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [8]},
        "training": {"epochs": 1, "batch_size": 128}}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("metrics")
    env = base_env(root / "data")
    with fleet_backend() as backend:
        env.update(backend)
        svc = Service("fleet", env, root, worker_args=["--queues", "cpu"])
        try:
            yield svc
        finally:
            svc.close()


def scrape(svc: Service) -> dict[str, Metric]:
    r = svc.http.get("/metrics")
    assert r.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def jobs(families: dict[str, Metric]) -> dict[str, float]:
    return {s.labels["status"]: s.value for s in families["regtrain_jobs"].samples}


def depth(families: dict[str, Metric]) -> dict[str, float]:
    return {s.labels["queue"]: s.value for s in families["regtrain_queue_depth"].samples}


def durations(families: dict[str, Metric]) -> dict[str, float]:
    """Final status → the histogram's count."""
    samples = families["regtrain_job_duration_seconds"].samples
    return {s.labels["status"]: s.value for s in samples if s.name.endswith("_count")}


def test_every_status_and_queue_reads_zero_before_any_job(fleet: Service) -> None:
    prefix = fleet.env["REGTRAIN_QUEUE_PREFIX"]
    families = scrape(fleet)
    assert jobs(families) == dict.fromkeys(["queued", "running", "succeeded", "failed", "cancelled"], 0)
    assert depth(families) == {f"{prefix}cpu": 0, f"{prefix}gpu": 0}
    assert durations(families) == {"succeeded": 0, "failed": 0, "cancelled": 0}


def test_gauge_and_histogram_after_deletes_count_what_their_help_says(fleet: Service) -> None:
    prefix = fleet.env["REGTRAIN_QUEUE_PREFIX"]
    done = [fleet.wait(fleet.submit({**TINY, "name": f"m{i}"})["id"]) for i in range(3)]
    assert {j["status"] for j in done} == {"succeeded"}
    # a cuda job waits on the gpu queue: this fleet has no worker there
    waiting = fleet.submit({**TINY, "name": "waits", "training": {**TINY["training"], "device": "cuda"}})
    families = scrape(fleet)
    assert depth(families) == {f"{prefix}cpu": 0, f"{prefix}gpu": 1}
    assert jobs(families)["succeeded"] == 3 and jobs(families)["queued"] == 1
    assert durations(families)["succeeded"] == 3

    for job in done[:2]:
        assert fleet.http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert fleet.http.post(f"/v1/jobs/{waiting['id']}/cancel").status_code == 202
    families = scrape(fleet)
    # The gauge: the jobs in the store now. The histogram: every job that finished.
    assert jobs(families) == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 1}
    assert durations(families) == {"succeeded": 3, "failed": 0, "cancelled": 0}  # cancelled unstarted
    assert depth(families) == {f"{prefix}cpu": 0, f"{prefix}gpu": 0}
    assert "deleted job is no longer counted" in families["regtrain_jobs"].documentation
    assert "deleted ones included" in families["regtrain_job_duration_seconds"].documentation
