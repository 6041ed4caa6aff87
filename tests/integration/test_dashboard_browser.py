"""The dashboard in a real browser: headless Chromium (Debian's, installed by .ci/run), offline,
loads pages of a live server and draws them: a job's loss and validation curves (/jobs/{id}), two
jobs' curves overlaid (/compare?ids=a,b), and a sweep's score against λ (/sweeps/{id})."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, OFFLINE, browse, needs_chromium
from live_service import FINISHED, Service
from PIL import Image

BLUE, RED = (0x09, 0x69, 0xDA), (0xCF, 0x22, 0x2E)  # the first two series colours of dashboard.js
SMALL = {"dataset": {"name": "digits"}, "model": {"type": "mlp", "hidden": [16]}, "training": {"epochs": 3}}


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


_browse = browse  # (the name these tests have always used)


def _count(shot: Path, colour: tuple[int, int, int]) -> int:
    rgb = Image.open(shot).convert("RGB").tobytes()
    return sum(_near(rgb[i : i + 3], colour) for i in range(0, len(rgb), 3))


def _embedded_only(service: Service) -> None:
    if service.backend != "embedded":
        pytest.skip("one backend is enough for the page")


JOB_CHARTS = ["loss", "metric", "gap", "penalty", "weight_l2_norm", "weight_sparsity", "lr"]


def _charts(dom: str) -> dict[str, list[str]]:
    """The charts drawn (by name) and the epoch ticks each drew."""
    found = re.findall(r'<div id="chart-([a-z0-9_]+)" data-chart="[^"]*"(?: data-xticks="([^"]*)")?', dom)
    return {name: ticks.split(",") if ticks else [] for name, ticks in found}


@needs_chromium
def test_the_job_page_draws_its_curves(service: Service, tmp_path: Path) -> None:
    _embedded_only(service)
    spec = {
        "name": "browser-l1-l2",
        "dataset": {"name": "digits"},
        "model": {"type": "mlp", "hidden": [32]},
        "regularization": {"l1": 0.001, "l1_mode": "proximal", "l2": 0.001},
        "training": {"epochs": 6},
    }
    job = service.wait(service.submit(spec)["id"])
    shot = tmp_path / "job.png"
    _browse(f"{service.url}/jobs/{job['id']}", tmp_path, shot, size="1280,1300")
    # train_loss (blue) and val_loss (red) are drawn as lines, as are the other charts' first
    # series (blue): hundreds of pixels each
    assert _count(shot, BLUE) > 1000
    assert _count(shot, RED) > 300
    dom = _browse(f"{service.url}/jobs/{job['id']}", tmp_path)
    charts = _charts(dom)
    assert list(charts) == JOB_CHARTS and 'data-charts="7"' in dom
    for name, ticks in charts.items():  # whole epochs only, never 1.5
        assert ticks and all(t.isdigit() and 1 <= int(t) <= 6 for t in ticks), (name, ticks)
    # the legends show the latest epoch's values, not uPlot's "--" until hovered
    values = re.findall(r'<td class="u-value">([^<]*)</td>', dom)
    assert values and "--" not in values
    last = service.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"][-1]
    assert "6" in values and f"{last['weight_l2_norm']:.4f}" in values
    assert "l1=0.001, l2=0.001" in dom


@needs_chromium
def test_the_job_page_draws_the_confusion_matrix(service: Service, tmp_path: Path) -> None:
    """A classification job's page: its test confusion matrix (rows true, columns predicted, in
    the order of `classes`), per-class precision, recall, F1 and support, and macro F1 beside the
    best checkpoint's."""
    _embedded_only(service)
    spec = {
        **SMALL,
        "name": "browser-confusion",
        "model": {"type": "mlp", "hidden": [32]},
        "training": {"epochs": 15},
    }
    job = service.wait(service.submit(spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    m = job["result"]["metrics"]
    url = f"{service.url}/jobs/{job['id']}"
    dom = _browse(url, tmp_path)
    total = sum(map(sum, m["confusion_matrix"]))
    assert f'class="confusion" data-classes="10" data-total="{total}"' in dom
    table = dom[dom.index('class="confusion"') : dom.index('class="per-class"')]
    cells = [int(v) for v in re.findall(r'<td title="[^"]*"[^>]*>(\d+)</td>', table)]
    assert cells == [n for row in m["confusion_matrix"] for n in row]  # row by row, as the API
    assert f"macro F1 {m['macro_f1']:.4f}" in dom
    assert f"best checkpoint: macro F1 {job['result']['best_checkpoint_metrics']['macro_f1']:.4f}" in dom
    for label, r in m["per_class"].items():
        assert f"<td>{label}</td><td>{r['precision']:.4f}</td><td>{r['recall']:.4f}</td>" in dom
    assert _console_errors(url, tmp_path) == []
    shot = tmp_path / "job-confusion.png"
    _browse(url, tmp_path, shot, size="1280,1900")
    assert _count(shot, BLUE) > 1000  # the curves and the matrix's diagonal
    copy = os.environ.get("REGTRAIN_JOB_PAGE_SHOT")  # where a person wants to look at it
    if copy:
        shutil.copy(shot, copy)


@needs_chromium
def test_class_labels_on_the_job_page_are_text_never_markup(service: Service, tmp_path: Path) -> None:
    """A class label is whatever the uploaded file says: the confusion matrix and per-class table
    write it as text (textContent), so a label that looks like markup is shown, not run."""
    _embedded_only(service)
    hostile = ['<img src=x onerror="document.title=1">', "<b>bold</b>"]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["a", "b", "label"])
    writer.writerows([i % 7, (i * 3) % 5, hostile[i % 2]] for i in range(60))
    body = text.getvalue().encode()
    r = service.http.post("/v1/datasets", files={"file": ("labels.csv", body)}, data={"target": "label"})
    assert r.status_code == 201, r.text
    spec = {
        "dataset": {"id": r.json()["id"]},
        "model": {"type": "mlp", "hidden": [4]},
        "training": {"epochs": 1},
    }
    job = service.wait(service.submit(spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    url = f"{service.url}/jobs/{job['id']}"
    dom = _browse(url, tmp_path)
    assert 'class="confusion" data-classes="2"' in dom
    assert "&lt;img src=x onerror=" in dom and "&lt;b&gt;bold&lt;/b&gt;" in dom
    assert "<img src" not in dom and "<b>bold" not in dom
    assert _console_errors(url, tmp_path) == []


@needs_chromium
def test_the_compare_page_overlays_two_jobs(service: Service, tmp_path: Path) -> None:
    _embedded_only(service)
    ids = [
        service.submit({**SMALL, "name": "cmp-dropout", "model": {**SMALL["model"], "dropout": 0.5}})["id"],
        service.submit({**SMALL, "name": "cmp-none"})["id"],
    ]
    for job_id in ids:
        service.wait(job_id)
    url = f"{service.url}/compare?ids={','.join(ids)}"
    shot = tmp_path / "compare.png"
    _browse(url, tmp_path, shot, size="1280,1100")
    # one colour per job, in the order of ids: each draws a line on four charts
    assert _count(shot, BLUE) > 300
    assert _count(shot, RED) > 300
    dom = _browse(url, tmp_path)
    assert 'data-series="2"' in dom and "cmp-dropout" in dom and "cmp-none" in dom
    assert "dropout=0.5" in dom and "unregularized" in dom  # what sets each job apart
    # val_loss, train_loss, val_accuracy, generalization gap, penalty, weight L2 norm, sparsity, lr
    charts = _charts(dom)
    assert list(charts) == ["val_loss", "train_loss", "metric", "generalization_gap", "penalty",
                            "weight_l2_norm", "weight_sparsity", "lr"]  # fmt: skip
    assert dom.count('class="uplot') == 8 and all(t.isdigit() for ts in charts.values() for t in ts)
    values = re.findall(r'<td class="u-value">([^<]*)</td>', dom)
    assert values and "--" not in values


def _wait_sweep(service: Service, sweep_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sweep = service.http.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] in FINISHED:
            return sweep
        if time.monotonic() > deadline:
            pytest.fail(
                f"sweep {sweep_id} still {sweep['status']} after {timeout} s\n{service.log('worker0')}"
            )
        time.sleep(0.3)


@needs_chromium
def test_the_sweep_page_plots_score_against_lambda(service: Service, tmp_path: Path) -> None:
    _embedded_only(service)
    body = {
        "name": "browser-l2",
        "base": {**SMALL, "training": {"epochs": 2}},
        "grid": {"regularization.l2": [0, 0.001, 0.1]},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "cv_folds": 2,
    }
    r = service.http.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    sweep = _wait_sweep(service, r.json()["id"])
    assert sweep["status"] == "succeeded", sweep["error"]
    url = f"{service.url}/sweeps/{sweep['id']}"
    shot = tmp_path / "sweep.png"
    _browse(url, tmp_path, shot)
    # three trials drawn as blue points (λ = 0 a tenth left of 0.001), joined by a line, with
    # bars over their fold scores
    assert _count(shot, BLUE) > 150
    dom = _browse(url, tmp_path)
    assert 'data-points="3"' in dom
    assert 'class="best"' in dom and f'href="/jobs/{sweep["best"]["job_id"]}"' in dom
    assert "drawn at 1e-4" in dom and "labelled 0" in dom
    values = re.findall(r'<td class="u-value">([^<]*)</td>', dom)  # the best trial's, not "--"
    assert "--" not in values and f"{sweep['best']['score']:.4f}" in values


@needs_chromium
def test_the_workers_page_lists_the_fleet(service: Service, tmp_path: Path) -> None:
    _embedded_only(service)
    workers = []
    deadline = time.monotonic() + 60
    while not workers and time.monotonic() < deadline:  # the worker's first heartbeat
        workers = service.http.get("/v1/workers").json()["workers"]
        time.sleep(0.2)
    assert workers, "no worker row"
    dom = _browse(f"{service.url}/workers", tmp_path)
    assert f'data-workers="{len(workers)}"' in dom
    for w in workers:
        assert f"<td>{w['name']}</td>" in dom and w["queues"][0] in dom
    assert "REGTRAIN_LEASE_SECONDS" in dom and 'id="error"></p>' in dom


def _console_errors(url: str, tmp_path: Path) -> list[str]:
    """What the page's scripts said went wrong: Chromium's console messages (logged to stderr)
    that are errors, uncaught exceptions and CSP refusals among them."""
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *OFFLINE,
         f"--user-data-dir={tmp_path / 'console-profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=8000", "--dump-dom", url],
        check=True, capture_output=True, timeout=120, text=True,
    )  # fmt: skip
    return [
        line
        for line in out.stderr.splitlines()
        if "CONSOLE" in line and re.search(r"Uncaught|Error|Refused|Content Security Policy", line)
    ]


SEARCH_FIELDS = ["regularization.l1", "regularization.l2", "model.dropout"]


@needs_chromium
def test_the_sweep_page_shows_every_swept_field_of_a_search(service: Service, tmp_path: Path) -> None:
    """A finished search over l1, l2 and dropout: a parallel-coordinates view with an axis per
    field (log where the space is) and one for the objective, a slice plot per field, the
    worker's importance bars, per-fold epoch curves, and no console error."""
    _embedded_only(service)
    body = {
        "name": "browser-search",
        "base": {**SMALL, "training": {"epochs": 3}},
        "space": {
            "regularization.l1": {"log_uniform": [1e-6, 1e-2]},
            "regularization.l2": {"log_uniform": [1e-6, 1e-1]},
            "model.dropout": {"uniform": [0.0, 0.5]},
        },
        "sampler": "random",
        "trials": 8,
        "parallel": 2,
        "pruner": {"type": "median", "grace_epochs": 2, "min_trials": 4},  # the first 4 finish
        "cv_folds": 2,
        "objective": {"metric": "val_accuracy", "mode": "max"},
    }
    r = service.http.post("/v1/sweeps", json=body)
    assert r.status_code == 202, r.text
    sweep = _wait_sweep(service, r.json()["id"], timeout=240)
    assert sweep["status"] == "succeeded", sweep["error"]
    importances = sweep["param_importances"]
    assert importances is not None and set(importances) == set(SEARCH_FIELDS)
    assert abs(sum(importances.values()) - 1) < 1e-6
    url = f"{service.url}/sweeps/{sweep['id']}"
    dom = _browse(url, tmp_path)
    scored = sum(
        1 for t in sweep["trials"] if isinstance(t["score"], (int, float)) and t["status"] == "succeeded"
    )
    assert 'data-axes="3"' in dom
    for field in SEARCH_FIELDS:
        scale = "linear" if field == "model.dropout" else "log"
        assert f'class="pc-axis" font-size="11" fill="#444" data-param="{field}" data-scale="{scale}"' in dom
        assert f'data-slice="{field}" data-scale="{scale}" data-points="{scored}"' in dom
        assert f'<g data-param="{field}">' in dom  # its importance bar
    assert 'data-slices="3"' in dom and 'data-bars="3"' in dom
    for t in sweep["trials"]:  # pruned trials dashed grey, failed dotted red, the rest solid
        line = re.search(rf'<polyline [^>]*data-trial="{t["index"]}"', dom)
        assert (line is not None) == (t["status"] in {"succeeded", "pruned", "failed"})
        if t["status"] == "pruned":
            assert 'stroke="#8c959f"' in line.group(0) and 'stroke-dasharray="6 4"' in line.group(0)
    assert dom.count("<polyline") == len(
        [t for t in sweep["trials"] if t["status"] in {"succeeded", "pruned", "failed"}]
    )
    # the epochs per fold: two charts of epochs 1..3, never "epoch 6" of a 3-epoch trial
    assert 'data-folds="2"' in dom
    ticks = re.findall(r'<div data-fold="(\d)" data-xticks="([^"]*)"', dom)
    assert [k for k, _ in ticks] == ["1", "2"]
    assert all(int(float(v)) <= 3 for _, xs in ticks for v in xs.split(",") if v), ticks
    assert "fold 2 of 2: val_accuracy per epoch" in dom and 'id="error"></p>' in dom
    assert _console_errors(url, tmp_path) == []
    shot = tmp_path / "search.png"
    _browse(url, tmp_path, shot, size="1280,2200")
    copy = os.environ.get("SEARCH_PAGE_SHOT")  # where a person wants to look at it
    if copy:
        shutil.copy(shot, copy)
