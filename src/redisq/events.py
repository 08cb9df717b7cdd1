"""The event feed: every job's state changes, read from the workers' event streams by one
reader per coordinator and fanned out to each connected client (``GET /events``).

The scripts that change a job's state add one entry per call to the worker's stream
(``moved()`` and ``write_counts()`` in lua/includes/jobs.lua; ``WorkerKeys.events``, about
the last 10,000 events kept): its field ``n`` says how many events it holds, and
``events`` holds them in the order they happened, as runs of jobs that moved to the same
state at the same attempt, ``<state> <attempt> <suffix> <suffix> ...`` joined by ``;``
(a claim of 256 jobs is one entry of one run of 256). An entry written before events were
batched has fields ``job``, ``state``, ``attempt``: one event. The stream id is Redis's clock:
``<ms>-<seq>``; an event is the entry's ``index``-th (from 0).

One reader (``EventFeed``) holds one XREAD BLOCK over all the workers' streams at a time,
whatever the number of clients: it starts with the first client and stops with the last
(or at ``close``). Each client (``Subscription``) has a bounded queue; a client whose
queue is full is dropped (its stream ends) and reconnects with ``Last-Event-ID``. The
embedded store (fakeredis) runs XREAD BLOCK as Redis does (it wakes on an XADD made by a
script), so both stores use the same reader.

**Order and resuming.** Events are sent in *feed order*: by the millisecond of their
stream id, then by worker name, then by the id's sequence, then by their index in the
entry. An event is sent only once its millisecond has passed on Redis's clock (TIME, read
in the same round trip as the XREAD or XRANGE): by then no other event of that millisecond
can still be written, so feed order is also the order of sending, and every client sees the
same order. An event's id is ``<worker>/<stream id>.<index>``, so a client that sends it
back (``Last-Event-ID``) gets exactly the events after it in that order: the rest of its
entry, its worker's entries after that one, and each other worker's from that millisecond
on (a worker that sorts later) or after it (one that sorts before). (An id without
``.<index>``, as feeds sent before events were batched, stands for its whole entry.) They
are read from the backlog (XRANGE, a page at a time, all streams in one MULTI) before live
events; a live event the backlog already sent is dropped by its stream position. What a
client can still miss: the events a stream trimmed before it came back (more than about
10,000 events of one worker behind); and the order is only as good as Redis's clock (an
event whose millisecond is ahead of the clock, after the clock went back, is sent at once).

**On a Redis Cluster** each worker's stream lives on its own master, and one XREAD cannot
span slots (CROSSSLOT), nor a MULTI. So the reader there reads Redis's clock first, on
every master that holds a stream (TIME, in parallel), then each stream (XREAD or XRANGE, in
parallel, each sent to its master): an event is sendable once its millisecond is before the
*earliest* of those clocks, since each master had written every event of the milliseconds
before its clock when the streams were read after it. Feed order, ``Last-Event-ID`` and
what a client can miss stay as above; the order across masters is as good as their clocks
agree (an event of a master whose clock runs ahead waits until the others catch up). The
reader does not block there: after a read that found nothing it waits ``CLUSTER_POLL_S``,
twice as long after each further one, up to ``CLUSTER_IDLE_POLL_S`` (a quiet feed reads
each stream about 4 times a second, not 50; the first event after a quiet spell is sent
within about that long), and reads again at once while events come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.typing import KeyT, StreamIdT

from .connection import RedisClient, is_cluster, node_of
from .engine import redis_errors_mapped
from .errors import RedisqError, UnavailableError, ValidationError
from .keys import WORKER_NAME_RE, WorkerKeys, job_id
from .loops import OutageBackoff, wait_at_most
from .model import iso_from_ms

log = logging.getLogger("redisq.events")

READ_COUNT = 500  # entries one XREAD takes of each stream
READ_BLOCK_MS = 500  # how long one XREAD waits for an entry: below the client's 1 s command timeout
BACKLOG_PAGE = 1000  # entries one XRANGE of the backlog takes of each stream
QUEUE_EVENTS = 10_000  # events waiting for one client; one more and the client is dropped
KEEP_ALIVE_S = 15.0  # a comment line this often on a quiet stream
RECONNECT_MS = 1000  # the `retry:` an EventSource waits before it reconnects
STOP_WAIT_S = 2.0  # how long stop() waits for the reader's XREAD to return
HELD_BACK_S = 0.001  # the wait before reading again the events of a millisecond not yet over
CLUSTER_POLL_S = 0.02  # on a cluster, the reader's wait after a read that found nothing...
CLUSTER_IDLE_POLL_S = 0.25  # ...doubled after each further one, up to this
MAX_SEQ = 2**64 - 1
EVENT_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})(?:\.(\d{1,9}))?\Z")  # a stream id, and the event's index
WHOLE_ENTRY = 2**32  # an index past every event of an entry: a position after the whole entry

# An event's place in its worker's stream, (ms, seq) of its entry and its index there: the
# feed reads the events after it. (ms, seq, WHOLE_ENTRY) is after every event of that entry.
Position = tuple[int, int, int]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_events(fields: Mapping[Any, Any]) -> list[tuple[str, str, int]]:
    """The (job suffix, state, attempt) of each event a stream entry holds, in order: its
    ``events`` are runs ``<state> <attempt> <suffix> <suffix> ...`` joined by ``;``."""
    values = {text(k): text(v) for k, v in fields.items()}
    if "events" not in values:  # an entry from before events were batched: one event
        return [(values.get("job", ""), values.get("state", ""), int(values.get("attempt") or 0))]
    events = []
    for run in values["events"].split(";"):
        state, attempt, *suffixes = run.split(" ")
        events += [(suffix, state, int(attempt)) for suffix in suffixes]
    return events


@dataclass(frozen=True)
class Event:
    """One state change of one job: the ``index``-th event of a stream entry."""

    worker: str
    ms: int
    seq: int
    index: int
    suffix: str
    state: str
    attempt: int

    @classmethod
    def from_entry(cls, worker: str, entry_id: Any, fields: Mapping[Any, Any]) -> list[Event]:
        """The events of one stream entry."""
        ms, _, seq = text(entry_id).partition("-")
        return [cls(worker, int(ms), int(seq), index, suffix, state, attempt)
                for index, (suffix, state, attempt) in enumerate(entry_events(fields))]

    @property
    def position(self) -> Position:
        return self.ms, self.seq, self.index

    @property
    def order(self) -> tuple[int, str, int, int]:
        """Its place in feed order: the millisecond, the worker's name, the sequence, the index."""
        return self.ms, self.worker, self.seq, self.index

    @property
    def event_id(self) -> str:
        return f"{self.worker}/{self.ms}-{self.seq}.{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {"worker": self.worker, "id": job_id(self.worker, self.suffix), "state": self.state,
                "attempt": self.attempt, "at": iso_from_ms(self.ms)}

    def sse(self) -> str:
        """The event as server-sent events write it."""
        return f"id: {self.event_id}\nevent: job\ndata: {json.dumps(self.to_json(), separators=(',', ':'))}\n\n"


@dataclass(frozen=True)
class ResumePoint:
    """Where a client's ``Last-Event-ID`` left off: the ``index``-th event of ``worker``'s
    entry (ms, seq); ``WHOLE_ENTRY`` for an id without an index (the whole entry)."""

    worker: str
    ms: int
    seq: int
    index: int = WHOLE_ENTRY

    @classmethod
    def parse(cls, last_event_id: str, field: str) -> ResumePoint:
        worker, sep, event_id = last_event_id.strip().rpartition("/")
        match = EVENT_ID_RE.match(event_id)
        if not sep or not WORKER_NAME_RE.match(worker) or match is None:
            raise ValidationError(f"{field} must be an event id this feed sent (<worker>/<ms>-<seq>.<index>), "
                                  f"got {last_event_id[:80]!r}", field=field)
        ms, seq = int(match.group(1)), int(match.group(2))
        if ms > MAX_SEQ or seq > MAX_SEQ:
            raise ValidationError(f"{field} names a stream id beyond Redis's", field=field)
        return cls(worker, ms, seq, WHOLE_ENTRY if match.group(3) is None else int(match.group(3)))

    def after_in(self, worker: str) -> Position:
        """The position in ``worker``'s stream after which feed order goes on: after this
        event in its own stream; after its millisecond for a worker that sorts before it,
        and from its millisecond for one that sorts after."""
        if worker == self.worker:
            return self.ms, self.seq, self.index
        if worker < self.worker:
            return self.ms, MAX_SEQ, WHOLE_ENTRY
        return (self.ms - 1, MAX_SEQ, WHOLE_ENTRY) if self.ms > 0 else (0, 0, WHOLE_ENTRY)


def range_start(after: Position) -> str:
    """XRANGE's start for the events after ``after``: its entry itself (inclusive) when
    events of it may follow, else the entries after it (exclusive; Redis refuses ``(``
    before the largest sequence, so that one is the next ms, inclusive)."""
    ms, seq, index = after
    if index != WHOLE_ENTRY:
        return f"{ms}-{seq}"
    return f"{ms + 1}-0" if seq == MAX_SEQ else f"({ms}-{seq}"


Entries = Sequence[Sequence[Event]]  # a stream's read: the events of each entry, entry by entry


def entries_of(worker: str, entries: Iterable[tuple[Any, Any]]) -> list[list[Event]]:
    return [Event.from_entry(worker, entry_id, fields) for entry_id, fields in entries]


def in_feed_order(batches: Mapping[str, Entries], page: int, now_ms: int,
                  clock_read_first: bool = False) -> list[Event]:
    """The events of several streams' reads (``page`` entries at most of each) that can be
    sent, in feed order: those of the milliseconds before ``now_ms`` (Redis's clock when
    they were read: no other event of those can still come), up to where every stream is
    known to be complete (a stream that filled its ``page`` may hold more before a later
    event of another). The rest are read again next time. ``clock_read_first``: ``now_ms``
    was read before the streams (a cluster's earliest clock), so an event of a later
    millisecond waits too. An entry's events share its millisecond: it is sent whole or
    not at all."""
    def sendable(event: Event) -> bool:
        return event.ms < now_ms if clock_read_first else event.ms != now_ms

    events = sorted((event for batch in batches.values() for entry in batch for event in entry if sendable(event)),
                    key=lambda e: e.order)
    full = [batch[-1][-1].order for batch in batches.values() if len(batch) >= page and batch[-1]]
    if not full:
        return events
    horizon = min(full)
    return [event for event in events if event.order <= horizon]


def redis_ms(reply: Any) -> int:
    """TIME's answer (seconds, microseconds) in ms."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def stream_entries(reply: Any) -> Iterable[tuple[Any, Sequence[Any]]]:
    """(stream key, entries) of an XREAD reply (a list in RESP2, a map in RESP3)."""
    if not reply:
        return ()
    if isinstance(reply, Mapping):
        return [(key, value[0] if value and isinstance(value[0], list) else value) for key, value in reply.items()]
    return [(key, entries) for key, entries in reply]


class Subscription:
    """One client's view of the feed: the workers it follows, its bounded queue, and its
    place in each stream once it resumed (so no live event repeats one of its backlog)."""

    def __init__(self, feed: EventFeed, workers: Sequence[str], resume: ResumePoint | None):
        self.feed = feed
        self.workers = frozenset(workers)
        self.every_worker = self.workers == frozenset(feed.workers)
        self.resume = resume
        self.positions: dict[str, Position] = (
            {worker: resume.after_in(worker) for worker in workers} if resume is not None else {})
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self.ended = False
        self.dropped = False

    def offer(self, events: Sequence[Event]) -> None:
        """Live events from the reader (in feed order); a client that has fallen
        ``QUEUE_EVENTS`` behind is dropped."""
        if self.ended:
            return
        mine = events if self.every_worker else [e for e in events if e.worker in self.workers]
        if not mine:
            return
        if len(self._queue) + len(mine) > QUEUE_EVENTS:
            self.dropped = True
            log.info("an event stream fell %d events behind and was ended (its client reconnects with "
                     "Last-Event-ID)", QUEUE_EVENTS)
            self.feed.unsubscribe(self)
            return
        self._queue.extend(mine)
        self._wake.set()

    def end(self) -> None:
        self.ended = True
        self._queue.clear()
        self._wake.set()

    def _unseen(self, events: Iterable[Event]) -> list[Event]:
        """The events after this client's place in their streams; moves it on."""
        fresh = []
        for event in events:
            if self.positions and event.position <= self.positions.get(event.worker, (-1, 0, 0)):
                continue
            if self.positions:
                self.positions[event.worker] = event.position
            fresh.append(event)
        return fresh

    async def lines(self) -> AsyncIterator[str]:
        """The response body: the backlog after the resume point, then live events, with a
        comment line every ``KEEP_ALIVE_S`` while nothing happens."""
        try:
            yield f"retry: {RECONNECT_MS}\n\n"
            if self.resume is not None:
                async for chunk in self._backlog():
                    yield chunk
            while not self.ended:
                if not self._queue:
                    self._wake.clear()
                    if not await wait_at_most(self._wake, KEEP_ALIVE_S):
                        yield ": keep-alive\n\n"
                    continue
                events = list(self._queue)
                self._queue.clear()
                fresh = self._unseen(events)
                if fresh:
                    yield "".join(event.sse() for event in fresh)
        except RedisqError as e:  # the backlog could not be read: the client comes back later
            yield f": {e.message}; reconnect with Last-Event-ID\n\n"
        finally:
            self.feed.unsubscribe(self)

    async def _backlog(self) -> AsyncIterator[str]:
        """The events after the resume point that the streams still hold, a page at a time."""
        while not self.ended:
            batches, now_ms = await self.feed.read_after(self.positions, BACKLOG_PAGE)
            events = self._unseen(in_feed_order(batches, BACKLOG_PAGE, now_ms, self.feed.clock_read_first))
            if events:
                yield "".join(event.sse() for event in events)
            if all(len(batch) < BACKLOG_PAGE for batch in batches.values()):
                return


class EventFeed:
    """This coordinator's one reader of the workers' event streams, and its subscribers."""

    def __init__(self, redis: RedisClient, workers: Iterable[str], slots: Mapping[str, str | None] | None = None):
        self.redis = redis
        self.workers = tuple(sorted(workers))
        self._streams = {worker: WorkerKeys(worker, (slots or {}).get(worker)).events for worker in self.workers}
        self._stream_worker = {stream: worker for worker, stream in self._streams.items()}
        self._subscribers: set[Subscription] = set()
        self._positions: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False
        self.clock_read_first = is_cluster(redis)  # a cluster's reads (see the module's doc)
        self._quiet_wait_s = CLUSTER_POLL_S  # a cluster's wait after the next read that finds nothing

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def reading(self) -> bool:
        """Whether the reader runs (it does while any client is connected)."""
        return self._reader is not None and not self._reader.done()

    async def subscribe(self, workers: Sequence[str], resume: ResumePoint | None = None) -> Subscription:
        """A new client of ``workers``' events; starts the reader when it is the first.
        ``UnavailableError`` when Redis cannot be read or the coordinator is stopping."""
        async with self._start_lock:
            if self._closed:
                raise UnavailableError("the coordinator is stopping")
            if not self.reading:
                self._positions = await self._start_positions()
                self._reader = asyncio.create_task(self._read(), name="event-feed")
            subscription = Subscription(self, workers, resume)
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """The client went (or was dropped); the reader stops after its XREAD when it was the last."""
        subscription.end()
        self._subscribers.discard(subscription)

    async def _start_positions(self) -> dict[str, str]:
        """Where the reader starts in every stream: at the millisecond Redis is in (its
        events are not sendable yet, so no client can have had them from the backlog)."""
        with redis_errors_mapped():
            now_ms = await self._clock_ms() if self.clock_read_first else redis_ms(await self.redis.time())
        return {key: f"{now_ms - 1}-{MAX_SEQ}" for key in self._stream_worker}

    async def _clock_ms(self) -> int:
        """On a cluster: the earliest clock of the masters that hold the workers' streams
        (one TIME per master)."""
        if not is_cluster(self.redis) or not self._stream_worker:
            return redis_ms(await self.redis.time())
        nodes = {}
        for key in self._stream_worker:
            node = await node_of(self.redis, key)
            nodes[node.name] = node
        clocks = await asyncio.gather(*(self.redis.time(target_nodes=node) for node in nodes.values()))
        return min(redis_ms(clock) for clock in clocks)

    async def _on_its_master(self, key: str, *command: Any) -> Any:
        """One stream command sent to the master of the stream (a cluster's client follows a
        MOVED from there)."""
        if not is_cluster(self.redis):  # pragma: no cover - only the cluster reads this way
            return await self.redis.execute_command(*command)
        return await self.redis.execute_command(*command, target_nodes=await node_of(self.redis, key))

    async def read_after(self, positions: Mapping[str, Position], page: int) -> tuple[dict[str, Entries], int]:
        """Up to ``page`` entries of each worker's stream from its position's entry on (see
        ``range_start``), all read at one instant (MULTI), and Redis's clock then (ms)."""
        workers = list(positions)
        if self.clock_read_first:
            with redis_errors_mapped():
                now_ms = await self._clock_ms()
                pages = await asyncio.gather(*(
                    self._on_its_master(self._streams[worker], "XRANGE", self._streams[worker],
                                        range_start(positions[worker]), "+", "COUNT", page)
                    for worker in workers))
            return ({worker: entries_of(worker, entries) for worker, entries in zip(workers, pages, strict=True)},
                    now_ms)
        with redis_errors_mapped():
            async with self.redis.pipeline(transaction=True) as pipe:
                for worker in workers:
                    pipe.xrange(self._streams[worker], range_start(positions[worker]), "+", count=page)
                pipe.time()
                *replies, now = await pipe.execute()
        return ({worker: entries_of(worker, entries) for worker, entries in zip(workers, replies, strict=True)},
                redis_ms(now))

    async def _read(self) -> None:
        """XREAD over every stream while anyone listens, with TIME in the same round trip;
        what can be sent (``in_feed_order``) to every subscriber. Events of the current
        millisecond are read again a moment later. An outage backs off (clients get
        keep-alives meanwhile) and goes on from where it was."""
        backoff = OutageBackoff("event feed")
        while self._subscribers and not self._closed:
            try:
                read, now_ms = await (self._read_each_master() if self.clock_read_first else self._read_all())
            except Exception as e:  # any failure backs off, as every loop's does
                await backoff.failed(e)
                continue
            backoff.succeeded()
            batches: dict[str, Entries] = {}
            for key, entries in read:
                worker = self._stream_worker[text(key)]
                batches[worker] = entries_of(worker, entries)
            events = in_feed_order(batches, READ_COUNT, now_ms, self.clock_read_first)
            for event in events:
                self._positions[self._streams[event.worker]] = f"{event.ms}-{event.seq}"
            if events:
                for subscription in list(self._subscribers):
                    subscription.offer(events)
            if len(events) < sum(len(entry) for batch in batches.values() for entry in batch):
                await asyncio.sleep(HELD_BACK_S)  # the rest are of this millisecond: soon sendable

    async def _read_all(self) -> tuple[Iterable[tuple[Any, Sequence[Any]]], int]:
        """One XREAD BLOCK over every stream, and TIME after it in the same round trip."""
        streams: dict[KeyT, StreamIdT] = {key: at for key, at in self._positions.items()}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            pipe.time()
            reply, now = await pipe.execute()
        return stream_entries(reply), redis_ms(now)

    async def _read_each_master(self) -> tuple[Iterable[tuple[Any, Sequence[Any]]], int]:
        """A cluster's read: the earliest clock of the masters, then every stream after it
        (one XREAD each, on its master, in parallel); a pause when nothing came."""
        now_ms = await self._clock_ms()
        positions = list(self._positions.items())
        replies = await asyncio.gather(*(self._on_its_master(key, "XREAD", "COUNT", READ_COUNT, "STREAMS", key, at)
                                         for key, at in positions))
        read = [entry for reply in replies for entry in stream_entries(reply)]
        if read:
            self._quiet_wait_s = CLUSTER_POLL_S
        else:
            await asyncio.sleep(self._quiet_wait_s)
            self._quiet_wait_s = min(2 * self._quiet_wait_s, CLUSTER_IDLE_POLL_S)
        return read, now_ms

    def close(self) -> None:
        """End every open stream and refuse new ones: ``redisq serve`` calls this as its
        shutdown starts, so no open stream holds it up."""
        self._closed = True
        for subscription in list(self._subscribers):
            self.unsubscribe(subscription)

    async def stop(self) -> None:
        self.close()
        reader = self._reader
        if reader is None or reader.done():
            return
        _, pending = await asyncio.wait([reader], timeout=STOP_WAIT_S)
        if pending:
            reader.cancel()
