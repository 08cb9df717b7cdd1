"""The dispatcher end to end: a real worker HTTP server, a real API server for receipts.

The worker is an aiohttp server on a free port in the test's own event loop. It records
every call on arrival (``time.time()``, the clock Redis's ``TIME`` also reads on this
machine) and answers as each test tells it. The coordinator's API runs under uvicorn on
a free port, so a worker that answers 202 can post its receipt to the ``receiptUrl`` it
was given. Every test runs on a real Redis and on the embedded store, except the one that
needs two coordinators on one real Redis; every test that calls a worker over the network
runs on each HTTP client the dispatcher can use (the ``http_client`` fixture). Unit checks
of the response -> receipt mapping use no network at all, and ``MockTransport`` stands in
where no real worker is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from aiohttp import web

from redisq.api import create_app
from redisq.config import Backoff, Config, WorkerConfig
from redisq.coordinator import Coordinator
from redisq.dispatch import receipt_from_response, retry_after_ms
from redisq.engine import ClaimedJob
from redisq.model import parse_enqueue
from redisq.security import verify_receipt_token
from redisq.transport import MockTransport, Response, TransportError

SECRET = "dispatch-test-secret"
FINISHED = ("succeeded", "dead", "cancelled")
NO_JITTER = Backoff(initial_s=0.05, factor=2.0, max_s=60.0, jitter=False)
CLOCK_SLACK_S = 0.002  # Redis keeps ms (floored); the worker's clock has µs

Behave = Callable[["Call"], Awaitable[web.StreamResponse]]
HTTP_CLIENTS = ("native", "pyreqwest", "aiohttp")  # the default, the Rust client and the fallback: each must pass
_client_under_test = [HTTP_CLIENTS[0]]  # what coordinator() builds, set by the http_client fixture


@pytest.fixture(params=HTTP_CLIENTS)
def http_client(request: pytest.FixtureRequest) -> Iterator[str]:
    """The dispatcher's HTTP client for the test (and for ``coordinator()`` unless it names one)."""
    _client_under_test[0] = request.param
    try:
        yield request.param
    finally:
        _client_under_test[0] = HTTP_CLIENTS[0]


# -- the worker ----------------------------------------------------------------------------


@dataclass
class Call:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.time() on arrival

    @property
    def job_id(self) -> str:
        return self.body["jobId"]

    @property
    def attempt(self) -> int:
        return self.body["attempt"]


async def answer_ok(call: Call) -> web.StreamResponse:
    return web.json_response({"ok": True, "attempt": call.attempt})


class Worker:
    """A real worker endpoint on 127.0.0.1:<free port>."""

    def __init__(self, behave: Behave = answer_ok):
        self.behave = behave
        self.calls: list[Call] = []
        self.active = 0
        self.max_active = 0
        self.receipt_answers: list[httpx.Response] = []
        self._background: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._client: httpx.AsyncClient | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/work"

    async def __aenter__(self) -> Worker:
        app = web.Application()
        app.router.add_post("/work", self._handle)
        # handler_cancellation: a call the dispatcher gave up on (timeout) ends here too
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._client = httpx.AsyncClient(timeout=5.0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5.0)
        assert self._runner is not None and self._client is not None
        await self._client.aclose()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(await request.json(), dict(request.headers), time.time())
        self.calls.append(call)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self.behave(call)
        finally:
            self.active -= 1

    def post_receipt_later(self, call: Call, receipt: dict[str, Any], after_s: float = 0.05) -> None:
        """What a worker that answered 202 does: post its receipt to the receiptUrl."""
        async def post() -> None:
            await asyncio.sleep(after_s)
            assert self._client is not None
            resp = await self._client.post(call.body["receiptUrl"], json=receipt,
                                           headers={"Authorization": f"Bearer {call.body['receiptToken']}"})
            self.receipt_answers.append(resp)
        task = asyncio.create_task(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def arrivals(self, job_id: str) -> list[float]:
        return [c.at for c in self.calls if c.job_id == job_id]


def iso_s(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the coordinator, with its API on a real port ---------------------------------------------


@dataclass
class Running:
    coordinator: Coordinator
    client: httpx.AsyncClient
    events: list[tuple[str, str, int, str]] = field(default_factory=list)

    async def enqueue(self, **body: Any) -> dict[str, Any]:
        resp = await self.client.post("/job", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def enqueue_batch(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = await self.client.post("/jobs", json={"jobs": jobs})
        assert resp.status_code == 201, resp.text
        return resp.json()["jobs"]

    async def get(self, job_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/job/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def finished(self, job_id: str, within_s: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            job = await self.get(job_id)
            if job["state"] in FINISHED:
                return job
            assert time.monotonic() < deadline, f"{job_id} not finished within {within_s} s: {job}"
            await asyncio.sleep(0.01)


async def stop_within(coordinator: Coordinator, seconds: float = 10.0) -> None:
    """Stop the coordinator, failing (not hanging) when its stop() does not return."""
    try:
        await asyncio.wait_for(coordinator.stop(), seconds)
    except TimeoutError:
        await coordinator.redis.aclose()
        pytest.fail(f"Coordinator.stop() did not return within {seconds:g} s", pytrace=False)


@contextlib.asynccontextmanager
async def serving(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 5.0
        while not server.started:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "uvicorn did not start within 5 s"
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5.0)
        sock.close()


@contextlib.asynccontextmanager
async def coordinator(redis: Any, *workers: WorkerConfig, **settings: Any) -> AsyncIterator[Running]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings.setdefault("secret", SECRET)
    settings.setdefault("shutdown_grace_s", 0.5)
    settings.setdefault("http_client", _client_under_test[0])
    config = Config(public_url=public_url, workers={w.name: w for w in workers}, **settings)
    events: list[tuple[str, str, int, str]] = []
    coord = Coordinator(config, redis=redis, observer=lambda *event: events.append(event))
    await coord.start()
    try:
        async with (
            serving(create_app(coord, manage_lifecycle=False), sock),
            httpx.AsyncClient(base_url=public_url, timeout=5.0) as client,
        ):
            yield Running(coord, client, events)
    finally:
        sock.close()
        await stop_within(coord)


def worker_config(url: str, name: str = "work", **settings: Any) -> WorkerConfig:
    settings.setdefault("timeout_s", 2.0)
    settings.setdefault("max_attempts", 3)
    settings.setdefault("backoff", NO_JITTER)
    return WorkerConfig(name=name, url=url, **settings)


# -- what the worker receives, and what its answers mean -------------------------------------------


async def test_the_worker_gets_the_dispatch_body_and_a_small_json_answer_is_the_result(engine_redis, http_client):
    async def answer(call: Call) -> web.StreamResponse:
        return web.json_response({"messageId": "m-1", "to": call.body["args"]["to"]})

    async with Worker(answer) as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", id="welcome-1", args={"to": "ada@example.com"})
        done = await run.finished(job["id"])

        (call,) = worker.calls
        assert set(call.body) == {"jobId", "worker", "attempt", "args", "receiptUrl", "receiptToken"}
        assert call.body["jobId"] == "work:welcome-1"
        assert call.body["worker"] == "work"
        assert call.body["attempt"] == 1
        assert call.body["args"] == {"to": "ada@example.com"}
        assert call.body["receiptUrl"] == f"{run.coordinator.config.base_url}/job/work:welcome-1/receipt"
        grant = verify_receipt_token(SECRET.encode(), "work:welcome-1", call.body["receiptToken"])
        assert grant is not None and grant.attempt == 1
        assert call.headers["Content-Type"].startswith("application/json")

        assert done["state"] == "succeeded" and done["attempts"] == 1
        assert done["result"] == {"messageId": "m-1", "to": "ada@example.com"}
        assert done["lastError"] is None and done["finishedAt"] is not None


async def test_202_then_a_receipt_posted_to_the_receipt_url_finishes_the_job(engine_redis, http_client):
    worker: Worker

    async def accept(call: Call) -> web.StreamResponse:
        worker.post_receipt_later(call, {"status": "success", "result": {"rendered": 3}})
        return web.Response(status=202)

    async with Worker(accept) as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", id="report")
        done = await run.finished(job["id"])
        assert done["state"] == "succeeded" and done["result"] == {"rendered": 3} and done["attempts"] == 1
        (answer,) = worker.receipt_answers
        assert answer.status_code == 200 and answer.json()["state"] == "succeeded"
        assert any(e[0] == "accepted" for e in run.events)


async def test_500_is_retried_and_then_succeeds(engine_redis, http_client):
    async def fail_once(call: Call) -> web.StreamResponse:
        if call.attempt == 1:
            return web.Response(status=500, text="database is down")
        return web.json_response({"ok": True})

    async with Worker(fail_once) as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", id="flaky")
        done = await run.finished(job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2 and done["result"] == {"ok": True}
        assert [c.attempt for c in worker.calls] == [1, 2]
        assert done["lastError"] == "HTTP 500: database is down"  # the failed attempt's error is kept


async def test_429_with_retry_after_is_retried_that_long_later_and_not_earlier(engine_redis, http_client):
    async def slow_down(call: Call) -> web.StreamResponse:
        if call.attempt == 1:
            return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
        return web.json_response({"ok": True})

    async with Worker(slow_down) as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        # the backoff alone would retry after 0.05 s: Retry-After must win
        job = await run.enqueue(worker="work", id="limited")
        done = await run.finished(job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2
        first, second = worker.arrivals(job["id"])
        assert 1.0 - CLOCK_SLACK_S <= second - first <= 1.0 + 0.1, second - first
        assert done["lastError"].startswith("HTTP 429")


async def test_400_is_dead_after_one_attempt(engine_redis, http_client):
    async def refuse(call: Call) -> web.StreamResponse:
        return web.Response(status=400, text="no such template")

    async with Worker(refuse) as worker, coordinator(engine_redis, worker_config(worker.url, max_attempts=5)) as run:
        job = await run.enqueue(worker="work", id="bad-input")
        done = await run.finished(job["id"])
        assert done["state"] == "dead" and done["attempts"] == 1
        assert "HTTP 400" in done["lastError"] and "no such template" in done["lastError"]
        await asyncio.sleep(0.3)  # several backoffs' worth: no second attempt comes
        assert len(worker.calls) == 1


async def test_connection_refused_is_retried(engine_redis, http_client):
    url = f"http://127.0.0.1:{closed_port()}/work"
    async with coordinator(engine_redis, worker_config(url, max_attempts=3)) as run:
        job = await run.enqueue(worker="work", id="nobody-home")
        done = await run.finished(job["id"])
        assert done["state"] == "dead" and done["attempts"] == 3
        assert "connect" in done["lastError"].lower(), done["lastError"]
        assert [e[2] for e in run.events if e[0] == "dispatched"] == [1, 2, 3]


async def test_no_answer_within_the_timeout_is_timed_out_and_retried(engine_redis, http_client):
    async def hang_once(call: Call) -> web.StreamResponse:
        if call.attempt == 1:
            await asyncio.sleep(2.0)
        return web.json_response({"ok": True})

    async with Worker(hang_once) as worker, coordinator(engine_redis, worker_config(worker.url, timeout_s=0.3)) as run:
        job = await run.enqueue(worker="work", id="hangs")
        done = await run.finished(job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2
        assert done["lastError"].startswith("timed out"), done["lastError"]
        assert len(worker.arrivals(job["id"])) == 2
        # The attempts' starts (their claims, on Redis's clock): the retry was not claimed
        # before the first attempt's lease (0.3 s) ran out, and was claimed at once after
        # it, well before the hung call (2 s) would have answered (slack for a busy machine).
        # (The arrivals at the worker say less: a first call may reach it late after its claim.)
        first, second = (iso_s(attempt["startedAt"]) for attempt in done["history"])
        assert 0.3 <= second - first <= 0.3 + 0.05 + 1.0, second - first


async def test_202_and_no_receipt_is_reaped_as_timed_out_after_the_timeout(engine_redis, http_client):
    async def accept_and_forget(call: Call) -> web.StreamResponse:
        return web.Response(status=202)

    async with (
        Worker(accept_and_forget) as worker,
        coordinator(engine_redis, worker_config(worker.url, timeout_s=0.3, max_attempts=2)) as run,
    ):
        job = await run.enqueue(worker="work", id="forgotten")
        done = await run.finished(job["id"])
        assert done["state"] == "dead" and done["attempts"] == 2
        assert done["lastError"] == "timed out"
        assert len(worker.arrivals(job["id"])) == 2
        # On Redis's clock (the attempts' claims and reaps): each attempt was reaped when its
        # 0.3 s lease ran out, not before, and soon after (slack for a busy machine); the
        # retry was claimed after the 0.05 s backoff. (The arrivals at the worker say less:
        # a call may reach it late after its claim.)
        history = done["history"]
        assert [attempt["outcome"] for attempt in history] == ["timed out", "timed out"], history
        for attempt in history:
            leased_s = iso_s(attempt["endedAt"]) - iso_s(attempt["startedAt"])
            assert 0.3 <= leased_s <= 0.3 + 1.0, leased_s
        backoff_s = iso_s(history[1]["startedAt"]) - iso_s(history[0]["endedAt"])
        assert 0.05 - CLOCK_SLACK_S <= backoff_s <= 0.05 + 1.0, backoff_s


async def test_backoff_between_attempts_and_dead_after_max_attempts_with_the_last_error(engine_redis, http_client):
    async def always_fail(call: Call) -> web.StreamResponse:
        return web.Response(status=500, text=f"failure {call.attempt}")

    backoff = Backoff(initial_s=0.1, factor=2.0, max_s=60.0, jitter=False)
    async with (
        Worker(always_fail) as worker,
        coordinator(engine_redis, worker_config(worker.url, max_attempts=4, backoff=backoff)) as run,
    ):
        job = await run.enqueue(worker="work", id="doomed")
        done = await run.finished(job["id"])
        assert done["state"] == "dead" and done["attempts"] == 4
        assert done["lastError"] == "HTTP 500: failure 4"
        # On Redis's clock: each retry was claimed its backoff (initial * factor ** (n - 1))
        # after the failed attempt was settled, not before, and soon after. (The arrivals at
        # the worker also carry each call's way to it: one CI run saw a 0.2 s gap as 0.32 s.)
        history = done["history"]
        gaps = [iso_s(later["startedAt"]) - iso_s(earlier["endedAt"]) for earlier, later in itertools.pairwise(history)]
        expected = [0.1, 0.2, 0.4]
        assert len(gaps) == len(expected), history
        for gap, want in zip(gaps, expected, strict=True):  # a wrong initial or factor falls out of one
            assert want - CLOCK_SLACK_S <= gap <= want + 0.15, (gaps, expected)
        assert len(worker.arrivals(job["id"])) == 4
        await asyncio.sleep(0.3)
        assert len(worker.calls) == 4


async def test_a_delayed_job_is_never_dispatched_early_and_arrives_soon_after_its_time(engine_redis, http_client):
    async with Worker() as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        by_delay = await run.enqueue(worker="work", id="by-delay", delay=0.5)
        by_run_at = await run.enqueue(worker="work", id="by-run-at", runAt=round(time.time() + 0.7, 3))
        now = await run.enqueue(worker="work", id="now")
        for job in (by_delay, by_run_at, now):
            await run.finished(job["id"])
        for job in (by_delay, by_run_at, now):
            (arrived,) = worker.arrivals(job["id"])
            due = iso_s(job["runAt"])
            assert arrived >= due, f"{job['id']} arrived {due - arrived:.3f} s early"
            assert arrived - due <= 0.05, f"{job['id']} arrived {arrived - due:.3f} s late"
        assert [c.job_id for c in worker.calls] == ["work:now", "work:by-delay", "work:by-run-at"]


# -- throttling --------------------------------------------------------------------------------


async def test_rate_and_burst_the_first_burst_at_once_then_the_rate_in_enqueue_order(engine_redis, http_client):
    rate, burst, count = 2.0, 5, 15
    async with Worker() as worker, coordinator(engine_redis, worker_config(worker.url, rate=rate, burst=burst)) as run:
        jobs = await run.enqueue_batch([{"worker": "work", "id": f"t{n}", "args": {"n": n}} for n in range(count)])
        done = [await run.finished(job["id"], within_s=10.0) for job in jobs]
        assert [job["attempts"] for job in done] == [1] * count

        # The tokens, on Redis's clock: each call's claim (its attempt's start). The arrivals
        # at the worker also carry each call's way to it: a fresh-clone CI run saw the burst's
        # 5 calls reach the worker 0.25 s after their claims, while the sixth, on a warm
        # connection, came at once, so its arrival looked half a token early.
        claims = sorted((iso_s(job["history"][0]["startedAt"]), job["args"]["n"]) for job in done)
        start = claims[0][0]
        offsets = [at - start for at, _ in claims]
        order = [n for _, n in claims]
        # The burst is 5 calls claimed at once; they may go in any order among themselves.
        # After that, one at a time, strictly in enqueue order, at the worker too.
        assert sorted(order[:burst]) == list(range(burst))
        assert order[burst:] == list(range(burst, count))
        arrived = [c.body["args"]["n"] for c in sorted(worker.calls, key=lambda c: c.at)]
        assert len(arrived) == count and arrived[burst:] == list(range(burst, count))
        assert offsets[burst - 1] <= 0.1, offsets
        for k in range(burst, count):
            # A token every 1/rate s after the burst: never before it, and soon after (CI on
            # a machine at load 6 saw one call 171 ms after its token).
            due = (k - burst + 1) / rate
            assert due - CLOCK_SLACK_S <= offsets[k] <= due + 0.3, (k, offsets)
        for i, offset in enumerate(offsets):
            assert i + 1 <= burst + rate * (offset + CLOCK_SLACK_S), (i, offsets)


async def test_concurrency_cap_is_never_exceeded_at_the_worker(engine_redis, http_client):
    async def slow(call: Call) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response({"ok": True})

    async with Worker(slow) as worker, coordinator(engine_redis, worker_config(worker.url, concurrency=2)) as run:
        jobs = await run.enqueue_batch([{"worker": "work", "id": f"c{n}"} for n in range(6)])
        started = time.monotonic()
        for job in jobs:
            assert (await run.finished(job["id"]))["state"] == "succeeded"
        assert worker.max_active == 2
        assert len(worker.calls) == 6
        assert time.monotonic() - started < 0.9 + 0.5  # 3 rounds of 2, not 6 rounds of 1


async def test_two_coordinators_on_one_redis_together_keep_rate_and_burst(redis_url, real_redis, http_client):
    rate, burst, count = 5.0, 5, 25
    async with Worker() as worker:
        w = worker_config(worker.url, rate=rate, burst=burst)
        other_events: list[tuple[str, str, int, str]] = []
        other = Coordinator(Config(secret=SECRET, shutdown_grace_s=0.5, workers={w.name: w}),
                            redis=aioredis.Redis.from_url(redis_url),
                            observer=lambda *event: other_events.append(event))
        await other.start()
        try:
            async with coordinator(aioredis.Redis.from_url(redis_url), w) as run:
                jobs = await run.enqueue_batch([{"worker": "work", "id": f"s{n}"} for n in range(count)])
                for job in jobs:
                    assert (await run.finished(job["id"], within_s=10.0))["state"] == "succeeded"
                mine = [e for e in run.events if e[0] == "dispatched"]
        finally:
            await stop_within(other)
        theirs = [e for e in other_events if e[0] == "dispatched"]

    calls = sorted(worker.calls, key=lambda c: c.at)
    assert sorted(c.job_id for c in calls) == sorted(j["id"] for j in jobs)  # each once
    start = calls[0].at
    for i, call in enumerate(calls):
        assert i + 1 <= burst + rate * (call.at - start + 0.05), (i, [round(c.at - start, 3) for c in calls])
    assert len(mine) + len(theirs) == count
    assert mine and theirs, f"one coordinator did all the work ({len(mine)} vs {len(theirs)})"


# -- the response -> receipt mapping (no network) ----------------------------------------------


CLAIMED = ClaimedJob(worker="work", suffix="j1", attempt=2, timeout_ms=1000, args_json="{}")


@pytest.mark.parametrize("response, outcome, result, error_start, retry_after", [
    (Response(200, b'{"ok": true}'), "success", '{"ok": true}', "", -1),
    (Response(201, b"[1, 2]"), "success", "[1, 2]", "", -1),
    (Response(204), "success", "", "", -1),
    (Response(200, b"plain words"), "success", "", "", -1),
    (Response(200, b'{"x": "' + b"y" * 17000 + b'"}'), "success", "", "", -1),  # too big to keep
    (Response(200, b'{"ok": true}', truncated=True), "success", "", "", -1),
    (Response(429, b"slow down", {"retry-after": "3"}), "failure", "", "HTTP 429: slow down", 3000),
    (Response(503, b"", {}), "failure", "", "HTTP 503", -1),
    (Response(400, b"bad template"), "permanent", "", "HTTP 400: bad template", -1),
    (Response(401, b"redisq signature refused"), "failure", "", "HTTP 401: redisq signature refused", -1),  # retried
    (Response(404, b"x" * 1000), "failure", "", "HTTP 404: " + "x" * 300, -1),  # retried: a wrong path is fixed
    (Response(410, b"gone"), "permanent", "", "HTTP 410: gone", -1),
    (Response(500, b"never", {"x-redisq-permanent": "true"}), "permanent", "", "HTTP 500: never", -1),
    (Response(500, b"boom"), "failure", "", "HTTP 500: boom", -1),
    (Response(302, b""), "failure", "", "HTTP 302", -1),
])
def test_a_worker_response_becomes_a_receipt(response, outcome, result, error_start, retry_after):
    receipt = receipt_from_response(CLAIMED, response)
    assert receipt is not None
    assert (receipt.suffix, receipt.attempt, receipt.outcome) == ("j1", 2, outcome)
    assert receipt.result_json == result
    assert receipt.error == error_start
    assert receipt.retry_after_ms == retry_after


def test_202_is_no_receipt_yet():
    assert receipt_from_response(CLAIMED, Response(202, b"queued")) is None


def test_retry_after_seconds_and_http_dates():
    assert retry_after_ms("1") == 1000
    assert retry_after_ms(" 1.5 ") == 1500
    assert retry_after_ms("0") == 0
    assert retry_after_ms("-5") == 0
    assert retry_after_ms(None) == -1
    assert retry_after_ms("") == -1
    assert retry_after_ms("soon") == -1
    in_ten_s = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8000 <= retry_after_ms(in_ten_s) <= 10000
    assert retry_after_ms(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0


# -- MockTransport: where no real worker is needed ------------------------------------------------


@contextlib.asynccontextmanager
async def mocked(redis: Any, handler: Callable[..., Any], **worker_settings: Any) -> AsyncIterator[Running]:
    w = worker_config("http://worker.test/work", **worker_settings)
    events: list[tuple[str, str, int, str]] = []
    coord = Coordinator(Config(secret=SECRET, shutdown_grace_s=0.2, workers={w.name: w}), redis=redis,
                        transport=MockTransport(handler), observer=lambda *event: events.append(event))
    await coord.start()
    try:
        transport = httpx.ASGITransport(app=create_app(coord, manage_lifecycle=False), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://redisq.test") as client:
            yield Running(coord, client, events)
    finally:
        await stop_within(coord)


async def test_a_transport_error_is_a_failed_attempt_that_is_retried(engine_redis):
    def refuse_once(url: str, body: bytes, headers: Any) -> Response:
        if json.loads(body)["attempt"] == 1:
            raise TransportError("ClientConnectorError: connection refused")
        return Response(200, b'{"second": "time lucky"}')

    async with mocked(engine_redis, refuse_once) as run:
        job = await run.enqueue(worker="work", id="m1")
        done = await run.finished(job["id"])
        assert (done["state"], done["attempts"]) == ("succeeded", 2)
        assert done["lastError"] == "ClientConnectorError: connection refused"
        assert done["result"] == {"second": "time lucky"}


@pytest.mark.parametrize("body", [b"NaN", b'{"x": Infinity}', b"[-Infinity]"])
async def test_a_worker_answer_that_is_not_strict_json_never_breaks_the_job(engine_redis, body):
    """Python's json.loads takes NaN and Infinity; they are not JSON, and must not make the
    job unreadable: the job succeeds and ``GET /job`` keeps answering 200."""
    async with mocked(engine_redis, lambda url, b, headers: Response(200, body)) as run:
        job = await run.enqueue(worker="work", id="odd")
        deadline = time.monotonic() + 3.0
        while not any(e[0] == "settled" for e in run.events):
            assert time.monotonic() < deadline, "the answer was never settled"
            await asyncio.sleep(0.01)
        resp = await run.client.get(f"/job/{job['id']}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "succeeded"


# -- lifecycle -------------------------------------------------------------------------------


STOP_PROMPTLY_S = 0.5  # nothing is in flight long: stop() has nothing to wait for


@pytest.mark.parametrize("backend", ["redis", "embedded"])
async def test_a_coordinator_stops_promptly_whenever_it_is_stopped(backend, redis_url):
    """Start and stop many times, at random moments of the loops' work, on the clients
    ``redisq serve`` builds (socket timeouts on): stop() returns every time, and soon."""
    w = worker_config("http://worker.test/work", timeout_s=0.2)
    for round_number in range(10):
        config = Config(secret=SECRET, shutdown_grace_s=0.2, workers={w.name: w},
                        redis_url=redis_url if backend == "redis" else None)
        coord = Coordinator(config, transport=MockTransport(lambda url, body, headers: Response(200)))
        await coord.start()
        if round_number % 2:  # a job dispatched or being settled as it stops
            await coord.engine.enqueue(parse_enqueue({"worker": w.name}, config.workers))
            coord.wake(w.name)
        await asyncio.sleep(random.random() * 0.02)
        started = time.monotonic()
        await stop_within(coord, 8.0)
        took = time.monotonic() - started
        assert took < STOP_PROMPTLY_S, f"round {round_number}: stop() took {took:.2f} s"


CANCELLED_RUN = """
import asyncio, sys
from redisq.config import Config, WorkerConfig
from redisq.coordinator import Coordinator
from redisq.model import parse_enqueue
from redisq.transport import MockTransport, Response

async def main(round_number):
    w = WorkerConfig(name="work", url="http://worker.test/work", rate=50.0, burst=5, timeout_s=0.2)
    config = Config(secret="s" * 16, workers={w.name: w}, redis_url=sys.argv[1])
    coordinator = Coordinator(config, transport=MockTransport(lambda url, body, headers: Response(200)))
    await coordinator.start()
    for n in range(200):
        await coordinator.engine.enqueue(parse_enqueue({"worker": w.name, "throttleKey": f"k{n % 7}"}, config.workers))
    coordinator.wake(w.name)
    await asyncio.sleep(0.01 * round_number)
    raise RuntimeError("the program fails with its coordinator running")  # stop() is never called

for round_number in range(8):
    try:
        asyncio.run(main(round_number))
    except RuntimeError:
        pass
print("ended")
"""


def test_a_coordinator_cancelled_without_stop_lets_asyncio_run_end(redis_url):
    """A program whose coroutine ends (here: fails) with its coordinator running, never
    stopped: ``asyncio.run`` cancels the coordinator's loops, and they end. (A cancellation
    that lands in a redis-py call can be swallowed on Python 3.11; the loops look at their
    task's cancelling() beside their stop flag, so they end at their next turn.)"""
    done = subprocess.run([sys.executable, "-c", CANCELLED_RUN, redis_url], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ended", (done.returncode, done.stderr[-2000:])


# -- what a review found: loops survive Redis errors, no lost wake-ups, bounded inputs ---------------


async def test_the_dispatcher_survives_a_redis_error_reply_and_carries_on(real_redis, redis_url, http_client):
    """READONLY (a primary demoted to replica, as in a failover) is an error reply, not an
    outage: the claim loop backs off and resumes once Redis accepts writes again."""
    async with Worker() as worker, coordinator(aioredis.Redis.from_url(redis_url), worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", args={}, delay=0.2)
        await real_redis.execute_command("REPLICAOF", "127.0.0.1", str(closed_port()))
        try:
            await asyncio.sleep(0.8)  # the due job's claim is refused with READONLY
            assert worker.calls == []
        finally:
            await real_redis.execute_command("REPLICAOF", "NO", "ONE")
        done = await run.finished(job["id"], within_s=8.0)
        assert done["state"] == "succeeded"
        for task in run.coordinator.dispatcher._loops + run.coordinator.poller._tasks:  # type: ignore[union-attr]
            assert not task.done(), f"{task.get_name()} ended"


async def test_max_in_flight_holds_across_workers(engine_redis):
    """Slots are reserved before a claim, so several workers' loops together never open more
    calls than max_in_flight."""
    active = 0
    most = 0

    async def slow(url: str, body: bytes, headers: Any) -> Response:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.05)
        active -= 1
        return Response(200)

    workers = [worker_config(f"http://worker.test/{n}", name=f"w{n}") for n in range(4)]
    config = Config(secret=SECRET, max_in_flight=5, workers={w.name: w for w in workers})
    coord = Coordinator(config, redis=engine_redis, transport=MockTransport(slow))
    await coord.start()
    try:
        requests = [parse_enqueue({"worker": w.name}, config.workers) for w in workers for _ in range(10)]
        results, wake = await coord.engine.enqueue_many(requests)
        await coord.enqueued(wake)
        deadline = time.monotonic() + 10
        while True:
            states = [(await coord.engine.get(job.id)).state.value for job, _ in results]
            if all(s == "succeeded" for s in states):
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.05)
        assert most == 5
    finally:
        await stop_within(coord)


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(engine_redis, http_client):
    async def redirect(call: Call) -> web.StreamResponse:
        if call.attempt == 1:
            raise web.HTTPFound("/elsewhere")
        return web.json_response({"ok": True})

    async with Worker(redirect) as worker, coordinator(engine_redis, worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", args={})
        done = await run.finished(job["id"])
        assert done["state"] == "succeeded" and done["attempts"] == 2
        assert [c.attempt for c in worker.calls] == [1, 2]  # nothing went to /elsewhere as a GET


@pytest.mark.parametrize("value", ["inf", "nan", "1e20", "-5", "Tue, 31 Dec 99999 23:59:59 GMT"])
def test_retry_after_is_bounded(value):
    ms = retry_after_ms(value)
    assert ms == -1 or 0 <= ms <= 86_400_000


def test_a_result_with_a_byte_order_mark_is_not_kept():
    job = ClaimedJob("work", "j", 1, 1000, "{}")
    receipt = receipt_from_response(job, Response(200, "\ufeff{\"a\": 1}".encode()))
    assert receipt is not None and receipt.outcome == "success" and receipt.result_json == ""


async def test_every_dispatch_is_signed_with_the_first_signing_key(engine_redis):
    from redisq.security import verify_dispatch

    bodies: list[tuple[bytes, Any]] = []

    def handler(url: str, body: bytes, headers: Any) -> Response:
        bodies.append((body, headers))
        return Response(200, b"{}")

    config = Config(secret=SECRET, signing_keys=("new-key", "old-key"),
                    workers={"work": worker_config("http://worker.test/work")})
    coord = Coordinator(config, redis=engine_redis, transport=MockTransport(handler))
    await coord.start()
    try:
        _, wake = await coord.engine.enqueue_many([parse_enqueue({"worker": "work"}, config.workers)])
        await coord.enqueued(wake)
        deadline = time.monotonic() + 5
        while not bodies:
            assert time.monotonic() < deadline, "no dispatch within 5 s"
            await asyncio.sleep(0.01)
    finally:
        await stop_within(coord)
    ((body, headers),) = bodies
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Redisq-Signature"].startswith("v1=")
    assert abs(int(headers["X-Redisq-Timestamp"]) - time.time()) < 5
    verify_dispatch([b"new-key"], headers["X-Redisq-Timestamp"], headers["X-Redisq-Signature"], body)
    with pytest.raises(Exception, match="does not match"):
        verify_dispatch([b"old-key"], headers["X-Redisq-Timestamp"], headers["X-Redisq-Signature"], body)


async def test_without_signing_keys_the_secret_signs(engine_redis):
    coord = Coordinator(Config(secret="only-the-secret"), redis=engine_redis)
    assert coord.signing_key == b"only-the-secret"
    assert Coordinator(Config(secret="s", signing_keys=("k1", "k2")), redis=engine_redis).signing_key == b"k1"
