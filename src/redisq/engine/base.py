"""What every part of a worker's engine shares: its config, its keys, the Redis client and
the registered scripts, and the one way to call them (through ``redis_errors_mapped``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import WorkerConfig
from ..connection import RedisClient
from ..keys import WorkerKeys
from ..scripts import Scripts
from ..types import ScriptArg, ScriptReply
from .calls import redis_errors_mapped


class WorkerBase:
    """One worker's engine: ``WorkerEngine`` joins the jobs, limits and schedules parts."""

    def __init__(self, redis: RedisClient, worker: WorkerConfig, scripts: Scripts):
        self.redis = redis
        self.config = worker
        self.name = worker.name
        self.keys = WorkerKeys(worker.name)
        self.scripts = scripts
        self._seeded = False  # whether this process has seeded the worker's live limits

    async def run(self, script: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> ScriptReply:
        """Call one of ``scripts.SCRIPT_NAMES`` on this worker's slot, errors mapped; read its
        reply with ``records.replies``, ``integer`` and ``text``."""
        with redis_errors_mapped():
            return await self.scripts.registered[script](keys=list(keys), args=list(args))

    async def ensure_limits(self) -> None:
        """Seed the live limits once per process (``LiveLimits``)."""
        raise NotImplementedError

    async def now_ms(self) -> int:
        """The Redis clock (the worker's own server's, on a cluster)."""
        with redis_errors_mapped():
            seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
