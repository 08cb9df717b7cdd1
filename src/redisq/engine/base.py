"""What every part of a worker's engine shares: its config, its keys, the Redis client and
the registered scripts, and the one way to call them (through ``redis_errors_mapped``)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from ..config import WorkerConfig
from ..connection import CLUSTER_REFUSALS, COMMAND_TIMEOUT_S, REDIS_OUTAGE_ERRORS, RedisClient, server_time_ms
from ..keys import LimitKeys, WorkerKeys
from ..script_specs import SPECS
from ..scripts import Scripts
from ..types import ScriptArg, ScriptReply
from .calls import REFUSAL_RETRY_S, OutageClock, redis_errors_mapped

T = TypeVar("T")

FIRST_REFUSAL_WAIT_S = 0.02  # doubling up to MAX_REFUSAL_WAIT_S between the tries of a refused call
MAX_REFUSAL_WAIT_S = 0.2


class Notifier(Protocol):
    """Whom a write tells what it may have made due (the coordinator: ``wakeups.py``)."""

    async def enqueued(self, workers: set[str]) -> None:
        """Jobs are due earlier than before: enqueued, a limit raised, a worker resumed."""

    def settled(self, worker: str, words: list[str]) -> None:
        """Attempts ended (settle's answers; "cancelled" for a cancel): a slot may be free."""

    def schedules_changed(self, worker: str) -> None:
        """A schedule was saved or resumed: it may fire sooner than planned."""


def default_coordinator_id() -> str:
    """``host:pid``: which coordinator process sent an attempt (a job's history shows it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class NoOneToTell:
    """The notifier of an engine that runs without a coordinator (tests, benchmarks)."""

    async def enqueued(self, workers: set[str]) -> None:
        return None

    def settled(self, worker: str, words: list[str]) -> None:
        return None

    def schedules_changed(self, worker: str) -> None:
        return None


class WorkerBase:
    """One worker's engine: ``WorkerEngine`` joins the jobs, limits and schedules parts.
    Every write that can make something due tells ``notify`` itself, as saq's queue ends
    each write with ``notify``: callers never send wake-ups."""

    def __init__(self, redis: RedisClient, worker: WorkerConfig, scripts: Scripts, notify: Notifier | None = None,
                 outages: OutageClock | None = None, coordinator_id: str = ""):
        self.notify: Notifier = NoOneToTell() if notify is None else notify
        self.coordinator_id = coordinator_id or default_coordinator_id()  # who sent an attempt, in its history
        self.outages = OutageClock() if outages is None else outages  # shared by the process's engines
        self.redis = redis
        self.config = worker
        self.name = worker.name
        self.keys = WorkerKeys(worker.name, worker.slot)
        # The shared limits it names ([limits.NAME]), all in its slot (config.place_workers).
        self.shared_keys = [LimitKeys(limit.name, limit.slot_tag) for limit in worker.shared_limits]
        self.scripts = scripts
        self._seeded = False  # whether this process has seeded the worker's live limits

    @property
    def shared_limit_keys(self) -> list[str]:
        """The KEYS a script that reads the shared limits is given after its own, per limit
        ``LimitKeys.claim_keys`` (``read_shared_limits``, lua/includes/shared.lua)."""
        return [key for limit in self.shared_keys for key in limit.claim_keys]

    @property
    def shared_limit_args(self) -> list[str]:
        """The ARGV that go with ``shared_limit_keys``, per limit ``LimitKeys.claim_args``."""
        return [arg for limit in self.shared_keys for arg in limit.claim_args]

    async def run(self, script: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> ScriptReply:
        """Call one of ``scripts.SCRIPT_NAMES`` on this worker's slot, errors mapped; the
        call must fit the script's spec (``script_specs.py``). Read its reply with
        ``records.replies``, ``integer`` and ``text``."""
        spec = SPECS[script]
        spec.check(len(keys), len(args))
        call = self.scripts.registered[script]
        call_keys = [*self.keys.migration_probes, *keys]  # see lua/includes/slot.lua
        return await self._call(lambda: call(keys=call_keys, args=list(args)), spec.repeatable)

    async def read(self, call: Callable[[], Awaitable[T]]) -> T:
        """A plain read (``lambda: self.redis.hgetall(key)``), errors mapped, and repeated
        once when its connection dropped (a read is always safe to repeat)."""
        return await self._call(call, repeatable=True)

    async def _call(self, call: Callable[[], Awaitable[T]], repeatable: bool) -> T:
        started = time.monotonic()
        with redis_errors_mapped():
            try:
                try:
                    reply = await self._refusals_retried(call, started)
                except REDIS_OUTAGE_ERRORS:
                    # The client never repeats a command (connection.py): a lost answer is
                    # repeated here, once and at once, only when the call allows it (claim
                    # returns its first answer; a read changes nothing) and the first try
                    # failed fast (a dropped connection, such as one left from before Redis
                    # restarted, not a Redis that does not answer).
                    if not repeatable or time.monotonic() - started >= COMMAND_TIMEOUT_S / 2:
                        raise
                    reply = await self._refusals_retried(call, time.monotonic())
            except REDIS_OUTAGE_ERRORS:
                self.outages.failed()
                raise
        self.outages.succeeded()
        return reply

    @staticmethod
    async def _refusals_retried(call: Callable[[], Awaitable[T]], started: float) -> T:
        """The call, sent again while a cluster refuses it (``connection.CLUSTER_REFUSALS``:
        a slot migrating or a master failing over; the command did not run) for up to
        ``REFUSAL_RETRY_S``; the last refusal is raised after that."""
        wait_s = FIRST_REFUSAL_WAIT_S
        while True:
            try:
                return await call()
            except CLUSTER_REFUSALS:
                if time.monotonic() - started + wait_s >= REFUSAL_RETRY_S:
                    raise
                await asyncio.sleep(wait_s)
                wait_s = min(MAX_REFUSAL_WAIT_S, wait_s * 2)

    async def ensure_limits(self) -> None:
        """Seed the live limits once per process (``LiveLimits``)."""
        raise NotImplementedError

    async def now_ms(self) -> int:
        """The Redis clock (the worker's own server's, on a cluster)."""
        return await self.read(lambda: server_time_ms(self.redis, self.keys.tag))
