"""The poller: fails attempts whose lease ended without a receipt, and purges finished jobs.

Per worker, one loop sleeps until the earliest lease deadline (the reap script reports
it; the dispatcher reports new, shorter leases), reaps, and purges finished jobs past
their retention in capped batches at most once a second. Before each reap, the answers
this process holds for the worker are settled (``before_reap``): after an outage, a lease
that ran out while its answer waited for Redis is settled by that answer, not reaped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from .config import Config, WorkerConfig
from .connection import COMMAND_TIMEOUT_S
from .engine import Engine, Reaped
from .loops import MAX_IDLE_S, OutageBackoff, WorkerLoops, cancelled, wait_at_most

PURGE_EVERY_S = 1.0
REAP_BATCH = 500
PURGE_BATCH = 500
REAP_VALID_MS = round(COMMAND_TIMEOUT_S * 1000)  # a reap not run by then is not run at all


class Poller(WorkerLoops):
    kind = "poller"

    def __init__(self, store: Engine, config: Config, on_reaped: Callable[[str, Reaped], None] | None = None,
                 before_reap: Callable[[str], Awaitable[None]] | None = None):
        super().__init__(config)
        self.store = store
        self.on_reaped = on_reaped
        self.before_reap = before_reap  # settles the worker's held answers (Settler.flush)
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
        while not self._stopping and not cancelled():
            self._next_reap_at[name] = math.inf  # a lease started during the reap lowers it
            try:
                result = await self._reap(worker)
                reaped, wait_ms = result.reaped, result.wait_ms
                if reaped and self.on_reaped:
                    self.on_reaped(name, result)
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

    async def _reap(self, worker: WorkerConfig) -> Reaped:
        """Settle the answers held for the worker, then reap: (reaped, ms until the next
        lease ends or -1, the attempts ended). Right after an outage it waits
        (``OutageClock``): (0, the wait)."""
        grace_s = self.store.outages.grace_left_s()
        if grace_s > 0:
            return Reaped(0, math.ceil(grace_s * 1000))
        if self.before_reap is not None:
            await self.before_reap(worker.name)
        # A reap whose answer this process stops waiting for (the client's timeout) must not
        # run later, when Redis comes back: by then the answers held through the outage
        # should be settled first (lua/reap.lua).
        not_after_ms = await self.store.worker(worker.name).now_ms() + REAP_VALID_MS
        return await self.store.reap(worker, REAP_BATCH, not_after_ms)

    async def _sleep_until_next_reap(self, name: str) -> None:
        """Sleep until ``_next_reap_at``, which a shorter new lease may move earlier meanwhile."""
        wake = self._wake[name]
        while not self._stopping and not cancelled():
            remaining = self._next_reap_at[name] - time.monotonic()
            if remaining <= 0:
                return
            wake.clear()
            if not await wait_at_most(wake, remaining):
                return
