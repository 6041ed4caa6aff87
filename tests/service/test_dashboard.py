"""The dashboard: a static page at / and /jobs/{id}, with its script and chart library."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_the_page_and_everything_it_loads_are_served(client: TestClient) -> None:
    for path in ("/", "/jobs/some-id"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/uPlot.iife.min.js", "/static/uPlot.min.css", "/static/dashboard.js"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    script = client.get("/static/dashboard.js").text
    # It draws from the public API only.
    assert "/v1/jobs?limit=" in script and "/metrics`" in script
    assert "/" not in client.get("/openapi.json").json()["paths"]
