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
