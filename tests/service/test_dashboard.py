"""The dashboard: a static page at /, /jobs/{id}, /compare and /sweeps/{id}, with its script and
chart library."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_the_page_and_everything_it_loads_are_served(client: TestClient) -> None:
    for path in ("/", "/jobs/some-id", "/compare?ids=a,b", "/sweeps/some-id"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/uPlot.iife.min.js", "/static/uPlot.min.css", "/static/dashboard.js"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    script = client.get("/static/dashboard.js").text
    # It draws from the public API only.
    assert "/v1/jobs?limit=" in script and "/metrics`" in script
    assert "/v1/sweeps?limit=" in script and "/v1/sweeps/${id}" in script
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/jobs/{job_id}", "/compare", "/sweeps/{sweep_id}"} & set(paths)


def test_the_pages_have_the_parts_their_script_fills_in(client: TestClient) -> None:
    page = client.get("/").text
    script = client.get("/static/dashboard.js").text
    for part in ("list", "compare", "sweeps", "compare-charts", "sweep-chart", "trials"):
        assert f'id="{part}"' in page and f'$("{part}")' in script, part
    # the routes the script tells apart, and the compare link it builds from the ticked jobs
    assert "/compare?ids=" in script and "showCompare" in script and "showSweep" in script


def test_unknown_dashboard_paths_are_still_404(client: TestClient) -> None:
    assert client.get("/sweeps").status_code == 404
    assert client.get("/compare/extra").status_code == 404


def test_the_pages_allow_no_inline_or_foreign_script_and_no_framing(client: TestClient) -> None:
    # The browser test (tests/integration/test_dashboard_browser.py) draws every page under this
    # policy, so a page that needed more would show it there.
    for path in ("/", "/jobs/some-id", "/sweeps/some-id"):
        headers = client.get(path).headers
        policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
        assert policy["script-src"] == "'self'" and policy["frame-ancestors"] == "'none'", path
        assert policy["object-src"] == "'none'" and headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script would be blocked"
    assert not re.search(r"\son[a-z]+=", page), "an inline handler would be blocked"


def test_the_workers_page_reads_the_fleet_from_the_public_api(client: TestClient) -> None:
    page = client.get("/workers")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    script = client.get("/static/dashboard.js").text
    assert '"/v1/workers"' in script and "showWorkers" in script
    for part in ("fleet", "workers", "workers-note"):
        assert f'id="{part}"' in page.text and f'$("{part}")' in script, part
    assert 'href="/workers"' in client.get("/").text
    assert "/workers" not in client.get("/openapi.json").json()["paths"]


def test_the_job_page_has_the_parts_of_its_classification_report(client: TestClient) -> None:
    """A classification job's page draws its test confusion matrix and per-class table (the
    browser test draws it: tests/integration/test_dashboard_browser.py)."""
    page = client.get("/jobs/some-id").text
    script = client.get("/static/dashboard.js").text
    for part in ("report", "report-tables", "report-note"):
        assert f'id="{part}"' in page and f'$("{part}")' in script, part
    assert "confusion_matrix" in script and "per_class" in script and "best_checkpoint_metrics" in script
    assert "innerHTML" not in script  # text goes in through textContent only


def test_the_sweep_page_has_the_parts_its_search_views_fill_in(client: TestClient) -> None:
    """sweep_search.js draws the search (parallel coordinates, a slice plot per field, the
    importance bars) into parts of the page, before dashboard.js calls it; it writes the
    tenant's text (field names, choices) as text nodes only, never as markup."""
    page = client.get("/sweeps/some-id").text
    search = client.get("/static/sweep_search.js").text
    script = client.get("/static/dashboard.js").text
    parts = ("sweep-parallel", "parallel-note", "sweep-slices", "sweep-importance", "importance-note")
    for part in parts:
        assert f'id="{part}"' in page and f'$("{part}")' in search, part
    assert page.index("/static/sweep_search.js") < page.index("/static/dashboard.js")
    assert "searchViews(sw, metric)" in script and "function searchViews" in search
    assert "sw.param_importances" in search
    for js in (search, script):
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
    assert "createElementNS(SVG_NS" in search
