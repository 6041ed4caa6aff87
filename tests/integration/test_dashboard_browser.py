"""The dashboard in a real browser: headless Chromium (Debian's, installed by .ci/run) loads
/jobs/{id} of a live server and draws the job's loss and validation curves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from live_service import Service
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BLUE, RED = (0x09, 0x69, 0xDA), (0xCF, 0x22, 0x2E)  # the first two series colours of dashboard.js


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_job_page_draws_its_curves(service: Service, tmp_path: Path) -> None:
    if service.backend != "embedded":
        pytest.skip("one backend is enough for the page")
    spec = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [32]}, "training": {"epochs": 6}}
    job = service.wait(service.submit(spec)["id"])
    shot = tmp_path / "job.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,900",
         "--virtual-time-budget=8000", f"--screenshot={shot}", f"{service.url}/jobs/{job['id']}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = list(Image.open(shot).convert("RGB").getdata())
    # train_loss (blue) and val_loss (red) are drawn as lines: hundreds of pixels each
    assert sum(_near(p, BLUE) for p in pixels) > 300
    assert sum(_near(p, RED) for p in pixels) > 300
