"""Background loops: one per worker, each with a wake-up event, started and stopped together
(``WorkerLoops``: the poller, the cron ticker, the dispatcher's claim loops and settle
flushers), and how every loop backs off while Redis fails (``OutageBackoff``).
"""

from __future__ import annotations

import asyncio
import logging

from redis import exceptions as redis_errors

from .config import Config, WorkerConfig
from .connection import closed_under_the_call, is_outage, is_refusal
from .errors import RedisqError

# The names these lines have always been logged under (operators may filter on them).
backoff_log = logging.getLogger("redisq.dispatch")
loops_log = logging.getLogger("redisq.poller")

MAX_IDLE_S = 1.0  # a sleeping loop looks again after this long even if no wake-up came


def cancelled() -> bool:
    """Whether the current task was asked to cancel. Every loop looks at it beside its stop
    flag: a cancellation that lands in a redis-py call may be swallowed on Python 3.11, and
    a loop cancelled without stop() (``asyncio.run`` ending with the coordinator running)
    then ran on, and ``asyncio.run`` waited for it forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def wait_at_most(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; True when it was set. A cancellation of the
    waiting task always ends the wait with CancelledError: ``asyncio.wait_for`` on Python
    3.11 returns normally when the cancellation comes as the wait ends, so a loop cancelled
    then ran on, and ``asyncio.run`` waited for it forever at its end."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class OutageBackoff:
    """Sleeps after a failed Redis call (an outage, an error reply such as READONLY or OOM):
    0.1 s doubling to ``max_delay_s``; logs once when the trouble starts and once when it ends."""

    def __init__(self, what: str, max_delay_s: float = 5.0):
        self.what = what
        self.max_delay_s = max_delay_s
        self.delay_s = 0.0

    async def failed(self, error: Exception) -> None:
        if self.delay_s == 0.0:
            cause = error.__cause__ if isinstance(error, RedisqError) and error.__cause__ is not None else error
            if is_outage(error) or closed_under_the_call(error):
                backoff_log.warning("%s: redis unreachable (%s); retrying with backoff", self.what, cause)
            elif is_refusal(error):
                backoff_log.warning("%s: the redis cluster refused for now (%s: %s); retrying with backoff",
                                    self.what, type(cause).__name__, cause)
            elif isinstance(cause, redis_errors.RedisError):
                backoff_log.warning("%s: redis answered %s: %s; retrying with backoff", self.what,
                                    type(cause).__name__, cause)
            else:
                backoff_log.error("%s: unexpected %s; retrying with backoff", self.what, type(error).__name__,
                                  exc_info=error)
        self.delay_s = min(self.max_delay_s, max(0.1, self.delay_s * 2))
        await asyncio.sleep(self.delay_s)

    def succeeded(self) -> None:
        if self.delay_s:
            backoff_log.warning("%s: redis calls succeed again", self.what)
        self.delay_s = 0.0


class WorkerLoops:
    """One background loop per worker (``_loop``), each with a wake-up event, started and
    stopped together (the poller, the cron ticker, the claim loops, the settle flushers)."""

    kind = "worker"  # names the tasks ("<kind>:<worker>") and the loops in the log
    logger = loops_log
    # Whether stop() cancels the loops at once (a loop that sleeps), or lets them end by the
    # flag and cancels only those still running after its timeout (a loop that must finish
    # the Redis call it is in).
    cancel_on_stop = True

    def __init__(self, config: Config):
        self.config = config
        self._wake = {name: asyncio.Event() for name in config.workers}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for worker in self.config.workers.values():
            self._tasks.append(asyncio.create_task(self._loop(worker), name=f"{self.kind}:{worker.name}"))

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return self._tasks

    async def stop(self, timeout_s: float = 5.0) -> None:
        # End the loops by the flag, and cancel what still sleeps (a cancel that lands in a
        # redis-py call may be swallowed on Python 3.11; the flag still ends the loop, and
        # so does ``cancelled()`` without it).
        self._stopping = True
        for event in self._wake.values():
            event.set()
        if self.cancel_on_stop:
            for task in self._tasks:
                task.cancel()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        if pending:
            self.logger.warning("%d %s loops did not stop within %g s", len(pending), self.kind, timeout_s)
            for task in pending:
                task.cancel()

    def wake(self, worker: str) -> None:
        event = self._wake.get(worker)
        if event is not None:
            event.set()

    async def _loop(self, worker: WorkerConfig) -> None:
        raise NotImplementedError
