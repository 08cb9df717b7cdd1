"""The coordinators alive, across workers: each says so every few seconds
(``lua/coordinator_alive.lua`` on the ``redisq:coordinators`` zset, ``keys.COORDINATORS_KEY``),
and counts as gone once its time runs out on Redis's clock, or at once when it says it stops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..connection import RedisClient
from ..keys import COORDINATORS_KEY
from ..script_specs import SPECS
from ..scripts import Scripts
from ..types import ScriptArg, ScriptReply
from .calls import redis_errors_mapped
from .records import integer, replies, text


@dataclass(frozen=True)
class CoordinatorAlive:
    description: dict[str, Any]  # id, host, pid, startedAt, version: what it said of itself
    until_ms: int  # it counts as gone after this (Redis's clock) unless it says so again


class Presence:
    def __init__(self, redis: RedisClient, scripts: Scripts):
        self.redis = redis
        self.scripts = scripts

    async def _run(self, script: str, args: list[ScriptArg]) -> ScriptReply:
        SPECS[script].check(1, len(args))
        with redis_errors_mapped():
            return await self.scripts.registered[script](keys=[COORDINATORS_KEY], args=args)

    async def alive(self, description: str, alive_ms: int) -> int:
        """Say that the coordinator ``description`` is alive for ``alive_ms`` more; returns how many are."""
        return integer(await self._run("coordinator_alive", [description, "alive", alive_ms]))

    async def gone(self, description: str) -> None:
        await self._run("coordinator_alive", [description, "gone", 0])

    async def list(self) -> tuple[int, list[CoordinatorAlive]]:
        """Redis's clock now, and the coordinators alive (oldest entry first)."""
        out = replies(await self._run("coordinators", []))
        return integer(out[0]), [CoordinatorAlive(json.loads(text(out[i])), int(float(text(out[i + 1]))))
                                 for i in range(1, len(out), 2)]
