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

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

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


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


routes = [
    Route("/docs", docs, methods=["GET"]),
    Mount(ASSETS_PATH, app=StaticFiles(directory=STATIC_DIR), name="docs-assets"),
]
