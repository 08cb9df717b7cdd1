"""Throttled calls leave no closer together than their tokens allow, however late the
coordinator writes them after their claim (README, "Throttling: what is guaranteed").

The transport here stands in for a coordinator that is short of CPU: it waits a random
0-``max_delay_s`` between the claim and the write of each call. A call whose write comes
after the send window is not sent (``NotSentError``: it goes back to its queue with its
tokens, and is not an attempt); a call written late holds its key back. What is asserted
is what the API behind the worker would see: the times the calls were written, checked
against the token bucket itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web

from redisq.config import Backoff, Config, WorkerConfig, parse_config
from redisq.coordinator import Coordinator
from redisq.engine import Engine, HoldBack, Receipt
from redisq.model import JobState, parse_enqueue
from redisq.transport import AiohttpTransport, NotSentError, PyreqwestTransport, Response, SendWindow

SECRET = "pacing-test-secret"


class SlowWriter:
    """A transport that writes each call after a seeded random delay; records the writes."""

    def __init__(self, max_delay_s: float, seed: int = 7):
        self.max_delay_s = max_delay_s
        self.random = random.Random(seed)
        self.written: list[tuple[float, str, int]] = []  # (time.time(), job id, attempt)
        self.unsent = 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                   window: SendWindow | None = None) -> Response:
        await asyncio.sleep(self.random.random() * self.max_delay_s)
        assert window is not None, "a throttled worker's calls carry a send window"
        try:
            window.written()
        except Exception:
            self.unsent += 1
            raise
        call = json.loads(body)
        self.written.append((time.time(), call["jobId"], call["attempt"]))
        return Response(200, b"{}")

    async def close(self) -> None:
        return None


def overflow(times: list[float], rate: float, burst: float, slack_s: float) -> list[tuple[int, int, float]]:
    """Windows of calls that hold more than the bucket allows: (first, last, span s)."""
    times = sorted(times)
    bad = []
    for i in range(len(times)):
        for j in range(i + burst_int(burst), len(times)):
            span = times[j] - times[i]
            if j - i + 1 > burst + rate * (span + slack_s) + 1e-9:
                bad.append((i, j, span))
    return bad


def burst_int(burst: float) -> int:
    return max(1, int(burst))


def paced(worker: WorkerConfig, send_window_s: float) -> Config:
    return Config(secret=SECRET, shutdown_grace_s=0.5, send_window_s=send_window_s, workers={worker.name: worker})


def sharing(limit: dict[str, Any], workers: list[str], send_window_s: float) -> Config:
    """Workers that name one shared limit, ``[limits.shopify]``, and have no limits of their own."""
    return parse_config({"secret": SECRET, "shutdown_grace": 0.5, "send_window": send_window_s,
                         "limits": {"shopify": limit},
                         "workers": {name: {"url": "http://shopify.test/", "limits": ["shopify"], "timeout": 5}
                                     for name in workers}})


@contextlib.asynccontextmanager
async def running(redis: Any, transport: SlowWriter, config: Config) -> AsyncIterator[Coordinator]:
    coordinator = Coordinator(config, redis=redis, transport=transport)
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.stop()


async def run_jobs(redis: Any, transport: SlowWriter, config: Config, count: int,
                   throttle_key: str = "shop-a") -> list[dict[str, Any]]:
    """``count`` jobs of ``throttle_key`` for each worker of ``config``, run to their end."""
    async with running(redis, transport, config) as coordinator:
        requests = [parse_enqueue({"worker": name, "throttleKey": throttle_key, "args": {"n": n}}, config.workers)
                    for n in range(count) for name in config.workers]
        results, wake = await coordinator.engine.enqueue_many(requests)
        await coordinator.enqueued(wake)
        deadline = time.monotonic() + 30
        while len(transport.written) < len(requests):
            assert time.monotonic() < deadline, f"{len(transport.written)} of {len(requests)} written within 30 s"
            await asyncio.sleep(0.02)
        return [(await coordinator.engine.get(job.id)).to_json() for job, _ in results]


async def test_calls_written_late_or_not_at_all_still_keep_to_the_bucket(engine_redis):
    # burst = 1: every claim draws on a full bucket, so every call's lateness counts (a
    # bucket with slack to spare loses nothing to a late write, and is never refused).
    rate, burst, count = 20.0, 1, 40
    worker = WorkerConfig(name="shopify", url="http://shopify.test/", rate=rate, burst=burst, timeout_s=5)
    transport = SlowWriter(max_delay_s=0.08)
    jobs = await run_jobs(engine_redis, transport, paced(worker, send_window_s=0.05), count)
    assert transport.unsent > 0, "some calls should have missed the 50 ms window"
    times = [t for t, _, _ in transport.written]
    # The writes keep to the bucket within the send window: the window is what a call may
    # be late by without holding its key back by as much.
    assert overflow(times, rate, burst, slack_s=0.05) == []
    # Every job ran once; a call that was not sent was not counted as a failed attempt.
    assert sorted(job_id for _, job_id, _ in transport.written) == sorted(job["id"] for job in jobs)
    assert all(job["state"] == "succeeded" for job in jobs), [job["state"] for job in jobs]


async def test_calls_of_workers_sharing_a_limit_written_late_still_keep_to_its_bucket(engine_redis):
    # As above, for two workers that have no limits of their own and draw on one shared
    # bucket per key: a late write holds back the shared bucket, which both draw on.
    rate, burst, count = 20.0, 1, 20
    transport = SlowWriter(max_delay_s=0.08)
    jobs = await run_jobs(engine_redis, transport, sharing({"rate": rate, "burst": burst}, ["orders", "products"],
                                                           send_window_s=0.05), count)
    assert transport.unsent > 0, "some calls should have missed the 50 ms window"
    times = [t for t, _, _ in transport.written]
    assert overflow(times, rate, burst, slack_s=0.05) == []
    assert sorted(job_id for _, job_id, _ in transport.written) == sorted(job["id"] for job in jobs)
    assert all(job["state"] == "succeeded" for job in jobs), [job["state"] for job in jobs]


async def test_a_late_burst_holds_the_keys_next_calls_back_by_its_lateness(engine_redis):
    # Every call is written 40-60 ms after its claim (within the 200 ms window): the first
    # burst leaves late, and the next token must come a token interval after it, not after
    # the claim.
    rate, burst, count = 5.0, 10, 15
    worker = WorkerConfig(name="shopify", url="http://shopify.test/", rate=rate, burst=burst, timeout_s=5)

    class Late(SlowWriter):
        async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                       window: SendWindow | None = None) -> Response:
            await asyncio.sleep(0.04 + self.random.random() * 0.02)
            return await super().post(url, body, headers, timeout_s, window)

    transport = Late(max_delay_s=0.0)
    await run_jobs(engine_redis, transport, paced(worker, send_window_s=0.2), count)
    assert transport.unsent == 0
    times = sorted(t for t, _, _ in transport.written)
    assert overflow(times, rate, burst, slack_s=0.005) == [], [round(t - times[0], 3) for t in times]
    first_paced_gap = times[burst] - times[burst - 1]
    assert first_paced_gap >= 1 / rate - 0.025, [round(t - times[0], 3) for t in times]


# -- the engine: a job returned unsent, and a hold-back ----------------------------------------


def shopify_worker(**settings: Any) -> WorkerConfig:
    settings.setdefault("rate", 2.0)
    settings.setdefault("burst", 10)
    return WorkerConfig(name="shopify", url="http://shopify.test/", **settings)


async def enqueued_store(redis: Any, worker: WorkerConfig, count: int, throttle_key: str = "shop-a") -> Engine:
    store = Engine(redis, Config(workers={worker.name: worker}))
    await store.enqueue_many([parse_enqueue({"worker": worker.name, "throttleKey": throttle_key, "args": {"n": n}},
                                            {worker.name: worker}) for n in range(count)])
    return store


async def test_a_job_returned_unsent_is_waiting_again_with_its_tokens_and_no_failure(engine_redis):
    w = shopify_worker(max_attempts=1)
    store = await enqueued_store(engine_redis, w, 12)
    first = await store.claim(w, 100)
    assert len(first.jobs) == 10 and first.rated
    unsent = [Receipt(j.suffix, j.attempt, "unsent", error="not sent", seq=j.seq) for j in first.jobs[:4]]
    assert await store.settle(w, unsent) == ["returned"] * 4
    assert await store.settle(w, unsent) == ["duplicate"] * 4  # a repeat changes nothing
    job = await store.get(first.jobs[0].id)
    assert job.state is JobState.SCHEDULED and job.last_error is None
    state = await store.worker(w.name).state()
    assert (state.scheduled, state.running) == (2 + 4, 6)
    # Their tokens came back (less a forfeit of at most the refill of the time they were
    # out): the same four are claimed again at once, first, in their order.
    again = await store.claim(w, 100)
    assert [j.suffix for j in again.jobs] == [j.suffix for j in first.jobs[:4]]
    assert [j.attempt for j in again.jobs] == [2, 2, 2, 2]
    # With max_attempts = 1, a failure now would be the last one; a success is accepted.
    words = await store.settle(w, [Receipt(j.suffix, j.attempt, "success", seq=j.seq) for j in again.jobs])
    assert words == ["succeeded"] * 4


async def test_a_failure_after_a_return_counts_as_the_first_failure(engine_redis):
    w = shopify_worker(max_attempts=2, backoff=Backoff(initial_s=0.0, jitter=False))
    store = await enqueued_store(engine_redis, w, 1)
    (job,) = (await store.claim(w, 1)).jobs
    assert await store.settle(w, [Receipt(job.suffix, job.attempt, "unsent", seq=job.seq)]) == ["returned"]
    (job,) = (await store.claim(w, 1)).jobs
    failed = Receipt(job.suffix, job.attempt, "failure", error="boom", seq=job.seq)
    assert await store.settle(w, [failed]) == ["retrying"]
    (job,) = (await store.claim(w, 1)).jobs
    assert job.attempt == 3
    assert await store.settle(w, [Receipt(job.suffix, job.attempt, "failure", error="boom", seq=job.seq)]) == ["dead"]


async def test_a_late_burst_from_a_full_bucket_takes_back_the_refill_of_its_lateness(engine_redis):
    w = shopify_worker(rate=2.0, burst=10)
    store = await enqueued_store(engine_redis, w, 12)
    claimed_at = time.monotonic()
    claim = await store.claim(w, 100)
    assert len(claim.jobs) == 10 and claim.jobs[0].key_slack_ms == 0.0  # the bucket was full
    # Written 400 ms late: 0.8 of a token. The next token is due 400 ms later than it was:
    # 900 ms after the claim instead of 500.
    held = await store.hold_back(w, [HoldBack("key", "shop-a", 0.0, 10.0, 400)])
    assert held == 1
    after = await store.claim(w, 100)
    since_claim_ms = (time.monotonic() - claimed_at) * 1000
    assert after.jobs == [] and after.wait_ms + since_claim_ms >= 890, (after.wait_ms, since_claim_ms)
    await asyncio.sleep(after.wait_ms / 1000 + 0.02)
    assert len((await store.claim(w, 100)).jobs) == 1
    # A report for a bucket that had slack to spare takes nothing.
    assert await store.hold_back(w, [HoldBack("key", "shop-a", 5000.0, 1.0, 400)]) == 0


async def test_a_late_burst_from_a_full_shared_bucket_holds_back_every_worker_naming_it(engine_redis):
    config = sharing({"rate": 2, "burst": 10}, ["orders", "products"], send_window_s=0.05)
    store = Engine(engine_redis, config)
    await store.enqueue_many([parse_enqueue({"worker": name, "throttleKey": "shop-a", "args": {"n": n}},
                                            config.workers) for name, n in [("orders", n) for n in range(10)]
                              + [("products", 0), ("products", 1)]])
    claimed_at = time.monotonic()
    claim = await store.worker("orders").claim(100)
    assert len(claim.jobs) == 10 and claim.rated
    # The worker has no bucket of its own; the shared bucket of shop-a was full.
    assert claim.jobs[0].key_slack_ms is None and claim.jobs[0].shared_key_slack_ms == (("shopify", 0.0),)
    # Written 400 ms late: the other worker's next call for shop-a waits 900 ms after the claim, not 500.
    held = await store.worker("orders").hold_back([HoldBack("limit-key", "shop-a", 0.0, 10.0, 400, "shopify")])
    assert held == 1
    after = await store.worker("products").claim(100)
    since_claim_ms = (time.monotonic() - claimed_at) * 1000
    assert after.jobs == [] and after.wait_ms + since_claim_ms >= 890, (after.wait_ms, since_claim_ms)
    await asyncio.sleep(after.wait_ms / 1000 + 0.02)
    assert len((await store.worker("products").claim(100)).jobs) == 1
    # A report for a shared bucket that had slack to spare takes nothing; nor one of a limit
    # the worker does not name.
    slack = HoldBack("limit-key", "shop-a", 5000.0, 1.0, 400, "shopify")
    assert await store.worker("orders").hold_back([slack, HoldBack("limit-key", "shop-a", 0.0, 1.0, 400, "other")]) == 0


# -- the transport: too late means nothing is written -----------------------------------------------


class CheckedOnce(SendWindow):
    """Passes the check when the call starts, then is too late at the write."""

    def __init__(self) -> None:
        super().__init__(time.monotonic() + 60)
        self.checks = 0

    def check(self) -> float:
        self.checks += 1
        if self.checks > 1:
            raise NotSentError("not sent: too late at the write")
        return time.monotonic()


async def test_a_call_with_slack_to_spare_is_written_however_late_and_holds_nothing_back(engine_redis):
    # burst 10 at 5/s: after the first burst, each claim finds its bucket far from full
    # (seconds of slack), so 150 ms of lateness on a 50 ms window is harmless: no refusal.
    worker = WorkerConfig(name="shopify", url="http://shopify.test/", rate=5.0, burst=10, timeout_s=5)

    class LateAfterTheBurst(SlowWriter):
        late_unsent = 0  # calls refused after the burst (a slow first write of the burst itself may be)

        async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float,
                       window: SendWindow | None = None) -> Response:
            if len(self.written) < 10:
                return await super().post(url, body, headers, timeout_s, window)
            await asyncio.sleep(0.15)
            unsent = self.unsent
            try:
                return await super().post(url, body, headers, timeout_s, window)
            finally:
                self.late_unsent += self.unsent - unsent

    transport = LateAfterTheBurst(max_delay_s=0.0)
    await run_jobs(engine_redis, transport, paced(worker, send_window_s=0.05), 14)
    assert transport.late_unsent == 0


class WorkServer:
    """An aiohttp server of ``POST /work`` on a free port: ``url = await start(handle)``, ``await stop()``."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None

    async def start(self, handle: Any) -> str:
        app = web.Application()
        app.router.add_post("/work", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/work"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.mark.parametrize("transport_class", [AiohttpTransport, PyreqwestTransport])
async def test_nothing_is_written_when_the_window_passes_before_the_write(transport_class):
    """Looked at when the call starts, and again in aiohttp's hook just before the write
    (pyreqwest's transport sends a windowed call through it)."""
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    transport, server = transport_class(), WorkServer()
    try:
        url = await server.start(handle)
        ok = await transport.post(url, b'{"n":1}', {"Content-Type": "application/json"}, 5,
                                  SendWindow(time.monotonic() + 60))
        assert ok.status == 200
        window = CheckedOnce()
        with pytest.raises(NotSentError):
            await transport.post(url, b'{"n":2}', {"Content-Type": "application/json"}, 5, window)
        assert window.checks == 2  # at the start, and in the hook just before the write
        with pytest.raises(NotSentError):
            await transport.post(url, b'{"n":3}', {}, 5, SendWindow(time.monotonic() - 1))
        await asyncio.sleep(0.2)
        assert received == [b'{"n":1}']
    finally:
        await transport.close()
        await server.stop()


async def test_pyreqwest_writes_nothing_when_the_window_passes_while_the_call_waits_for_a_connection():
    """One cap over both of its clients: with one connection, busy with a slow call (on
    pyreqwest), a windowed call whose window passes while it waits for the slot is not sent
    at all; one whose window is still open when the slot frees is written (and says so, once)."""
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        received.append(body)
        if body == b'{"n":1}':
            await asyncio.sleep(0.3)
        return web.json_response({})

    transport, server = PyreqwestTransport(max_connections=1), WorkServer()
    try:
        url = await server.start(handle)
        written: list[float] = []
        slow = asyncio.create_task(transport.post(url, b'{"n":1}', {}, 5))
        await asyncio.sleep(0.05)  # the slow call holds the one connection
        late = transport.post(url, b'{"n":2}', {}, 5, SendWindow(time.monotonic() + 0.1))
        in_time = transport.post(url, b'{"n":3}', {}, 5, SendWindow(time.monotonic() + 5, written.append))
        outcomes = await asyncio.gather(late, in_time, return_exceptions=True)
        assert (await slow).status == 200
        assert isinstance(outcomes[0], NotSentError), outcomes[0]
        assert isinstance(outcomes[1], Response) and outcomes[1].status == 200
        assert len(written) == 1
        with pytest.raises(NotSentError):  # too late already when it starts
            await transport.post(url, b'{"n":4}', {}, 5, SendWindow(time.monotonic() - 1))
        await asyncio.sleep(0.2)
        assert received == [b'{"n":1}', b'{"n":3}']
    finally:
        await transport.close()
        await server.stop()
