"""Wake-ups: named events that wake the loops waiting for them, in this process and, for
some, on every other coordinator (published on ``redisq:wake``, ``keys.WAKE_CHANNEL``; on a
Redis Cluster on each worker's sharded channel ``redisq:{<worker>}:wake`` with SPUBLISH, in
the slot of the worker's keys (``redisq:{shopify}/worker/<worker>:wake`` for a worker naming
``[limits.shopify]``), so a wake-up stays on the worker's master instead of crossing every
node's bus).

A write that may let a loop act sooner than it planned ends by publishing an event, so no
caller sends wake-ups of its own. The events, who publishes them and whom they wake:

- ``JOBS_DUE``: jobs were enqueued earlier than anything before, a worker was resumed or
  its limits raised. Wakes the worker's claim loop here and on the other coordinators.
- ``SLOT_FREED``: an attempt of a worker whose concurrency is capped ended (a settle, a
  cancel, a reap). Wakes the claim loop here and on the other coordinators.
- ``RETRY_DUE``: a settle scheduled a retry or returned a job unsent, so a job may be due
  sooner than the claim loop planned. Wakes the claim loop here.
- ``SCHEDULE_CHANGED``: a schedule was saved or resumed. Wakes the cron ticker here.
- ``LEASE_STARTED`` (with the shortest new lease's timeout in ms): a claim started leases.
  Tells the poller here, which may have to look before it planned.

On the wire a message is the bare worker name, as coordinators of earlier versions send and
read it: both cross-process events ask the same of a receiver (look at the worker's queue
again), so a received one is delivered here as ``JOBS_DUE``.

On a cluster the listener holds one SSUBSCRIBE connection per master, for the channels of
the workers whose slots it owns (redis-py's ``ClusterPubSub`` moves a channel when its slot
moves); a connection that fails (a master killed) starts them over, on the cluster's new
map, after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING

from .connection import is_cluster, node_of
from .keys import WAKE_CHANNEL, WorkerKeys
from .loops import MAX_IDLE_S, OutageBackoff, cancelled

if TYPE_CHECKING:
    from redis.asyncio.cluster import ClusterPubSub, RedisCluster

    from .connection import RedisClient

log = logging.getLogger("redisq.wakeups")

WAKE_READ_TIMEOUT_S = 0.2


class Event(Enum):
    JOBS_DUE = "jobs due"
    SLOT_FREED = "slot freed"
    RETRY_DUE = "retry due"
    SCHEDULE_CHANGED = "schedule changed"
    LEASE_STARTED = "lease started"


CROSS_PROCESS = frozenset({Event.JOBS_DUE, Event.SLOT_FREED})

# Called with the worker's name, and then the event's details (LEASE_STARTED: timeout_ms).
Listener = Callable[..., None]


class Wakeups:
    """Publish and subscribe of wake-up events: local listeners per event, and the
    ``redisq:wake`` channel (the workers' sharded channels on a cluster) for the events
    that other coordinators need too. ``workers``: whose wake-ups the listener hears on a
    cluster (on one Redis it hears every worker's); ``slots``: each worker's hash tag
    (``Config.worker_slots``), where its channel lives on a cluster."""

    def __init__(self, redis: RedisClient, workers: Iterable[str] = (), slots: Mapping[str, str | None] | None = None):
        self.redis = redis
        self.workers = tuple(sorted(workers))
        self.slots = dict(slots or {})
        self._listeners: dict[Event, list[Listener]] = defaultdict(list)
        self._sending: set[asyncio.Task[None]] = set()
        self.tasks: list[asyncio.Task[None]] = []  # the channel's listener, once started
        self._stopping = False

    def subscribe(self, events: Event | Iterable[Event], listener: Listener) -> None:
        for event in [events] if isinstance(events, Event) else events:
            self._listeners[event].append(listener)

    def publish(self, event: Event, worker: str, *details: int) -> None:
        """Wake this process's listeners now; a cross-process event is sent to the other
        coordinators in the background."""
        self.deliver(event, worker, *details)
        if event in CROSS_PROCESS:
            task = asyncio.create_task(self._send(worker))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def publish_and_wait(self, event: Event, worker: str) -> None:
        """``publish``, returning once a cross-process event has been sent (or failed to be)."""
        self.deliver(event, worker)
        if event in CROSS_PROCESS:
            await self._send(worker)

    def deliver(self, event: Event, worker: str, *details: int) -> None:
        """Wake this process's listeners of the event only."""
        for listener in self._listeners[event]:
            listener(worker, *details)

    async def _send(self, worker: str) -> None:
        try:
            if is_cluster(self.redis):
                await self.redis.spublish(self.channel(worker), worker)
            else:
                await self.redis.publish(WAKE_CHANNEL, worker)
        except Exception as e:  # the others look again within MAX_IDLE_S anyway
            log.debug("could not publish wake-up for %s: %s", worker, e)

    def channel(self, worker: str) -> str:
        """The worker's sharded channel on a cluster, in its keys' slot."""
        return WorkerKeys(worker, self.slots.get(worker)).wake_channel

    # -- the channel -----------------------------------------------------------------------
    async def start(self) -> None:
        """Listen to the other coordinators' wake-ups (until ``stop``)."""
        self._stopping = False
        listen = self._listen_sharded(self.redis) if is_cluster(self.redis) else self._listen()
        self.tasks.append(asyncio.create_task(listen, name="wake-listener"))

    async def stop(self, timeout_s: float = MAX_IDLE_S + 1) -> None:
        self._stopping = True
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout_s)

    async def _listen(self) -> None:
        backoff = OutageBackoff("wake listener")
        while not self._stopping and not cancelled():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(WAKE_CHANNEL)
                backoff.succeeded()
                while not self._stopping and not cancelled():
                    # A short read timeout: a cancel that redis-py swallows on Python 3.11 must
                    # not hold up stop() for long.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=WAKE_READ_TIMEOUT_S)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.deliver(Event.JOBS_DUE, data.decode() if isinstance(data, bytes) else str(data))
            except Exception as e:
                await backoff.failed(e)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves PubSub.aclose unannotated

    # -- a cluster's sharded channels ------------------------------------------------------
    async def _listen_sharded(self, redis: RedisCluster) -> None:
        backoff = OutageBackoff("wake listener")
        while not self._stopping and not cancelled():
            pubsubs: list[ClusterPubSub] = []
            try:
                by_master: dict[str, list[str]] = defaultdict(list)
                for worker in self.workers:
                    channel = self.channel(worker)
                    by_master[(await node_of(redis, channel)).name].append(channel)
                for channels in by_master.values():
                    pubsub = redis.pubsub()
                    pubsubs.append(pubsub)
                    await pubsub.ssubscribe(*channels)
                backoff.succeeded()
                if not pubsubs:  # no workers: nothing to hear
                    while not self._stopping and not cancelled():
                        await asyncio.sleep(WAKE_READ_TIMEOUT_S)
                    return
                await asyncio.gather(*(self._read_sharded(pubsub) for pubsub in pubsubs))
            except Exception as e:
                await backoff.failed(e)
            finally:
                for pubsub in pubsubs:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def _read_sharded(self, pubsub: ClusterPubSub) -> None:
        while not self._stopping and not cancelled():
            message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=WAKE_READ_TIMEOUT_S)
            if message and message.get("type") in ("smessage", b"smessage"):
                data = message["data"]
                self.deliver(Event.JOBS_DUE, data.decode() if isinstance(data, bytes) else str(data))
