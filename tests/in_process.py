"""A coordinator's API served in this process, for tests that call it over httpx without a
socket (``httpx.ASGITransport``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from redisq.api import create_app
from redisq.coordinator import Coordinator


@contextlib.asynccontextmanager
async def serving(coordinator: Coordinator, dispatch: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """The coordinator started, and a client of its API; stopped at the end. A crash shows
    up as the 500 a caller would get (``raise_app_exceptions=False``)."""
    await coordinator.start(dispatch=dispatch)
    try:
        transport = httpx.ASGITransport(app=create_app(coordinator, manage_lifecycle=False),
                                        raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://redisq.test") as client:
            yield client
    finally:
        await coordinator.stop()
