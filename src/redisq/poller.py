"""The poller: fails attempts whose lease ended without a receipt, and purges finished jobs.

Per worker, one loop sleeps until the earliest lease deadline (the reap script reports
it; the dispatcher reports new, shorter leases), reaps, and purges finished jobs past
their retention in capped batches at most once a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .config import Config, WorkerConfig
from .engine import Engine
from .loops import MAX_IDLE_S, OutageBackoff, WorkerLoops

PURGE_EVERY_S = 1.0
REAP_BATCH = 500
PURGE_BATCH = 500


class Poller(WorkerLoops):
    kind = "poller"

    def __init__(self, store: Engine, config: Config, on_reaped: Callable[[str, int], None] | None = None):
        super().__init__(config)
        self.store = store
        self.on_reaped = on_reaped
        self._next_reap_at = {name: 0.0 for name in config.workers}  # local monotonic seconds

    def lease_started(self, worker: str, timeout_ms: int) -> None:
        """A lease that ends before the loop planned to look wakes it at the right time."""
        ends_at = time.monotonic() + timeout_ms / 1000
        if ends_at < self._next_reap_at.get(worker, 0.0):
            self._next_reap_at[worker] = ends_at
            self._wake[worker].set()

    async def _loop(self, worker: WorkerConfig) -> None:
        backoff = OutageBackoff(f"poller ({worker.name})")
        name = worker.name
        next_purge = 0.0
        while not self._stopping:
            self._next_reap_at[name] = math.inf  # a lease started during the reap lowers it
            try:
                reaped, wait_ms = await self.store.reap(worker, REAP_BATCH)
                if reaped and self.on_reaped:
                    self.on_reaped(name, reaped)
                if time.monotonic() >= next_purge:
                    more = True
                    while more:
                        _, more = await self.store.purge(worker, PURGE_BATCH)
                        await asyncio.sleep(0)
                    next_purge = time.monotonic() + PURGE_EVERY_S
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: back off, never end the loop
                self._next_reap_at[name] = 0.0
                await backoff.failed(e)
                continue
            if reaped >= REAP_BATCH:
                continue
            sleep_s = MAX_IDLE_S if wait_ms < 0 else min(MAX_IDLE_S, wait_ms / 1000)
            self._next_reap_at[name] = min(self._next_reap_at[name], time.monotonic() + sleep_s)
            await self._sleep_until_next_reap(name)

    async def _sleep_until_next_reap(self, name: str) -> None:
        """Sleep until ``_next_reap_at``, which a shorter new lease may move earlier meanwhile."""
        wake = self._wake[name]
        while not self._stopping:
            remaining = self._next_reap_at[name] - time.monotonic()
            if remaining <= 0:
                return
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), remaining)
            except TimeoutError:
                return
