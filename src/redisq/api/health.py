"""Health: whether the store answers (no API token needed; see security.OPEN_ROUTES). On a
Redis Cluster every master is listed, ``"up"`` or why not; any master down is a 503 (the
workers whose slots it owns cannot be served)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import UnavailableError
from .http import coordinator_of


async def health(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    try:
        masters = await coordinator.engine.ping()
    except UnavailableError as e:
        return JSONResponse({"redis": "down", "error": e.message}, status_code=503)
    if not coordinator.cluster:
        return JSONResponse({"redis": "up", "store": "embedded" if coordinator.embedded else "redis"})
    down = {name: why for name, why in masters.items() if why is not None}
    body = {"redis": "down" if down else "up", "store": "cluster",
            "masters": {name: "up" if why is None else f"down: {why}" for name, why in masters.items()}}
    if down:
        body["error"] = "redis cluster masters unavailable: " + ", ".join(down)
    return JSONResponse(body, status_code=503 if down else 200)


routes = [
    Route("/health", health, methods=["GET"]),
]
