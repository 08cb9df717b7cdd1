"""Metrics: ``GET /metrics`` in Prometheus' text format (metrics.py names the series). The
worker states are read from Redis at each scrape; while Redis cannot be read, the answer
holds this process's series only. Needs an API token unless ``metrics_public``."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..engine import WorkerState
from ..errors import UnavailableError
from ..metrics import CONTENT_TYPE
from .http import coordinator_of

PUBLIC_ROUTE = ("GET", re.compile(r"^/metrics\Z"))  # open with metrics_public (security.ApiTokenMiddleware)


async def metrics(request: Request) -> Response:
    coordinator = coordinator_of(request)
    states: list[WorkerState] = []
    try:
        states = [await engine.state() for engine in coordinator.engine.workers.values()]
    except UnavailableError:  # redisq_redis_up says so; the counters still answer
        states = []
    in_flight = coordinator.dispatcher.in_flight if coordinator.dispatcher is not None else 0
    return Response(coordinator.signals.metrics.render(states, in_flight), media_type=CONTENT_TYPE)


routes = [
    Route("/metrics", metrics, methods=["GET"]),
]
