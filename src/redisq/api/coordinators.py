"""The coordinators alive against this Redis (``presence.py`` keeps each one's entry)."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..model import iso_from_ms
from .http import coordinator_of


async def list_coordinators(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    _, alive = await coordinator.engine.presence.list()
    mine = json.loads(coordinator.presence.description)
    return JSONResponse({"coordinators": [
        {**entry.description, "aliveUntil": iso_from_ms(entry.until_ms), "answering": entry.description == mine}
        for entry in alive]})


routes = [
    Route("/coordinators", list_coordinators, methods=["GET"]),
]
