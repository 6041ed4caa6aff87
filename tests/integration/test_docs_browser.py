"""/docs (Swagger UI) and /redoc (ReDoc) in headless Chromium with no network: both are drawn
from files that ship in service/api/static and list the API's operations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import browse, needs_chromium
from live_service import Service

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["embedded"], indirect=True)]


def _operations(service: Service) -> list[tuple[str, str, str]]:
    spec = service.http.get("/openapi.json").json()
    return [(method.upper(), path, op["summary"]) for path, ops in spec["paths"].items()
            for method, op in ops.items()]  # fmt: skip


def test_the_docs_pages_name_no_other_host(service: Service) -> None:
    for page in ("/docs", "/redoc"):
        html = service.http.get(page).text
        assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html), page
        assert "/static/" in html


@needs_chromium
def test_swagger_ui_lists_the_operations_offline(service: Service, tmp_path: Path) -> None:
    dom = browse(f"{service.url}/docs", tmp_path)
    assert 'class="swagger-ui' in dom
    operations = _operations(service)
    assert len(operations) > 15
    drawn = re.findall(r'data-path="([^"]+)"', dom)  # one per operation block
    for method, path, _ in operations:
        assert path in drawn, f"{method} {path} is not on /docs"
    assert dom.count('class="opblock opblock-') >= len(operations)


@needs_chromium
def test_redoc_lists_the_operations_offline(service: Service, tmp_path: Path) -> None:
    dom = browse(f"{service.url}/redoc", tmp_path, budget_ms=15000)
    for _, _, summary in _operations(service):
        assert summary in dom, f"{summary!r} is not on /redoc"
