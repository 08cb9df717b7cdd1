"""The cron ticker: per worker, one loop that sleeps until the earliest next fire time (at
most ``MAX_IDLE_S``, and less when ``wake`` says a schedule was saved) and then ticks
through the worker's engine (``engine/schedules.py``; the rules are in ``cron.py``)."""

from __future__ import annotations

import asyncio

from .config import Config, WorkerConfig
from .cron import TICK_LEAD_MS
from .engine import Engine, TickPlan
from .loops import MAX_IDLE_S, OutageBackoff, WorkerLoops, cancelled, wait_at_most


class Ticker(WorkerLoops):
    """Per worker, one loop that sleeps until the earliest next fire time (at most
    ``MAX_IDLE_S``, and less when ``wake`` says a schedule was saved) and then ticks."""

    kind = "ticker"

    def __init__(self, engine: Engine, config: Config):
        super().__init__(config)
        self.engine = engine

    async def _loop(self, worker: WorkerConfig) -> None:
        backoff = OutageBackoff(f"ticker ({worker.name})")
        wake = self._wake[worker.name]
        while not self._stopping and not cancelled():
            wake.clear()
            try:
                # The ticks due within TICK_LEAD_MS: their jobs are created now, to leave at
                # their tick's time.
                plan = await self.engine.worker(worker.name).plan(TICK_LEAD_MS)
                if plan.count:
                    await self._fire_when_due(plan)
                    backoff.succeeded()
                    continue
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: back off, never end the loop
                await backoff.failed(e)
                continue
            wait_ms = plan.wait_ms - TICK_LEAD_MS
            sleep_s = MAX_IDLE_S if plan.wait_ms < 0 else min(MAX_IDLE_S, max(0, wait_ms) / 1000)
            await wait_at_most(wake, sleep_s)

    async def _fire_when_due(self, plan: TickPlan) -> None:
        # Normally at once; the script refuses ticks more than TICK_LEAD_MS ahead, and then
        # says how long is left.
        wait_ms = plan.due_ms - TICK_LEAD_MS - plan.now_ms
        for _ in range(100):
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            round_ = await self.engine.worker(plan.worker.name).fire(plan, TICK_LEAD_MS)
            if not round_.early:
                break
            wait_ms = round_.wait_ms
