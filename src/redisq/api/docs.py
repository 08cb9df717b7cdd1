"""``GET /docs``: the OpenAPI document rendered for a browser by Swagger UI, whose files ship
in the package (``static/``), so the page works on a coordinator without internet.

Every URL on the page is relative (``docs/assets/...``, ``openapi.json``), so it works
behind a proxy that serves the coordinator under a prefix. The page, its assets and the
document need no API token (security.OPEN_ROUTES): they hold no job data, and a browser
cannot send a bearer token to load a page; Swagger UI's Authorize button takes one for the
calls it tries.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/docs/assets"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>redisq API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui/swagger-ui-bundle.js"></script>
<script src="docs/assets/docs.js"></script>
</body>
</html>
"""


class Assets(StaticFiles):
    """The page's files; a method other than GET or HEAD is a 405 whose ``Allow`` says so
    (StaticFiles' own names none, and app.allowed_methods knows only Routes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        return await super().get_response(path, scope)


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


routes = [
    Route("/docs", docs, methods=["GET"]),
    Mount(ASSETS_PATH, app=Assets(directory=STATIC_DIR), name="docs-assets"),
]
