"""A small dashboard: the jobs and sweeps lists at `/`, a job's loss curves at `/jobs/{id}`,
several jobs' curves overlaid at `/compare?ids=a,b`, and a sweep's objective against λ at
`/sweeps/{id}`.

Static files only (service/api/static: one page, its script and uPlot, MIT); the page reads the
same /v1 API as any client, with the API key the user types in when the server has keys."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=STATIC)


@router.get("/")
@router.get("/jobs/{job_id}")
@router.get("/compare")
@router.get("/sweeps/{sweep_id}")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
