"""Dead-letter callbacks (``on_dead``) end to end: a real worker that answers 404, real
coordinators (their API under uvicorn) on a throwaway Redis (and the embedded store), and a
real HTTP endpoint at the callback URL that records what it is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from redisq.dead_letters import RETRY_DELAYS_S
from redisq.keys import DEAD_LETTER_GROUP, WorkerKeys
from redisq.logs import EVENT_ATTR, FIELDS_ATTR
from redisq.security import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_dispatch

from test_dispatch import SECRET, Call, Worker, coordinator, worker_config


async def not_found(call: Call) -> web.StreamResponse:
    return web.Response(status=404, text="no such route")


class Callbacks(Worker):
    """The on_dead endpoint: answers each POST with the next of ``statuses`` (then 200)."""

    def __init__(self, *statuses: int):
        self.statuses = list(statuses)

        async def answer(call: Call) -> web.StreamResponse:
            return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

        super().__init__(answer)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append(Call(json.loads(body), {**dict(request.headers), "raw": body.decode()}, time.time()))
        return await self.behave(self.calls[-1])

    def of(self, job_id: str) -> list[Call]:
        return [c for c in self.calls if c.body["job"]["id"] == job_id]


def dying(url: str, on_dead: str) -> Any:
    return worker_config(url, name="work", max_attempts=2, on_dead=on_dead)


async def wait_for(what: str, predicate: Any, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.02)


def assert_signed_dead_job(call: Call, job_id: str) -> None:
    verify_dispatch([SECRET.encode()], call.headers[TIMESTAMP_HEADER], call.headers[SIGNATURE_HEADER],
                    call.headers["raw"].encode())  # raises unless signed with the coordinator's key
    assert call.body["event"] == "dead"
    job = call.body["job"]
    assert job["id"] == job_id and job["state"] == "dead" and job["attempts"] == 2
    assert [(a["attempt"], a["status"], a["outcome"]) for a in job["history"]] == [(1, 404, "failed"),
                                                                                  (2, 404, "failed")]
    assert job["lastError"].startswith("HTTP 404")


async def test_a_worker_that_404s_gets_one_signed_callback_per_dead_job_with_its_history(engine_redis):
    async with Worker(not_found) as worker, Callbacks() as callbacks, \
            coordinator(engine_redis, dying(worker.url, callbacks.url)) as run:
        jobs = [j["id"] for j in await run.enqueue_batch([{"worker": "work", "id": f"j{i}"} for i in range(3)])]
        for job_id in jobs:
            assert (await run.finished(job_id))["state"] == "dead"
        await wait_for("a callback per dead job", lambda: len(callbacks.calls) >= 3)
        await asyncio.sleep(0.5)  # nothing more comes
        assert sorted(c.body["job"]["id"] for c in callbacks.calls) == sorted(jobs)
        for job_id in jobs:
            (call,) = callbacks.of(job_id)
            assert_signed_dead_job(call, job_id)


async def test_two_coordinators_call_each_death_back_once(redis_url, real_redis):
    async with Worker(not_found) as worker, Callbacks() as callbacks, \
            coordinator(real_redis, dying(worker.url, callbacks.url)) as first, \
            coordinator(type(real_redis).from_url(redis_url), dying(worker.url, callbacks.url)) as second:
        jobs = [j["id"] for j in await first.enqueue_batch([{"worker": "work", "id": f"j{i}"} for i in range(20)])]
        for job_id in jobs:
            assert (await second.finished(job_id))["state"] == "dead"
        await wait_for("a callback per dead job", lambda: len(callbacks.calls) >= len(jobs))
        await asyncio.sleep(1.0)  # no second callback of any
        assert sorted(c.body["job"]["id"] for c in callbacks.calls) == sorted(jobs)
        for call in callbacks.calls:
            assert_signed_dead_job(call, call.body["job"]["id"])
        stream = WorkerKeys("work").events
        assert (await real_redis.xpending(stream, DEAD_LETTER_GROUP))["pending"] == 0  # all acknowledged


async def test_a_callback_that_fails_twice_then_answers_200_is_delivered_once(engine_redis, monkeypatch):
    monkeypatch.setattr("redisq.dead_letters.RETRY_DELAYS_S", (0.2, 0.2, 0.2))
    assert RETRY_DELAYS_S == (5.0, 30.0, 120.0, 600.0)  # what a real one waits
    async with Worker(not_found) as worker, Callbacks(500, 503) as callbacks, \
            coordinator(engine_redis, dying(worker.url, callbacks.url)) as run:
        job_id = (await run.enqueue(worker="work", id="doomed"))["id"]
        await run.finished(job_id)
        await wait_for("the third callback", lambda: len(callbacks.calls) >= 3)
        await asyncio.sleep(1.0)  # the 200 ends it: no fourth
        assert len(callbacks.calls) == 3
        for call in callbacks.calls:
            assert_signed_dead_job(call, job_id)
        stream = WorkerKeys("work").events
        assert (await engine_redis.xpending(stream, DEAD_LETTER_GROUP))["pending"] == 0


async def test_a_callback_that_never_answers_2xx_is_given_up_with_a_warning(engine_redis, monkeypatch, caplog):
    monkeypatch.setattr("redisq.dead_letters.RETRY_DELAYS_S", (0.1, 0.1))
    caplog.set_level(logging.WARNING, logger="redisq.signals")
    async with Worker(not_found) as worker, Callbacks(500, 500, 500, 500) as callbacks, \
            coordinator(engine_redis, dying(worker.url, callbacks.url)) as run:
        job_id = (await run.enqueue(worker="work", id="doomed"))["id"]
        await run.finished(job_id)
        await wait_for("the warning", lambda: any(getattr(r, EVENT_ATTR, "") == "dead_letter_failed"
                                                  for r in caplog.records))
        await asyncio.sleep(0.5)
        assert len(callbacks.calls) == 3
        (record,) = [r for r in caplog.records if getattr(r, EVENT_ATTR, "") == "dead_letter_failed"]
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert job_id in message and callbacks.url in message and "3 attempts" in message and "HTTP 500" in message
        assert getattr(record, FIELDS_ATTR) == {"worker": "work", "job": job_id, "url": callbacks.url, "attempts": 3,
                                                "error": "HTTP 500"}


async def test_a_death_left_pending_by_a_stopped_coordinator_is_called_back_by_another(redis_url, real_redis,
                                                                                       monkeypatch):
    monkeypatch.setattr("redisq.dead_letters.RETRY_DELAYS_S", (30.0,))
    monkeypatch.setattr("redisq.dead_letters.CLAIM_IDLE_MS", 500)
    monkeypatch.setattr("redisq.dead_letters.CLAIM_EVERY_S", 0.2)
    async with Worker(not_found) as worker, Callbacks(500) as callbacks:
        async with coordinator(real_redis, dying(worker.url, callbacks.url)) as first:
            job_id = (await first.enqueue(worker="work", id="doomed"))["id"]
            await first.finished(job_id)
            await wait_for("the first callback", lambda: len(callbacks.calls) == 1)
        # the first coordinator stopped while its callback waited to retry: the entry is pending
        async with coordinator(type(real_redis).from_url(redis_url), dying(worker.url, callbacks.url)):
            await wait_for("the callback by the other", lambda: len(callbacks.calls) == 2)
            await asyncio.sleep(0.5)
        assert [c.body["job"]["id"] for c in callbacks.calls] == [job_id, job_id]
        assert (await real_redis.xpending(WorkerKeys("work").events, DEAD_LETTER_GROUP))["pending"] == 0


async def test_an_entry_of_several_deaths_calls_each_back_once_and_is_acknowledged_after_the_last(engine_redis,
                                                                                                 monkeypatch):
    """One script call's entry holds several events: each death in it is called back once,
    the other states not at all, and the entry stays pending until its last death is
    delivered (here the second, whose first callback is answered 500)."""
    monkeypatch.setattr("redisq.dead_letters.RETRY_DELAYS_S", (0.5,))
    refused: set[str] = set()

    async def refuse_b_once(call: Call) -> web.StreamResponse:
        dead = call.body["job"]["id"]
        if dead == "work:b" and dead not in refused:
            refused.add(dead)
            return web.Response(status=500)
        return web.Response(status=200)

    stream = WorkerKeys("work").events
    async with Worker(not_found) as worker, Callbacks() as callbacks, \
            coordinator(engine_redis, dying(worker.url, callbacks.url)):
        callbacks.behave = refuse_b_once
        deadline = time.monotonic() + 5
        while not await engine_redis.exists(stream) or not await engine_redis.xinfo_groups(stream):
            assert time.monotonic() < deadline, "the on_dead group was not made"
            await asyncio.sleep(0.02)
        # an entry as a settle of four receipts writes it (the jobs are gone: purged, say)
        await engine_redis.xadd(stream, {"n": 4, "events": "dead 2 a;succeeded 1 x;dead 2 b;dead 1 c"})
        await wait_for("a callback per death", lambda: len(callbacks.calls) >= 3)
        assert (await engine_redis.xpending(stream, DEAD_LETTER_GROUP))["pending"] == 1  # b is not delivered yet
        await wait_for("b again", lambda: len(callbacks.calls) >= 4)
        deadline = time.monotonic() + 5
        while (await engine_redis.xpending(stream, DEAD_LETTER_GROUP))["pending"]:
            assert time.monotonic() < deadline, "the entry was not acknowledged after its last death"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
    assert sorted(c.body["job"]["id"] for c in callbacks.calls) == ["work:a", "work:b", "work:b", "work:c"]
    assert {c.body["job"]["attempts"] for c in callbacks.of("work:c")} == {1}  # the death's own attempt


async def test_no_callback_for_a_job_that_did_not_die(engine_redis):
    async def ok(call: Call) -> web.StreamResponse:
        return web.json_response({})

    async with Worker(ok) as worker, Callbacks() as callbacks, \
            coordinator(engine_redis, dying(worker.url, callbacks.url)) as run:
        job_id = (await run.enqueue(worker="work", id="fine"))["id"]
        assert (await run.finished(job_id))["state"] == "succeeded"
        await asyncio.sleep(1.0)
        assert callbacks.calls == []
