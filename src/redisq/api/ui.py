"""``GET /ui``: the console, a page for operators (workers, their limits, jobs, dead jobs),
whose files ship in the package (``redisq/ui/``: HTML, CSS and plain JavaScript, no build
step), so it works on a coordinator without internet. ``GET /`` redirects there.

The page and its assets need no API token (security.OPEN_ROUTES): they hold no data, and a
browser cannot send a bearer token to load a page. Every call the page makes to the API
sends the token the operator typed (kept in the tab's sessionStorage), in a header.
Every URL is relative, so the console works behind a proxy that serves it under a prefix.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse
from starlette.routing import Mount, Route

from .docs import Assets

UI_DIR = Path(__file__).parent.parent / "ui"
ASSETS_PATH = "/ui/assets"


async def console(request: Request) -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


async def home(request: Request) -> RedirectResponse:
    return RedirectResponse("ui", status_code=307)  # relative: kept under a proxy's prefix


routes = [
    Route("/", home, methods=["GET"]),
    Route("/ui", console, methods=["GET"]),
    Mount(ASSETS_PATH, app=Assets(directory=UI_DIR), name="ui-assets"),
]
