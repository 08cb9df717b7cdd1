"""End to end: the coordinator (its API under uvicorn), the worker SDK's ASGI app under a
real uvicorn on another local port, and the async client, on a real Redis.

The coordinator dispatches to ``http://127.0.0.1:<sdk port>/``: the SDK routes by the
dispatch body's worker name. What each test asserts is what a user would look at: the
job's state, attempts, result and lastError through the client, and whether the function
ran at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from redisq.api import create_app
from redisq.client import AsyncClient, JobInfo
from redisq.config import Backoff, Config, WorkerConfig
from redisq.coordinator import Coordinator
from redisq.errors import UnauthorizedError
from redisq.worker import JobContext, PermanentFailure, RetryLater, Workers

from test_dispatch import serving

KEY = "e2e-shared-secret"
NO_JITTER = Backoff(initial_s=0.05, factor=2.0, max_s=1.0, jitter=False)


@dataclass
class Sdk:
    """The worker app and what its functions saw."""

    workers: Workers
    runs: dict[str, list[int]] = field(default_factory=dict)  # job name -> attempts it ran
    heartbeats: list[str] = field(default_factory=list)  # lease deadlines the coordinator answered
    shop_calls: list[tuple[str, int, float]] = field(default_factory=list)  # (job id, attempt, monotonic s)


def sdk_app(**keys: Any) -> Sdk:
    sdk = Sdk(Workers(**(keys or {"secret": KEY})))
    workers = sdk.workers

    def ran(ctx: JobContext) -> None:
        sdk.runs.setdefault(ctx.worker, []).append(ctx.attempt)

    @workers.job("greet")
    async def greet(args: Any, ctx: JobContext) -> Any:
        ran(ctx)
        return {"hello": args["name"]}

    @workers.job("flaky")
    def flaky(args: Any, ctx: JobContext) -> Any:  # a sync function
        ran(ctx)
        if ctx.attempt == 1:
            raise ValueError("database is down on attempt 1")
        return {"attempt": ctx.attempt}

    @workers.job("invalid")
    async def invalid(args: Any, ctx: JobContext) -> Any:
        ran(ctx)
        raise PermanentFailure(f"{args['to']!r} is not an address")

    @workers.job("shopify-sync")
    async def shopify_sync(args: Any, ctx: JobContext) -> Any:
        sdk.shop_calls.append((ctx.job_id, ctx.attempt, time.monotonic()))
        if args["shop"] == "a" and ctx.attempt == 1:
            raise RetryLater("Shopify answered 429", after_s=1)
        return {"shop": args["shop"]}

    @workers.job("render")
    async def render(args: Any, ctx: JobContext) -> Any:
        ran(ctx)

        async def work() -> Any:
            await asyncio.sleep(0.2)  # the work after the 202
            return {"pages": args["pages"]}
        return ctx.later(work())

    @workers.job("long")
    async def long(args: Any, ctx: JobContext) -> Any:
        ran(ctx)

        async def work() -> Any:
            started = time.monotonic()
            while time.monotonic() - started < args["seconds"]:
                await asyncio.sleep(0.25)  # a slice of the long work
                if args["heartbeat"]:
                    sdk.heartbeats.append(await ctx.heartbeat())
            return {"seconds": args["seconds"]}
        return ctx.later(work())

    return sdk


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving_at(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """``app`` under uvicorn on ``sock`` (default: a free local port); yields its base URL."""
    if sock is None:
        sock = free_socket()
    async with serving(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Stack:
    client: AsyncClient
    coordinator: Coordinator
    worker_url: str

    async def finished(self, job_id: str, within_s: float = 10.0) -> JobInfo:
        deadline = time.monotonic() + within_s
        while True:
            job = await self.client.get(job_id)
            if job.finished:
                return job
            assert time.monotonic() < deadline, f"{job_id} not finished within {within_s} s: {job}"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def stack(redis_url: str, sdk: Sdk, *, token: str | None = None, **settings: Any) -> AsyncIterator[Stack]:
    """The SDK app, a coordinator whose workers all point at it, and a client."""
    async with serving_at(sdk.workers) as worker_url:
        api_sock = free_socket()
        public_url = f"http://127.0.0.1:{api_sock.getsockname()[1]}"  # the receiptUrl's base
        settings.setdefault("secret", KEY)
        workers = {name: WorkerConfig(name=name, url=worker_url + "/", timeout_s=2.0, max_attempts=3, backoff=NO_JITTER)
                   for name in ("greet", "flaky", "invalid", "render")}
        workers["shopify-sync"] = WorkerConfig(name="shopify-sync", url=worker_url + "/", timeout_s=2.0,
                                               max_attempts=1, backoff=NO_JITTER)
        for name, timeout_s in (("long", 1.0),):
            workers[name] = WorkerConfig(name=name, url=worker_url + "/", timeout_s=timeout_s, max_attempts=1,
                                         backoff=NO_JITTER)
        config = Config(redis_url=redis_url, public_url=public_url, shutdown_grace_s=0.5, workers=workers, **settings)
        coordinator = Coordinator(config)
        await coordinator.start()
        try:
            async with serving_at(create_app(coordinator, manage_lifecycle=False), api_sock) as api_url:
                async with AsyncClient(api_url, token=token, timeout_s=5.0) as client:
                    yield Stack(client, coordinator, worker_url)
                await sdk.workers.drain(5.0)
        finally:
            api_sock.close()
            await asyncio.wait_for(coordinator.stop(), 10.0)


@pytest.fixture
async def redis_db(real_redis: Any, redis_url: str) -> str:
    return redis_url  # real_redis flushed the database


async def test_success_keeps_the_functions_result(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        job = await run.client.enqueue("greet", {"name": "Ada"}, id="hello-ada")
        assert job.created and job.state == "scheduled"
        done = await run.finished(job.id)
    assert (done.state, done.attempts, done.result, done.last_error) == ("succeeded", 1, {"hello": "Ada"}, None)
    assert sdk.runs == {"greet": [1]}


async def test_an_exception_is_retried_and_its_type_and_message_are_the_last_error(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        job = await run.client.enqueue("flaky", {})
        done = await run.finished(job.id)
    assert (done.state, done.attempts, done.result) == ("succeeded", 2, {"attempt": 2})
    assert done.last_error == "HTTP 500: ValueError: database is down on attempt 1"
    assert sdk.runs == {"flaky": [1, 2]}


async def test_a_permanent_failure_is_dead_after_one_attempt(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        job = await run.client.enqueue("invalid", {"to": "nobody"})
        done = await run.finished(job.id)
    assert (done.state, done.attempts) == ("dead", 1)
    assert done.last_error == "HTTP 422: PermanentFailure: 'nobody' is not an address"


async def test_202_then_the_later_receipt_finishes_the_job(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        job = await run.client.enqueue("render", {"pages": 4})
        done = await run.finished(job.id)
    assert (done.state, done.attempts, done.result) == ("succeeded", 1, {"pages": 4})


async def test_heartbeats_keep_a_3_s_job_with_a_1_s_timeout_alive(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        alive = await run.client.enqueue("long", {"seconds": 3.0, "heartbeat": True})
        silent = await run.client.enqueue("long", {"seconds": 3.0, "heartbeat": False})  # the control
        timed_out = await run.finished(silent.id)
        done = await run.finished(alive.id)
    assert (done.state, done.attempts, done.result, done.last_error) == ("succeeded", 1, {"seconds": 3.0}, None)
    assert (timed_out.state, timed_out.last_error) == ("dead", "timed out")  # 1 s lease, no heartbeat
    assert len(sdk.heartbeats) >= 10 and all(deadline.endswith("Z") for deadline in sdk.heartbeats)


async def test_a_forged_signature_is_401_and_the_job_is_retried_rather_than_run(redis_db):
    sdk = sdk_app()  # knows KEY only
    async with stack(redis_db, sdk, signing_keys=("a-key-the-worker-does-not-know",)) as run:
        # a forger posting a dispatch straight to the worker
        async with httpx.AsyncClient() as forger:
            resp = await forger.post(run.worker_url + "/", json={
                "jobId": "greet:x", "worker": "greet", "attempt": 1, "args": {"name": "Eve"},
                "receiptUrl": "http://127.0.0.1:1/job/greet:x/receipt", "receiptToken": "1.1.x"},
                headers={"X-Redisq-Timestamp": str(int(time.time())), "X-Redisq-Signature": "v1=" + "0" * 64})
        assert resp.status_code == 401
        # the coordinator, signing with a key the worker does not have
        job = await run.client.enqueue("greet", {"name": "Ada"})
        deadline = time.monotonic() + 5
        # retried (its short backoff may take it through its last attempt to dead between polls)
        while (seen := await run.client.get(job.id)).attempts < 2 or seen.state not in ("retrying", "dead"):
            assert time.monotonic() < deadline, f"not retried twice within 5 s: {seen}"
            await asyncio.sleep(0.02)
        if seen.state == "retrying":
            await run.client.cancel(job.id)
    assert seen.last_error is not None and seen.last_error.startswith("HTTP 401: redisq signature refused: ")
    assert sdk.runs == {}  # nothing ran


async def test_rotation_the_worker_takes_both_keys_while_the_coordinator_moves_to_the_new_one(redis_db):
    sdk = sdk_app(signing_keys=["new-key", "old-key"])
    # step 1: workers verify both, the coordinator still signs with the old key
    async with stack(redis_db, sdk, signing_keys=("old-key",)) as run:
        before = await run.finished((await run.client.enqueue("greet", {"name": "old"})).id)
    # step 2: the coordinator signs with the new key (the old one listed for the others)
    async with stack(redis_db, sdk, signing_keys=("new-key", "old-key")) as run:
        after = await run.finished((await run.client.enqueue("greet", {"name": "new"})).id)
    assert (before.state, before.attempts, after.state, after.attempts) == ("succeeded", 1, "succeeded", 1)
    assert sdk.runs == {"greet": [1, 1]}


async def test_with_api_tokens_a_wrong_token_is_401_and_the_right_one_runs_jobs(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk, token="right-token", api_tokens=("right-token",)) as run:
        api_url = run.client.base_url
        async with AsyncClient(api_url, token="wrong-token") as wrong, AsyncClient(api_url) as none:
            with pytest.raises(UnauthorizedError, match="bad API token") as refused:
                await wrong.enqueue("greet", {"name": "Eve"})
            assert refused.value.status_code == 401
            with pytest.raises(UnauthorizedError, match="missing API token"):
                await none.get("greet:anything")
            assert (await none.health())["redis"] == "up"  # /health stays open
        # receipts and heartbeats carry their receipt token, not an API token
        job = await run.client.enqueue("render", {"pages": 1})
        done = await run.finished(job.id)
    assert (done.state, done.result) == ("succeeded", {"pages": 1})
    assert sdk.runs == {"render": [1]}


async def test_retry_later_pauses_only_that_throttle_key_and_does_not_use_up_an_attempt(redis_db):
    sdk = sdk_app()
    async with stack(redis_db, sdk) as run:
        first = await run.client.enqueue("shopify-sync", {"shop": "a"}, throttle_key="shop-a", id="a-1")
        deadline = time.monotonic() + 5
        while not sdk.shop_calls:
            assert time.monotonic() < deadline, "the first job was not dispatched"
            await asyncio.sleep(0.01)
        second = await run.client.enqueue("shopify-sync", {"shop": "a"}, throttle_key="shop-a", id="a-2")
        other = await run.client.enqueue("shopify-sync", {"shop": "b"}, throttle_key="shop-b", id="b-1")
        done = {job.id: await run.finished(job.id) for job in (other, first, second)}
    # maxAttempts is 1, yet the job that got RetryLater succeeded on its second attempt.
    assert (done[first.id].state, done[first.id].attempts) == ("succeeded", 2)
    assert all(job.state == "succeeded" for job in done.values())
    calls = {(job_id, attempt): at for job_id, attempt, at in sdk.shop_calls}
    throttled_at = calls[(first.id, 1)]
    assert calls[(other.id, 1)] - throttled_at < 0.5  # shop b is not held up by shop a's pause
    for job_id, attempt in ((first.id, 2), (second.id, 1)):  # shop a waits out the Retry-After
        assert calls[(job_id, attempt)] - throttled_at >= 0.95, (job_id, calls[(job_id, attempt)] - throttled_at)
