"""A GPU worker (`regtrain worker --gpu 0`) takes cuda jobs from the gpu queue and trains them on
the GPU. Skipped where no CUDA device is present (run it on a GPU host)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_service import Service, base_env

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)


@pytest.fixture(scope="module")
def gpu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("regtrain-gpu")
    svc = Service("gpu", base_env(root / "data"), root, worker_args=["--gpu", "0"])
    yield svc
    svc.close()


def test_a_cuda_job_trains_on_the_gpu_worker(gpu_service: Service) -> None:
    spec = {
        "dataset": {"name": "digits"},
        "model": {"type": "cnn", "channels": [8, 16], "hidden": [32], "dropout": 0.3},
        "regularization": {"l2": 0.0001},
        "training": {"epochs": 3, "device": "cuda"},
    }
    checked = gpu_service.http.post("/v1/jobs:validate", json=spec).json()
    assert checked["queue"] == "gpu"
    first = gpu_service.wait(gpu_service.submit(spec)["id"])
    assert first["status"] == "succeeded", first["error"]
    assert first["result"]["environment"]["device"] == torch.cuda.get_device_name(0)
    # A second job on the same long-lived worker process: memory was handed back in between.
    second = gpu_service.wait(gpu_service.submit({**spec, "name": "again"})["id"])
    assert second["status"] == "succeeded", second["error"]
