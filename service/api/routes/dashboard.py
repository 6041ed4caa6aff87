"""A small dashboard: the jobs and sweeps lists at `/`, a job's loss curves at `/jobs/{id}`,
several jobs' curves overlaid at `/compare?ids=a,b`, a sweep's objective against λ, and every swept
field (parallel coordinates, slices, importances: static/sweep_search.js) at `/sweeps/{id}`, and
the workers at `/workers`.

Static files only (service/api/static: one page, its script and uPlot, MIT); the page reads the
same /v1 API as any client, with the API key the user types in when the server has keys."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

# The page shows text other tenants' users never wrote but its own tenant did (job names, specs,
# errors); the script writes it with textContent only, and these headers keep a slip from
# becoming a script: no inline or foreign script runs, no other site frames the page (the API
# key typed into it stays out of reach), and no response is sniffed into another type.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=STATIC)


@router.get("/")
@router.get("/jobs/{job_id}")
@router.get("/compare")
@router.get("/sweeps/{sweep_id}")
@router.get("/workers")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)
