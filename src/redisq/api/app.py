"""The Starlette app: every resource's routes, the coordinator on ``app.state``, errors as
status codes, and the coordinator's start and stop as the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from ..coordinator import Coordinator
from ..errors import RedisqError
from ..security import ApiTokenMiddleware
from . import health, jobs, receipts, schedules, workers
from .http import on_redisq_error, on_unexpected

routes: list[BaseRoute] = [*jobs.routes, *receipts.routes, *workers.routes, *health.routes, *schedules.routes]


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
                    exception_handlers={RedisqError: on_redisq_error, Exception: on_unexpected})
    app.state.coordinator = coordinator
    if coordinator.config.api_tokens:  # every route but security.OPEN_ROUTES needs a token, routes added later too
        app.add_middleware(ApiTokenMiddleware, tokens=coordinator.config.api_tokens)
    return app
