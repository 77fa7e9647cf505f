"""The inspector page at /ui/: three static files, served with a strict Content-Security-Policy.

The page is plain HTML, CSS and JavaScript (no build step) and talks to the public API with the
user's key, so it has no power of its own: the files are public, like the OpenAPI document.
``TRIGGERS_UI=false`` leaves the routes out.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse, Response

FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("service.ui").joinpath("static", name).read_bytes()


def install(app: FastAPI) -> None:
    """Adds /ui (redirect) and /ui/<file> (read once, at start)."""
    router = APIRouter(include_in_schema=False)
    loaded = {path: (_read(name), media) for path, (name, media) in FILES.items()}

    @router.get("/ui")
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=308)

    @router.get("/ui/{path:path}")
    async def ui_file(path: str) -> Response:
        found = loaded.get(path)
        if found is None:
            return Response(status_code=404, headers=HEADERS)
        return Response(found[0], media_type=found[1], headers=HEADERS)

    app.include_router(router)
