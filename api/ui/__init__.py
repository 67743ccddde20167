"""The dashboard at ``/ui``: one page of plain ES modules and CSS shipped in this package (``static/``).

The page talks to the node's own API (``/api/...``, ``/metrics``, ``/api/ws``) from the browser; the
server only hands out the files. Only the files of ``static/`` are served, each with its media type
and a Content-Security-Policy that lets the page load nothing from elsewhere and run no inline
script. None of these routes is in the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
FILES = {path.name: path for path in STATIC.iterdir() if path.is_file() and path.suffix in MEDIA_TYPES}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    """The page lives at ``/ui/`` so that its assets resolve next to it (a relative redirect, which
    also holds behind a proxy that serves Flux under a path)."""
    return RedirectResponse("ui/", status_code=308)


@router.get("/ui/")
async def ui_page() -> FileResponse:
    """The page."""
    return await ui_file("index.html")


@router.get("/ui/{name}")
async def ui_file(name: str) -> FileResponse:
    """One of the page's files."""
    path = FILES.get(name)
    if path is None:
        raise ApiError(404, "Not Found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
