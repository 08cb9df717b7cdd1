"""Faulty workers and real networks: what a user sees (``GET /job/{id}``) when a worker's
answer comes in pieces, is cut short or trickles past the timeout; which statuses kill a
job and which are retried; the SDK's PermanentFailure; and heartbeats that keep a
synchronous call alive. The workers are a raw socket (``raw_worker.py``), so each test
chooses how the answer is written, and the SDK's ASGI app under uvicorn. Every test runs on each HTTP
client the dispatcher can use."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from redisq.config import Config, WorkerConfig
from redisq.dispatch import ERROR_BODY_CHARS, Caller
from redisq.engine import ClaimedJob
from redisq.errors import UnavailableError
from redisq.transport import MockTransport, Response
from redisq.worker import JobContext, PermanentFailure, Workers

from .raw_worker import CLOSE, RawWorker, head, split, whole
from cpu_burner import CpuBurner
from test_dispatch import HTTP_CLIENTS, SECRET, coordinator, http_client, worker_config  # noqa: F401  (a fixture)
from test_sdk_e2e import serving_at

# -- the body is read whole, and a cut or late body is a failed attempt --------------------------


@pytest.mark.parametrize("http_client", [*HTTP_CLIENTS, "httpx"])
async def test_a_json_result_split_across_writes_is_kept_whole(real_redis, http_client):
    def answer(call: dict[str, Any]) -> list[Any]:
        result = {"job": call["jobId"], "rows": [{"n": n, "text": "x" * 40} for n in range(60)]}
        return split(200, json.dumps(result).encode(), pause_s=0.05, pieces=3)

    async with RawWorker(answer) as worker, coordinator(real_redis, worker_config(worker.url),
                                                        http_client=http_client) as run:
        jobs = await run.enqueue_batch([{"worker": "work", "id": f"split-{i}"} for i in range(20)])
        done = [await run.finished(job["id"]) for job in jobs]
    assert [(job["state"], job["attempts"]) for job in done] == [("succeeded", 1)] * 20
    assert [job["result"] for job in done] == [
        {"job": job["id"], "rows": [{"n": n, "text": "x" * 40} for n in range(60)]} for job in jobs]


@pytest.mark.parametrize("http_client", [*HTTP_CLIENTS, "httpx"])
async def test_a_body_cut_short_is_a_failed_attempt_and_the_job_is_retried(real_redis, http_client):
    def answer(call: dict[str, Any]) -> list[Any]:
        if call["attempt"] == 1:  # Content-Length 1000, 7 bytes, then the connection closes
            return [head(200, 1000), b'{"ok": ', CLOSE]
        return whole(200, b'{"ok": true}')

    async with RawWorker(answer) as worker, coordinator(real_redis, worker_config(worker.url),
                                                        http_client=http_client) as run:
        job = await run.enqueue(worker="work", id="cut")
        done = await run.finished(job["id"])
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 2, {"ok": True})
    assert worker.attempts(job["id"]) == [1, 2]
    assert done["lastError"], "the cut attempt failed with an error saying so"


@pytest.mark.parametrize("http_client", [*HTTP_CLIENTS, "httpx"])
async def test_a_body_trickling_past_the_timeout_is_a_failed_attempt_and_the_job_is_retried(real_redis, http_client):
    def answer(call: dict[str, Any]) -> list[Any]:
        if call["attempt"] == 1:  # 40 bytes, one every 0.1 s: the last would come after 4 s
            body = b'{"slow": "' + b"z" * 28 + b'"}'
            return [head(200, len(body)), *(piece for byte in body for piece in (bytes([byte]), 0.1))]
        return whole(200, b'{"ok": true}')

    async with RawWorker(answer) as worker, coordinator(real_redis, worker_config(worker.url, timeout_s=1.0),
                                                        http_client=http_client) as run:
        job = await run.enqueue(worker="work", id="trickle")
        done = await run.finished(job["id"], within_s=8.0)
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 2, {"ok": True})
    assert done["lastError"].startswith("timed out"), done["lastError"]


@pytest.mark.parametrize("http_client", [*HTTP_CLIENTS, "httpx"])
async def test_an_answer_far_past_the_read_cap_is_cut_there_and_the_job_goes_on(real_redis, http_client):
    # 4 MB (64 times MAX_RESPONSE_BYTES): a success whose body is too big to be a result,
    # then a failure whose error keeps the body's start.
    big = b'{"blob": "' + b"b" * (4 * 1024 * 1024) + b'"}'

    def answer(call: dict[str, Any]) -> list[Any]:
        if call["jobId"].endswith("fails") and call["attempt"] == 1:
            return whole(500, b"oops " + big)
        return whole(200, big)

    async with RawWorker(answer) as worker, coordinator(real_redis, worker_config(worker.url),
                                                        http_client=http_client) as run:
        big_result = await run.finished((await run.enqueue(worker="work", id="big"))["id"])
        fails = await run.finished((await run.enqueue(worker="work", id="fails"))["id"])
    assert (big_result["state"], big_result["attempts"], big_result["result"]) == ("succeeded", 1, None)
    assert (fails["state"], fails["attempts"]) == ("succeeded", 2)
    assert fails["lastError"] == "HTTP 500: oops " + '{"blob": "' + "b" * (ERROR_BODY_CHARS - 15)


# -- which statuses are permanent ----------------------------------------------------------------


def failing_twice(status: int, **headers: str) -> Any:
    def answer(call: dict[str, Any]) -> list[Any]:
        if call["attempt"] <= 2:
            return whole(status, f"status {status}".encode(), **headers)
        return whole(200, b'{"recovered": true}')
    return answer


@pytest.mark.parametrize("status", [404, 403, 408, 409, 500])
async def test_statuses_that_may_recover_are_retried_until_the_worker_does(engine_redis, status, http_client):
    async with RawWorker(failing_twice(status)) as worker, coordinator(
            engine_redis, worker_config(worker.url, max_attempts=5)) as run:
        job = await run.enqueue(worker="work", id=f"recovers-{status}")
        done = await run.finished(job["id"])
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 3, {"recovered": True})
    assert done["lastError"] == f"HTTP {status}: status {status}"


@pytest.mark.parametrize("status", [400, 410, 422])
async def test_statuses_that_mean_the_payload_can_never_succeed_are_dead_by_default(engine_redis, status, http_client):
    async with RawWorker(failing_twice(status)) as worker, coordinator(
            engine_redis, worker_config(worker.url, max_attempts=5)) as run:
        job = await run.enqueue(worker="work", id=f"never-{status}")
        done = await run.finished(job["id"])
        await asyncio.sleep(0.3)  # several backoffs' worth: no second attempt comes
    assert (done["state"], done["attempts"], done["lastError"]) == ("dead", 1, f"HTTP {status}: status {status}")
    assert worker.attempts(job["id"]) == [1]


async def test_a_workers_permanent_statuses_replace_the_default_list(engine_redis, http_client):
    def answer(call: dict[str, Any]) -> list[Any]:
        status = 404 if call["jobId"].endswith("gone") else 422
        return whole(status, b"refused") if call["attempt"] == 1 else whole(200, b"{}")

    async with RawWorker(answer) as worker, coordinator(
            engine_redis, worker_config(worker.url, permanent_statuses=frozenset({404}))) as run:
        gone = await run.finished((await run.enqueue(worker="work", id="gone"))["id"])
        invalid = await run.finished((await run.enqueue(worker="work", id="invalid"))["id"])
    assert (gone["state"], gone["attempts"], gone["lastError"]) == ("dead", 1, "HTTP 404: refused")
    assert (invalid["state"], invalid["attempts"]) == ("succeeded", 2)  # 422 is not in this worker's list


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_an_answer_marked_permanent_is_dead_whatever_its_status(engine_redis, status, http_client):
    answer = failing_twice(status, X_Redisq_Permanent="true", Retry_After="1")
    async with RawWorker(answer) as worker, coordinator(engine_redis, worker_config(worker.url, max_attempts=5)) as run:
        job = await run.enqueue(worker="work", id=f"marked-{status}")
        done = await run.finished(job["id"])
    assert (done["state"], done["attempts"], done["lastError"]) == ("dead", 1, f"HTTP {status}: status {status}")


# -- the SDK --------------------------------------------------------------------------------------


def sdk_workers() -> Workers:
    workers = Workers(secret=SECRET)

    @workers.job("invalid")
    async def invalid(args: Any, ctx: JobContext) -> Any:
        raise PermanentFailure(f"{args['to']!r} is not an address")

    @workers.job("long")
    async def long(args: Any, ctx: JobContext) -> Any:
        """3 s of work in the request itself, a heartbeat every 0.5 s when asked."""
        for _ in range(6):
            await asyncio.sleep(0.5)
            if args["heartbeat"]:
                await ctx.heartbeat()
        return {"slept_s": 3}

    return workers


async def test_the_sdks_permanent_failure_is_dead_even_where_no_status_is_permanent(engine_redis, http_client):
    async with serving_at(sdk_workers()) as sdk_url, coordinator(
            engine_redis, worker_config(sdk_url + "/", name="invalid", max_attempts=5,
                                        permanent_statuses=frozenset())) as run:
        job = await run.enqueue(worker="invalid", args={"to": "nobody"})
        done = await run.finished(job["id"])
    assert (done["state"], done["attempts"]) == ("dead", 1)
    assert done["lastError"] == "HTTP 422: PermanentFailure: 'nobody' is not an address"


async def test_heartbeats_keep_a_synchronous_call_alive_past_its_timeout(engine_redis, http_client):
    """A 3 s job that answers in the request, heartbeats every 0.5 s, timeout 1 s: one attempt,
    succeeded, also on a busy machine; without heartbeats the same call is cut at 1 s."""
    with CpuBurner(processes=1, limit_s=60):
        async with serving_at(sdk_workers()) as sdk_url, coordinator(
                engine_redis, worker_config(sdk_url + "/", name="long", timeout_s=1.0, max_attempts=3)) as run:
            started = time.monotonic()  # before its enqueue: its call may begin before the control's is enqueued
            alive = await run.enqueue(worker="long", args={"heartbeat": True})
            silent = await run.enqueue(worker="long", args={"heartbeat": False}, maxAttempts=1)  # the control
            done = await run.finished(alive["id"], within_s=10.0)
            took_s = time.monotonic() - started
            cut = await run.finished(silent["id"], within_s=10.0)
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 1, {"slept_s": 3})
    assert done["lastError"] is None
    assert took_s >= 3.0
    assert (cut["state"], cut["attempts"]) == ("dead", 1) and cut["lastError"].startswith("timed out"), cut


async def test_only_calls_that_reach_their_timeout_read_the_lease():
    """The wait follows the lease at no cost to calls answered in time: a fast call reads
    nothing; a late one reads the lease when its timeout passes, waits while it was extended
    and fails when it was not."""
    reads: list[str] = []
    leases_left_ms = {"fast": [], "late": [400, 0]}

    async def lease_left_ms(worker: WorkerConfig, job: ClaimedJob) -> int:
        reads.append(job.suffix)
        return leases_left_ms[job.suffix].pop(0)

    async def answer(url: str, body: bytes, headers: Any) -> Response:
        if b'"work:late"' in body:
            await asyncio.sleep(5)
        return Response(200, b"{}")

    worker = WorkerConfig(name="work", url="http://worker.test/", timeout_s=0.3)
    caller = Caller(Config(secret=SECRET, workers={"work": worker}), MockTransport(answer), SECRET.encode(),
                    SECRET.encode(), lease_left_ms=lease_left_ms)
    fast = [await caller.call(worker, ClaimedJob("work", "fast", 1, 300, "{}")) for _ in range(50)]
    started = time.monotonic()
    late = await caller.call(worker, ClaimedJob("work", "late", 1, 300, "{}"))
    waited_s = time.monotonic() - started
    assert {r.outcome for r in fast if r} == {"success"} and len(fast) == 50
    assert late is not None and late.outcome == "failure" and late.error.startswith("timed out"), late
    assert reads == ["late", "late"]  # at 0.3 s (400 ms left), then at 0.7 s (none left)
    assert 0.7 <= waited_s < 1.5, waited_s


async def test_a_lease_that_cannot_be_read_is_not_taken_as_ended():
    """Redis unavailable when the timeout passes: the call is not cut (its worker may still
    answer); the lease is read again a second later, and an answer that came meanwhile wins."""
    reads: list[float] = []

    async def lease_left_ms(worker: WorkerConfig, job: ClaimedJob) -> int:
        reads.append(time.monotonic())
        raise UnavailableError("redis is unavailable: connection refused")

    async def answer(url: str, body: bytes, headers: Any) -> Response:
        await asyncio.sleep(0.8)
        return Response(200, b'{"late": true}')

    worker = WorkerConfig(name="work", url="http://worker.test/", timeout_s=0.3)
    caller = Caller(Config(secret=SECRET, workers={"work": worker}), MockTransport(answer), SECRET.encode(),
                    SECRET.encode(), lease_left_ms=lease_left_ms)
    receipt = await caller.call(worker, ClaimedJob("work", "slow", 1, 300, "{}"))
    assert receipt is not None and (receipt.outcome, receipt.result_json) == ("success", '{"late": true}'), receipt
    assert len(reads) == 1


# -- receipts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("result_bytes, kept", [(10_000, True), (60_000, False)])
async def test_a_receipts_result_is_capped_like_an_http_answers(engine_redis, result_bytes, kept, http_client):
    async with RawWorker(lambda call: whole(202)) as worker, coordinator(engine_redis,
                                                                         worker_config(worker.url)) as run:
        job = await run.enqueue(worker="work", id="big")
        while not worker.calls:
            await asyncio.sleep(0.01)
        (call,) = worker.calls
        result = {"blob": "b" * result_bytes}
        async with httpx.AsyncClient() as client:
            resp = await client.post(call["receiptUrl"], json={"status": "success", "result": result},
                                     headers={"Authorization": f"Bearer {call['receiptToken']}"})
        assert resp.status_code == 200 and resp.json()["accepted"], resp.text
        done = await run.finished(job["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == (result if kept else None)
