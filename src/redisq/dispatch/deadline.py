"""How long the dispatcher waits for a worker's answer: the attempt's timeout, and past it
for as long as the attempt's lease runs.

A worker that works in the request and heartbeats moves its lease on (``lua/heartbeat.lua``).
When the timeout passes, the wait reads the lease once (``lua/lease.lua``) and goes on while
heartbeats extended it, reading again when the extension ends; a lease that has ended cuts
the call there. A call answered within its timeout costs a timer, as aiohttp's own timeout
did, and no read. While Redis cannot be read, the wait goes on and reads again each second:
a lease that cannot be seen is not taken as ended (the worker may still answer, and nothing
could be settled meanwhile anyway).

    async with AnswerDeadline(timeout_s, lease_left_ms) as deadline:
        response = await transport.post(...)     # TimeoutError out of the block when cut
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from ..errors import UnavailableError

log = logging.getLogger("redisq.dispatch")

LeaseLeft = Callable[[], Awaitable[int]]  # ms the attempt's lease has left; 0 = ended
LEASE_READ_RETRY_S = 1.0  # while Redis is unavailable, the lease is read again this often


class AnswerDeadline:
    """An ``asyncio.timeout`` whose expiry first asks ``lease_left_ms`` (None: it never
    does, the timeout is final)."""

    def __init__(self, timeout_s: float, lease_left_ms: LeaseLeft | None = None):
        self.timeout_s = timeout_s
        self.lease_left_ms = lease_left_ms
        self.extended = False  # whether the wait went on past timeout_s
        self._timeout = asyncio.timeout(None)
        self._handle: asyncio.TimerHandle | None = None
        self._read: asyncio.Task[None] | None = None  # the lease read in progress
        self._started = 0.0
        self._over = False

    @property
    def waited_s(self) -> float:
        return asyncio.get_running_loop().time() - self._started

    async def __aenter__(self) -> AnswerDeadline:
        await self._timeout.__aenter__()
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._handle = loop.call_later(self.timeout_s, self._timeout_passed)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self._over = True  # a lease read still in flight finds it so and does nothing
        if self._handle is not None:
            self._handle.cancel()
        await self._timeout.__aexit__(kind, error, traceback)  # TimeoutError here when cut

    def _timeout_passed(self) -> None:
        if self.lease_left_ms is None:
            self._cut()
        else:
            self._read = asyncio.get_running_loop().create_task(self._look_at_lease(self.lease_left_ms))

    def _cut(self) -> None:
        if not self._over:
            self._timeout.reschedule(asyncio.get_running_loop().time())

    async def _look_at_lease(self, lease_left_ms: LeaseLeft) -> None:
        try:
            left_ms = await lease_left_ms()
        except UnavailableError as e:
            log.warning("could not read a lease past its timeout (%s); waiting for the answer and reading again", e)
            left_ms = -1
        except Exception:
            log.exception("reading a lease past its timeout failed; the call ends as timed out")
            left_ms = 0
        if self._over:
            return
        if left_ms == 0:
            self._cut()
            return
        self.extended = self.extended or left_ms > 0
        wait_s = left_ms / 1000 if left_ms > 0 else LEASE_READ_RETRY_S
        self._handle = asyncio.get_running_loop().call_later(wait_s, self._timeout_passed)
