"""Dead-letter callbacks: when a job of a worker with ``on_dead`` dies, a coordinator POSTs
``{"event": "dead", "job": <the job with its history>}`` to that URL, signed as a dispatch
is (``security.signed_headers``, the same key).

The deaths are read from the worker's event stream (the scripts add every state change to
it, one entry per script call holding all its events: lua/includes/jobs.lua ``moved()``)
through one consumer group, ``DEAD_LETTER_GROUP``, shared by every coordinator on that
Redis: XREADGROUP hands each entry to one of them, which calls back every death in it, each
in a task of its own, and acknowledges the entry (XACK) once every one of them answered
2xx or was given up. An entry another coordinator left pending (it stopped or died
mid-callback) is taken over with XAUTOCLAIM after ``CLAIM_IDLE_MS``; a coordinator marks
its own entries with callbacks in progress as its own again (XCLAIM JUSTID) every quarter
of that, so none is taken from it while it retries. An entry that this coordinator holds
callbacks of, or acknowledged lately, is not called back again when handed back to it
(a takeover answered while its XACK was on its way): a death is called back twice only
by two coordinators. Entries without a death are acknowledged at once. The group starts at
the stream's end when it is first made: deaths before that are not called back, nor is a
death the stream trimmed before any coordinator read it (more than about 10,000 events of
the worker behind).

A callback is tried ``1 + len(RETRY_DELAYS_S)`` times over about 12 minutes (each attempt
``CALL_TIMEOUT_S`` at most), then given up with a WARNING (``Signals.dead_letter_failed``).
Each runs in a task of its own on an HTTP client of its own, at most ``MAX_CALLBACKS``
calls at once, so a slow or failing callback never holds up dispatch. Delivery is at least
once: a coordinator that stops after a callback answered but before the XACK of its entry
reached Redis (the entry's other deaths still in progress, say) leaves the entry to be
called back again, every death in it, by the one that takes it over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.typing import StreamIdT

from .config import Config, WorkerConfig
from .connection import RedisClient
from .engine import Engine
from .errors import NotFoundError, RedisqError
from .events import entry_events, stream_entries, text
from .keys import DEAD_LETTER_GROUP, WorkerKeys, job_id
from .loops import OutageBackoff, cancelled
from .security import signed_headers
from .signals import Signals
from .transport import Transport, TransportError, make_transport

log = logging.getLogger("redisq.dead_letters")

RETRY_DELAYS_S: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # before the 2nd, 3rd, ... attempt
CALL_TIMEOUT_S = 10.0
MAX_CALLBACKS = 64  # callbacks in progress at once, per coordinator
READ_COUNT = 100
READ_BLOCK_MS = 500  # below the Redis client's 1 s command timeout
CLAIM_IDLE_MS = 60_000  # an entry pending this long at another coordinator is taken over
CLAIM_EVERY_S = 5.0  # how often pending entries are looked for (XAUTOCLAIM)
# This coordinator's callbacks in progress are marked as its own every CLAIM_IDLE_MS / 4.
ACKNOWLEDGED_KEPT = 10_000  # entries acknowledged lately, remembered so a late takeover skips them
DEAD = "dead"

Entry = tuple[Any, Mapping[Any, Any]]  # a stream entry as redis-py answers it: (id, fields)


def callback_body(job_json_text: str) -> bytes:
    return f'{{"event":"dead","job":{job_json_text}}}'.encode()


class DeadLetters:
    """One loop per worker with ``on_dead``, and the callbacks it started."""

    def __init__(self, engine: Engine, config: Config, signing_key: bytes, signals: Signals,
                 transport: Transport | None = None):
        self.engine = engine
        self.redis: RedisClient = engine.redis
        self.config = config
        self.signing_key = signing_key
        self.signals = signals
        self.workers = [worker for worker in config.workers.values() if worker.on_dead]
        self.transport = transport
        self.consumer = f"{engine.coordinator_id}/{secrets.token_hex(3)}"
        self._loops: list[asyncio.Task[None]] = []
        # (worker, entry id) -> the task calling back its deaths
        self._callbacks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._deaths_in_progress = 0  # the deaths those tasks call back
        self._calls = asyncio.Semaphore(MAX_CALLBACKS)  # callbacks being made at once
        # (worker, entry id) acknowledged lately: an XAUTOCLAIM answered while the XACK was on
        # its way may still hand the entry back
        self._acknowledged: dict[tuple[str, str], None] = {}
        self._stopping = False

    async def start(self) -> None:
        if not self.workers:
            return
        self.transport = self.transport or make_transport(self.config.http_client, MAX_CALLBACKS)
        for worker in self.workers:
            self._loops.append(asyncio.create_task(self._loop(worker), name=f"on-dead:{worker.name}"))

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop reading, end the callbacks in progress (they stay pending: another coordinator,
        or this one started again, calls them back), and leave the group when nothing of
        this coordinator's is pending."""
        self._stopping = True
        for task in self._callbacks.values():
            task.cancel()
        tasks = [*self._loops, *self._callbacks.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
        for worker in self.workers:
            await self._leave(WorkerKeys(worker.name, worker.slot).events)
        if self.transport is not None and self.workers:
            await self.transport.close()

    async def _loop(self, worker: WorkerConfig) -> None:
        stream = WorkerKeys(worker.name, worker.slot).events
        backoff = OutageBackoff(f"on_dead callbacks of {worker.name}")
        joined = False
        loop_time = asyncio.get_running_loop().time
        claimed_at = kept_fresh_at = loop_time()
        while not self._stopping and not cancelled():
            try:
                if not joined:
                    await self._join(stream)
                    joined = True
                if loop_time() - claimed_at >= CLAIM_EVERY_S:
                    await self._handle(worker, stream, await self._take_over(stream))
                    claimed_at = loop_time()
                if loop_time() - kept_fresh_at >= CLAIM_IDLE_MS / 4000:
                    await self._keep_fresh(worker.name, stream)
                    kept_fresh_at = loop_time()
                if self._deaths_in_progress < MAX_CALLBACKS:
                    reply = await self.redis.xreadgroup(DEAD_LETTER_GROUP, self.consumer, {stream: ">"},
                                                        count=READ_COUNT, block=READ_BLOCK_MS)
                    for _, entries in stream_entries(reply):
                        await self._handle(worker, stream, entries)
                else:
                    await asyncio.sleep(0.1)
                backoff.succeeded()
            except redis_errors.ResponseError as e:
                if "NOGROUP" in str(e):  # the stream was deleted, and its group with it
                    joined = False
                await backoff.failed(e)
            except Exception as e:  # an outage, or anything else: back off, as every loop does
                await backoff.failed(e)

    async def _join(self, stream: str) -> None:
        """The group, made at the stream's end unless another coordinator made it already."""
        try:
            await self.redis.xgroup_create(stream, DEAD_LETTER_GROUP, id="$", mkstream=True)
        except redis_errors.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _take_over(self, stream: str) -> list[Entry]:
        """The entries another coordinator left pending longer than ``CLAIM_IDLE_MS``."""
        taken: list[Entry] = []
        cursor: Any = "0-0"
        while True:
            reply = await self.redis.xautoclaim(stream, DEAD_LETTER_GROUP, self.consumer, CLAIM_IDLE_MS,
                                                start_id=cursor, count=READ_COUNT)
            cursor, entries = reply[0], reply[1]
            taken += [(entry_id, fields) for entry_id, fields in entries if fields is not None]
            if text(cursor) == "0-0" or not entries:
                return taken

    async def _keep_fresh(self, worker: str, stream: str) -> None:
        """Mark the entries of this coordinator's callbacks in progress as its own again
        (their idle time starts over), so that no other coordinator takes them over while
        they retry."""
        ids: list[StreamIdT] = [entry_id for (name, entry_id) in self._callbacks if name == worker]
        if ids:
            await self.redis.xclaim(stream, DEAD_LETTER_GROUP, self.consumer, 0, ids, justid=True)

    async def _handle(self, worker: WorkerConfig, stream: str, entries: Sequence[Entry]) -> None:
        """A task calling back the deaths of each entry that is neither in progress here nor
        acknowledged lately; the rest acknowledged (again)."""
        done: list[str] = []
        for entry_id, raw in entries:
            key = (worker.name, text(entry_id))
            if key in self._callbacks:
                continue  # its deaths are being called back: its task acknowledges it
            deaths = [(suffix, attempt) for suffix, state, attempt in entry_events(raw) if state == DEAD]
            if not deaths or key in self._acknowledged:
                done.append(key[1])
                continue
            task = asyncio.create_task(self._call_back_entry(worker, stream, key[1], deaths))
            self._callbacks[key] = task
            task.add_done_callback(lambda _, key=key: self._callbacks.pop(key, None))  # type: ignore[misc]
        if done:
            await self.redis.xack(stream, DEAD_LETTER_GROUP, *done)

    async def _call_back_entry(self, worker: WorkerConfig, stream: str, entry_id: str,
                               deaths: Sequence[tuple[str, int]]) -> None:
        """Call back every death of an entry at once; once each answered 2xx or was given
        up, acknowledge the entry. (A callback that failed otherwise leaves it pending, to
        be taken over.)"""
        self._deaths_in_progress += len(deaths)
        try:
            ended = await asyncio.gather(*(self._call_back(worker, suffix, attempt) for suffix, attempt in deaths),
                                         return_exceptions=True)
        finally:
            self._deaths_in_progress -= len(deaths)
        failed = [e for e in ended if isinstance(e, BaseException)]
        if failed:
            log.warning("on_dead callbacks of %s in %s failed (%s): the entry is left pending", entry_id, stream,
                        failed[0])
            return
        await self._acknowledge(worker.name, stream, entry_id)

    async def _call_back(self, worker: WorkerConfig, suffix: str, attempts: int) -> None:
        """POST the dead job to ``on_dead`` until it answers 2xx or the attempts run out."""
        assert worker.on_dead is not None and self.transport is not None
        dead_id = job_id(worker.name, suffix)
        body: bytes | None = None
        error = ""
        delays_s = (0.0, *RETRY_DELAYS_S)
        for delay_s in delays_s:
            if delay_s:
                await asyncio.sleep(delay_s)
            try:
                async with self._calls:
                    body = body or await self._body(dead_id, worker.name, attempts)
                    headers = {"Content-Type": "application/json", **signed_headers(self.signing_key, body)}
                    response = await self.transport.post(worker.on_dead, body, headers, CALL_TIMEOUT_S)
            except (TransportError, RedisqError) as e:
                error = str(e)
                continue
            if 200 <= response.status < 300:
                return
            said = response.body[:200].decode("utf-8", "replace").strip()
            error = f"HTTP {response.status}: {said}" if said else f"HTTP {response.status}"
        self.signals.dead_letter_failed(worker.name, dead_id, worker.on_dead, len(delays_s), error)

    async def _body(self, dead_id: str, worker: str, attempts: int) -> bytes:
        """The callback's body: the job as ``GET /job/{id}`` answers it, with its history; a
        job already gone (purged, deleted) as what the event told."""
        try:
            job = await self.engine.get(dead_id)
        except NotFoundError:
            return callback_body(f'{{"id":"{dead_id}","worker":"{worker}","state":"dead","attempts":{attempts}}}')
        return callback_body(job.json_text())

    async def _acknowledge(self, worker: str, stream: str, entry_id: str) -> None:
        self._acknowledged[(worker, entry_id)] = None
        if len(self._acknowledged) > ACKNOWLEDGED_KEPT:
            del self._acknowledged[next(iter(self._acknowledged))]
        try:
            await self.redis.xack(stream, DEAD_LETTER_GROUP, entry_id)
        except Exception as e:  # left pending: called back again once taken over (at least once)
            log.warning("could not acknowledge the on_dead callback of %s in %s: %s", entry_id, stream, e)

    async def _leave(self, stream: str) -> None:
        try:
            mine = await self.redis.xpending_range(stream, DEAD_LETTER_GROUP, "-", "+", 1, consumername=self.consumer)
            if not mine:
                await self.redis.xgroup_delconsumer(stream, DEAD_LETTER_GROUP, self.consumer)
        except Exception as e:  # the consumer stays listed in the group; nothing is lost
            log.debug("could not leave the on_dead group of %s: %s", stream, e)
