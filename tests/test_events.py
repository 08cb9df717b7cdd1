"""``GET /events`` as a console sees it: a real coordinator (its API under uvicorn on a free
port, a real worker over HTTP) on a throwaway Redis and on the embedded store, read by an
HTTP client that parses the server-sent events as a browser's EventSource does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from redisq.events import CLUSTER_IDLE_POLL_S, KEEP_ALIVE_S

from redis_server import free_port
from test_cli import ServeProcess
from test_dispatch import Running, Worker, coordinator, worker_config

LIFECYCLE = ["scheduled", "running", "succeeded"]


@dataclass
class Sse:
    """One event as an EventSource hands it over."""

    id: str
    event: str
    data: dict[str, Any]


@dataclass
class EventReader:
    """An open ``GET /events``: its answer's headers, and each event as it comes."""

    response: httpx.Response
    events: list[Sse] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False

    async def read(self) -> None:
        fields: dict[str, str] = {}
        async for line in self.response.aiter_lines():
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
            elif "data" in fields:
                data = json.loads(fields["data"])
                self.events.append(Sse(fields.get("id", ""), fields.get("event", "message"), data))
                fields = {}
            else:
                fields = {}
        self.ended = True

    async def until(self, what: str, predicate: Callable[[list[Sse]], bool], within_s: float = 5.0) -> list[Sse]:
        deadline = time.monotonic() + within_s
        while not predicate(self.events):
            assert not self.ended, f"{what}: the stream ended; got {self.events}"
            assert time.monotonic() < deadline, f"{what}: not within {within_s} s; got {self.events}"
            await asyncio.sleep(0.01)
        return self.events

    def of(self, job_id: str) -> list[str]:
        return [e.data["state"] for e in self.events if e.data["id"] == job_id]


@contextlib.asynccontextmanager
async def reading(run: Running, params: dict[str, str] | None = None,
                  headers: dict[str, Any] | None = None) -> AsyncIterator[EventReader]:
    """``GET /events`` open on ``run``'s coordinator until the block ends."""
    async with httpx.AsyncClient(base_url=str(run.client.base_url), timeout=httpx.Timeout(5.0, read=None)) as client:
        request = client.build_request("GET", "/events", params=params, headers=headers)
        response = await client.send(request, stream=True)
        reader = EventReader(response)
        task = asyncio.create_task(reader.read()) if response.status_code == 200 else None
        try:
            yield reader
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await task
            await response.aclose()


@contextlib.asynccontextmanager
async def feed(redis: Any, *workers: Any, **settings: Any) -> AsyncIterator[Running]:
    """A coordinator whose open event streams are ended before its API server stops."""
    async with coordinator(redis, *workers, **settings) as run:
        try:
            yield run
        finally:
            run.coordinator.events.close()


def event_position(event_id: str) -> tuple[int, int, int]:
    """(ms, seq, index) of an event id ``<worker>/<ms>-<seq>.<index>``."""
    match = re.fullmatch(r"[a-z0-9_-]+/(\d+)-(\d+)\.(\d+)", event_id)
    assert match, event_id
    ms, seq, index = match.groups()
    return int(ms), int(seq), int(index)


def finished_all(job_ids: list[str]) -> Callable[[list[Sse]], bool]:
    return lambda events: all(any(e.data["id"] == j and e.data["state"] == "succeeded" for e in events)
                              for j in job_ids)


async def test_each_job_s_events_come_in_order_with_their_attempt_and_time(engine_redis):
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run, reading(run) as reader:
        assert reader.response.status_code == 200
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        assert reader.response.headers["cache-control"] == "no-cache"
        jobs = [(await run.enqueue(worker="work", id=f"job-{i}"))["id"] for i in range(3)]
        await reader.until("every job succeeded", finished_all(jobs))
        for job_id in jobs:
            assert reader.of(job_id) == LIFECYCLE, reader.events
        for event in reader.events:
            assert event.event == "job"
            assert set(event.data) == {"worker", "id", "state", "attempt", "at"}
            assert event.data["worker"] == "work"
            assert event.data["attempt"] == (0 if event.data["state"] == "scheduled" else 1)
            worker_name, _, stream_id = event.id.partition("/")
            assert worker_name == "work"
            ms = int(stream_id.split("-")[0])
            assert int(datetime.fromisoformat(event.data["at"]).timestamp() * 1000) == ms
        ids = [event_position(e.id) for e in reader.events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # one worker: in stream order, none twice


async def test_a_failed_attempt_shows_retrying_then_the_next_attempt(engine_redis):
    async def fail_once(call: Any) -> Any:
        from aiohttp import web
        return web.Response(status=500, text="boom") if call.attempt == 1 else web.json_response({})

    async with Worker(fail_once) as worker, feed(engine_redis, worker_config(worker.url)) as run, \
            reading(run) as reader:
        job_id = (await run.enqueue(worker="work", id="flaky"))["id"]
        await reader.until("succeeded", finished_all([job_id]))
        states = [(e.data["state"], e.data["attempt"]) for e in reader.events if e.data["id"] == job_id]
        assert states == [("scheduled", 0), ("running", 1), ("retrying", 1), ("running", 2), ("succeeded", 2)]


async def test_worker_filters_the_stream_and_an_unknown_one_is_422(engine_redis):
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url, name="mail"),
                                        worker_config(worker.url, name="sms")) as run:
        async with reading(run, {"worker": "sms"}) as only_sms, reading(run) as everything:
            mail = (await run.enqueue(worker="mail", id="m"))["id"]
            sms = (await run.enqueue(worker="sms", id="s"))["id"]
            await everything.until("both succeeded", finished_all([mail, sms]))
            await only_sms.until("sms succeeded", finished_all([sms]))
            await asyncio.sleep(0.2)
            assert {e.data["worker"] for e in only_sms.events} == {"sms"}
            assert only_sms.of(sms) == LIFECYCLE
            assert everything.of(mail) == LIFECYCLE and everything.of(sms) == LIFECYCLE
        for params, field_name in (({"worker": "nobody"}, "worker"), ({"wrker": "sms"}, "wrker"),
                                   ({"lastEventId": "not-an-id"}, "lastEventId")):
            resp = await run.client.get("/events", params=params)
            assert resp.status_code == 422, resp.text
            assert resp.json()["field"] == field_name
        resp = await run.client.get("/events", headers={"Last-Event-ID": "sms/12"})
        assert resp.status_code == 422 and resp.json()["field"] == "Last-Event-ID"


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed(engine_redis, how):
    """Two workers whose jobs run at once (events of both in the same milliseconds): the
    resumed stream is exactly the tail of the one that never went away."""
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url, name="mail"),
                                        worker_config(worker.url, name="sms")) as run, \
            reading(run) as witness:
        async with reading(run) as first:
            jobs = [j["id"] for j in await run.enqueue_batch([{"worker": w, "id": f"a{i}"} for i in range(5)
                                                                for w in ("mail", "sms")])]
            await first.until("the first jobs", finished_all(jobs))
        seen = list(first.events)
        last = seen[-1].id
        later = [j["id"] for j in await run.enqueue_batch([{"worker": w, "id": f"b{i}"} for i in range(5)
                                                           for w in ("mail", "sms")])]
        await witness.until("the later jobs", finished_all(jobs + later))
        await asyncio.sleep(0.2)
        resume = {"headers": {"Last-Event-ID": last}} if how == "header" else {"params": {"lastEventId": last}}
        async with reading(run, **resume) as again:
            await again.until("the later jobs again", finished_all(later))
            third = (await run.enqueue(worker="mail", id="c"))["id"]  # live after the backlog
            await again.until("a live job", finished_all([third]))
            await witness.until("a live job", finished_all([third]))
            await asyncio.sleep(0.2)
        everything = [e.id for e in witness.events]
        assert everything[:len(seen)] == [e.id for e in seen]  # every client sees the same order
        assert [e.id for e in again.events] == everything[len(seen):]  # none twice, none missed
        assert len(set(everything)) == len(everything)


@pytest.mark.parametrize("k", [0, 7, 19])
async def test_a_batch_is_one_entry_whose_events_each_have_an_id_to_resume_after(engine_redis, k):
    """An enqueue of 20 jobs is one stream entry: 20 events with ids <ms>-<seq>.0 .. .19,
    in the batch's order; resuming after the k-th gets the rest of the entry, then the
    later entries, none twice."""
    n = 20
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run, reading(run) as witness:
        jobs = [j["id"] for j in await run.enqueue_batch([{"worker": "work", "id": f"b{i}"} for i in range(n)])]
        await witness.until("the batch succeeded", finished_all(jobs))
        await asyncio.sleep(0.2)
        scheduled = [e for e in witness.events if e.data["state"] == "scheduled"]
        assert [e.data["id"] for e in scheduled] == jobs
        positions = [event_position(e.id) for e in scheduled]
        assert {p[:2] for p in positions} == {positions[0][:2]}  # one entry
        assert [p[2] for p in positions] == list(range(n))
        everything = [e.id for e in witness.events]
        assert len(set(everything)) == len(everything)
        assert everything[:n] == [e.id for e in scheduled]
        async with reading(run, headers={"Last-Event-ID": scheduled[k].id}) as again:
            await again.until("the batch again", finished_all(jobs))
            await asyncio.sleep(0.2)
        assert [e.id for e in again.events] == everything[k + 1:]


async def test_a_resumed_filtered_stream_gets_only_its_worker_s_missed_events(engine_redis):
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url, name="mail"),
                                        worker_config(worker.url, name="sms")) as run, \
            reading(run, {"worker": "mail"}) as witness:
        first = (await run.enqueue(worker="mail", id="one"))["id"]
        await witness.until("one", finished_all([first]))
        last = witness.events[-1].id
        second = (await run.enqueue(worker="mail", id="two"))["id"]
        await run.enqueue(worker="sms", id="other")
        await witness.until("two", finished_all([second]))
        async with reading(run, {"worker": "mail"}, {"Last-Event-ID": last}) as again:
            await again.until("two again", finished_all([second]))
            await asyncio.sleep(0.2)
        assert [e.id for e in again.events] == [e.id for e in witness.events if e.data["id"] == second]


async def test_one_reader_serves_every_client_and_stops_with_the_last(engine_redis):
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run:
        events = run.coordinator.events
        assert not events.reading
        async with contextlib.AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(reading(run)) for _ in range(20)]
            assert events.subscribers == 20 and events.reading
            job_id = (await run.enqueue(worker="work", id="fan-out"))["id"]
            for reader in readers:
                await reader.until("fan-out", finished_all([job_id]))
                assert reader.of(job_id) == LIFECYCLE
        deadline = time.monotonic() + 3
        while events.reading or events.subscribers:
            assert time.monotonic() < deadline, "the reader still runs with no client"
            await asyncio.sleep(0.02)


async def test_on_a_cluster_a_quiet_feed_reads_a_few_times_a_second_and_still_sends_what_comes(
        cluster_redis, monkeypatch):
    """A cluster's reader cannot block on its streams (the module's doc): while they are quiet it
    waits longer between reads (up to CLUSTER_IDLE_POLL_S), where it read every 20 ms before."""
    async with Worker() as worker, feed(cluster_redis, worker_config(worker.url)) as run:
        events = run.coordinator.events
        reads: list[float] = []
        read_clock = events._clock_ms

        async def counted() -> int:
            reads.append(time.monotonic())
            return await read_clock()
        monkeypatch.setattr(events, "_clock_ms", counted)
        async with reading(run) as reader:
            await asyncio.sleep(1.0)  # quiet by now
            reads.clear()
            await asyncio.sleep(2.0)
            assert 2 <= len(reads) <= 2.0 / CLUSTER_IDLE_POLL_S + 2, reads
            job_id = (await run.enqueue(worker="work", id="after-a-quiet-spell"))["id"]
            await reader.until("its events", finished_all([job_id]), within_s=5)
            assert reader.of(job_id) == LIFECYCLE


async def test_a_client_that_cannot_keep_up_is_dropped_and_resumes(engine_redis, monkeypatch):
    """A client more than QUEUE_EVENTS behind: its stream ends, and reconnecting with the
    last id it got it has everything."""
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run:
        never_reads = await run.coordinator.events.subscribe(["work"])
        async with reading(run) as slow:
            first = (await run.enqueue(worker="work", id="first"))["id"]
            await slow.until("first", finished_all([first]))
            monkeypatch.setattr("redisq.events.QUEUE_EVENTS", 5)
            jobs = [j["id"] for j in await run.enqueue_batch([{"worker": "work", "id": f"j{i}"} for i in range(10)])]
            deadline = time.monotonic() + 3
            while not slow.ended:
                assert time.monotonic() < deadline, "a stream 10 events behind was not ended"
                await asyncio.sleep(0.02)
        assert never_reads.dropped and never_reads.ended and run.coordinator.events.subscribers == 0
        monkeypatch.setattr("redisq.events.QUEUE_EVENTS", 10_000)
        async with reading(run, headers={"Last-Event-ID": slow.events[-1].id}) as again:
            await again.until("the batch", finished_all(jobs))
            await asyncio.sleep(0.2)
        assert again.of(first) == []
        for job_id in jobs:  # what the dropped stream got, then the rest: each job's events once
            assert slow.of(job_id) + again.of(job_id) == LIFECYCLE


async def test_a_quiet_stream_gets_a_keep_alive_comment(engine_redis, monkeypatch):
    monkeypatch.setattr("redisq.events.KEEP_ALIVE_S", 0.2)
    assert KEEP_ALIVE_S == 15.0  # what a real stream waits
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run, reading(run) as reader:
        await asyncio.sleep(0.7)
        assert reader.comments.count("keep-alive") >= 2 and reader.events == []


async def test_stop_ends_open_streams_and_does_not_hang(engine_redis):
    async with Worker() as worker, coordinator(engine_redis, worker_config(worker.url)) as run, \
            reading(run) as reader:
        started = time.monotonic()
        await asyncio.wait_for(run.coordinator.events.stop(), 5)
        deadline = time.monotonic() + 3
        while not reader.ended:
            assert time.monotonic() < deadline, "an open stream outlived the feed's stop"
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 3
        resp = await run.client.get("/events")
        assert resp.status_code == 503  # a stopping coordinator takes no new stream


async def test_with_api_tokens_the_stream_needs_a_token(engine_redis):
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url), api_tokens=("ops",)) as run:
        resp = await run.client.get("/events")
        assert resp.status_code == 401
        async with reading(run, headers={"Authorization": "Bearer ops"}) as reader:
            assert reader.response.status_code == 200


HOSTILE = ["", " ", "work", "WORK", "nobody", "work/", "/1-0", "work/1-0", "work/0-0", "work/1", "work/-1-0",
           "work/1-0-0", "work/99999999999999999999-0", "work/18446744073709551616-0", "work/1-18446744073709551615",
           "work/00001-00002", "a" * 65 + "/1-0", "work/1-0 ", " work/1-0", "%00", "\u00e9/1-0", "work/\u00e9",
           "../1-0", "work//1-0", "work/1-0/1-0", "9" * 4000]


async def test_hostile_parameters_answer_200_or_422_never_5xx(engine_redis):
    """Each value as the worker, the lastEventId and the Last-Event-ID header: a stream
    (read for its headers only, then closed) or a 422 naming the field."""
    async with Worker() as worker, feed(engine_redis, worker_config(worker.url)) as run:
        await run.enqueue(worker="work", id="some-events")
        for value in HOSTILE:
            for params, headers in (({"worker": value}, {}), ({"lastEventId": value}, {}),
                                    ({}, {"Last-Event-ID": value.strip().encode()}),
                                    ({"worker": "work", "lastEventId": value}, {})):
                async with reading(run, params, headers) as reader:
                    status = reader.response.status_code
                    assert status in (200, 422), (params, headers, status)
                    if status == 422:
                        assert (await reader.response.aread()) and "field" in json.loads(reader.response.text)
        deadline = time.monotonic() + 3
        while run.coordinator.events.subscribers:
            assert time.monotonic() < deadline, "closed streams left subscriptions behind"
            await asyncio.sleep(0.02)


def test_serve_stops_promptly_with_a_stream_open(redis_url, tmp_path):
    """SIGTERM to `redisq serve` while a client reads /events: the stream ends and serve
    exits 0 at once, not after uvicorn's graceful timeout (shutdown_grace + 1 s)."""
    port = free_port()
    config = tmp_path / "redisq.toml"
    config.write_text(f'port = {port}\nsecret = "events"\nredis_url = "{redis_url}"\nshutdown_grace = 10\n\n'
                      '[workers.work]\nurl = "http://127.0.0.1:9/nothing-listens"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISQ_")}
    serve = ServeProcess(["--config", str(config)], env, tmp_path)
    try:
        serve.wait_for_line("serving on")
        with httpx.stream("GET", f"http://127.0.0.1:{port}/events", timeout=httpx.Timeout(5.0, read=10.0)) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines).startswith("retry:")
            started = time.monotonic()
            serve.process.terminate()
            rest = list(lines)  # ends when serve ends the stream
            assert time.monotonic() - started < 5, rest
        assert serve.process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        serve.stop()
    assert not [line for line in serve.lines if "Traceback" in line or "unexpected error" in line], serve.lines
