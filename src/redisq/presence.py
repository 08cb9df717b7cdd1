"""Says, every ``ALIVE_EVERY_S``, that this coordinator is alive (``engine.presence``), so
that ``GET /coordinators`` and the console list the coordinators running against this
Redis; each entry counts for ``ALIVE_FOR_S``, and is taken out when the coordinator stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time

from . import __version__
from .engine import Engine
from .errors import RedisqError
from .model import iso_from_ms

log = logging.getLogger("redisq")

ALIVE_EVERY_S = 5.0
ALIVE_FOR_S = 15.0  # three chances: a coordinator is listed through one or two failed refreshes


def description_of(coordinator_id: str) -> str:
    """What a coordinator says of itself, as the JSON text its entry keeps while it runs
    (``startedAt`` by its own clock: shown to operators, never compared)."""
    return json.dumps({"id": coordinator_id, "host": socket.gethostname(), "pid": os.getpid(),
                       "startedAt": iso_from_ms(int(time.time() * 1000)), "version": __version__},
                      separators=(",", ":"), sort_keys=True)


class PresenceLoop:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.description = description_of(engine.coordinator_id)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._say_alive()
        self._task = asyncio.create_task(self._loop(), name="presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.engine.presence.gone(self.description)
        except RedisqError as e:  # its entry runs out by itself
            log.debug("could not take this coordinator out of the coordinators alive: %s", e)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_EVERY_S)
            await self._say_alive()

    async def _say_alive(self) -> None:
        try:
            await self.engine.presence.alive(self.description, round(ALIVE_FOR_S * 1000))
        except RedisqError as e:  # Redis is down: said again at the next turn
            log.debug("could not say this coordinator is alive: %s", e)
