"""The Starlette app: every resource's routes, the coordinator on ``app.state``, errors as
status codes, and the coordinator's start and stop as the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from ..coordinator import Coordinator
from ..errors import RedisqError
from ..security import ApiTokenMiddleware
from . import coordinators, docs, events, health, jobs, limits, metrics, openapi, receipts, schedules, ui, workers
from .http import on_redisq_error, on_unexpected

routes: list[BaseRoute] = [*jobs.routes, *receipts.routes, *workers.routes, *limits.routes, *health.routes,
                           *schedules.routes, *metrics.routes, *events.routes, *coordinators.routes, *openapi.routes,
                           *docs.routes, *ui.routes]


ROUTING_ERRORS = {404: "not found", 405: "method not allowed"}


async def on_routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no route for the path, a method the route does not take) as
    JSON like every other error, with their headers (405's ``Allow``)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    headers = dict(exc.headers or {})
    message = f"{ROUTING_ERRORS.get(exc.status_code, exc.detail)}: {request.method} {request.url.path}"
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")  # a Mount's own
        message += f" (allowed: {headers['Allow']})"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods of every route for the request's path (Starlette's 405 names only the
    first route's: GET for ``/workers/{name}``, whose PATCH is another route)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


def create_app(coordinator: Coordinator, *, manage_lifecycle: bool = True) -> Starlette:
    """The API over ``coordinator``; with ``manage_lifecycle`` the app's lifespan starts and
    stops it (dispatcher and poller included)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await coordinator.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await coordinator.stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={RedisqError: on_redisq_error, HTTPException: on_routing_error,
                                        Exception: on_unexpected})
    app.state.coordinator = coordinator
    config = coordinator.config
    if config.api_tokens:  # every route but security.OPEN_ROUTES needs a token, routes added later too
        app.add_middleware(ApiTokenMiddleware, tokens=config.api_tokens, names=config.api_token_names,
                           open_routes=[metrics.PUBLIC_ROUTE] if config.metrics_public else [])
    return app
