"""Health: whether the store answers (no API token needed; see security.OPEN_ROUTES)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import UnavailableError
from .http import coordinator_of


async def health(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    try:
        await coordinator.engine.ping()
    except UnavailableError as e:
        return JSONResponse({"redis": "down", "error": e.message}, status_code=503)
    return JSONResponse({"redis": "up", "store": "embedded" if coordinator.embedded else "redis"})


routes = [
    Route("/health", health, methods=["GET"]),
]
