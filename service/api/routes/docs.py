"""The API's docs, /docs (Swagger UI) and /redoc (ReDoc), from files that ship in
service/api/static (Swagger UI 5.35.0, Apache-2.0; ReDoc 2.5.4, MIT; their licences beside them),
not from a CDN: they load on a machine without internet, as most training clusters are."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="regtrain - Swagger UI",
        swagger_js_url=f"{root}/static/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/static/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/swagger-ui-favicon.png",
        oauth2_redirect_url=None,
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="regtrain - ReDoc",
        redoc_js_url=f"{root}/static/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/swagger-ui-favicon.png",
        with_google_fonts=False,
    )
