"""GET /metrics as Prometheus scrapes it: parsed with prometheus_client's own parser, on a
real Redis and on the embedded store, its counters matching the jobs that ran, its gauges
the totals every coordinator on that Redis reports, protected by api_tokens unless
metrics_public."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from redisq.api import create_app
from redisq.coordinator import Coordinator
from redisq.transport import Response

from redis_server import RedisServer
from test_api import WORKER, running_api, stop_within, worker_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the scrape by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not in the scrape: {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)


def dies_or_succeeds(call: dict[str, Any]) -> Response:
    return Response(500, b"it broke") if call["args"].get("die") else Response(200, b'{"ok": true}')


async def test_counters_match_the_jobs_run_and_gauges_read_redis(engine_redis):
    worker = worker_config(max_attempts=2, rate=100.0, burst=50, concurrency=8)
    async with running_api(engine_redis, dies_or_succeeds, worker=worker) as api:
        ids = [(await api.enqueue(id=f"job-{n}", args={"die": n % 4 == 0}))["id"] for n in range(20)]
        for job_id in ids:
            await api.state(job_id, "succeeded", "dead", within_s=10)
        # the settler reports after each settle: wait for the last one to be counted
        await api.until("all 20 counted", lambda: scrape_count(api), within_s=3)
        samples = await scrape(api.client)

    assert value(samples, "redisq_succeeded_total", worker=WORKER) == 15
    assert value(samples, "redisq_dead_total", worker=WORKER) == 5
    assert value(samples, "redisq_failed_total", worker=WORKER) == 10  # each dying job failed twice
    assert value(samples, "redisq_retried_total", worker=WORKER) == 5
    assert value(samples, "redisq_throttled_total", worker=WORKER) == 0
    attempts_made = len(api.calls)
    assert attempts_made == 25
    assert value(samples, "redisq_dispatched_total", worker=WORKER) == attempts_made
    # every call's lag behind the time it was due, under a minute on this machine however busy
    assert value(samples, "redisq_dispatch_lag_seconds_count", worker=WORKER) == attempts_made
    assert value(samples, "redisq_dispatch_lag_seconds_bucket", worker=WORKER, le="60.0") == attempts_made
    assert value(samples, "redisq_dispatch_duration_seconds_count", worker=WORKER) == attempts_made
    # global, from Redis
    assert value(samples, "redisq_jobs", worker=WORKER, state="succeeded") == 15
    assert value(samples, "redisq_jobs", worker=WORKER, state="dead") == 5
    assert value(samples, "redisq_jobs", worker=WORKER, state="scheduled") == 0
    assert value(samples, "redisq_limit", worker=WORKER, limit="rate") == 100
    assert value(samples, "redisq_limit", worker=WORKER, limit="burst") == 50
    assert value(samples, "redisq_limit", worker=WORKER, limit="concurrency") == 8
    assert ("redisq_limit", (("limit", "total_rate"), ("worker", WORKER))) not in samples  # unlimited: absent
    assert value(samples, "redisq_paused", worker=WORKER) == 0
    assert value(samples, "redisq_redis_up") == 1


async def scrape_count(api: Any) -> bool:
    samples = await scrape(api.client)
    return value(samples, "redisq_succeeded_total", worker=WORKER) + value(
        samples, "redisq_dead_total", worker=WORKER) == 20


async def test_every_coordinator_reports_the_same_totals_and_its_own_counts(engine_redis):
    async with running_api(engine_redis, dies_or_succeeds, worker=worker_config()) as api:
        job = await api.enqueue(args={})
        await api.state(job["id"], "succeeded")
        await api.client.post(f"/workers/{WORKER}/pause")
        other = Coordinator(api.coordinator.config, redis=engine_redis)
        await other.start(dispatch=False)
        try:
            transport = httpx.ASGITransport(app=create_app(other, manage_lifecycle=False))
            async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as other_client:
                await api.until("the success counted", lambda: scrape_count_one(api))
                mine, theirs = await scrape(api.client), await scrape(other_client)
        finally:
            await stop_within(other)
    for samples in (mine, theirs):
        assert value(samples, "redisq_jobs", worker=WORKER, state="succeeded") == 1
        assert value(samples, "redisq_paused", worker=WORKER) == 1
    assert value(mine, "redisq_dispatched_total", worker=WORKER) == 1
    assert value(theirs, "redisq_dispatched_total", worker=WORKER) == 0  # per process: it sent nothing


async def scrape_count_one(api: Any) -> bool:
    return value(await scrape(api.client), "redisq_succeeded_total", worker=WORKER) == 1


async def test_a_429_with_retry_after_is_counted_as_throttled_not_failed(engine_redis):
    answered: set[str] = set()

    def push_back_once(call: dict[str, Any]) -> Response:
        if call["jobId"] in answered:
            return Response(200, b"{}")
        answered.add(call["jobId"])
        return Response(429, b"slow down", {"retry-after": "0"})

    async with running_api(engine_redis, push_back_once, worker=worker_config(max_attempts=1)) as api:
        job = await api.enqueue(throttleKey="shop-a")
        done = await api.state(job["id"], "succeeded", "dead", within_s=5)
        assert done["state"] == "succeeded"  # back-pressure is not a failed attempt
        await api.until("the success counted", lambda: scrape_count_one(api))
        samples = await scrape(api.client)
    assert value(samples, "redisq_throttled_total", worker=WORKER) == 1
    assert value(samples, "redisq_failed_total", worker=WORKER) == 0
    assert value(samples, "redisq_dispatched_total", worker=WORKER) == 2


async def test_metrics_need_an_api_token_unless_metrics_public(real_redis):
    async with running_api(real_redis, dispatch=False, api_tokens=("token-a",)) as api:
        resp = await api.client.get("/metrics")
        assert resp.status_code == 401 and "missing API token" in resp.json()["error"]
        assert (await api.client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        samples = await scrape(api.client, Authorization="Bearer token-a")
        assert value(samples, "redisq_dispatched_total", worker=WORKER) == 0
    async with running_api(real_redis, dispatch=False, api_tokens=("token-a",), metrics_public=True) as api:
        samples = await scrape(api.client)
        assert value(samples, "redisq_jobs", worker=WORKER, state="scheduled") == 0
        assert (await api.client.get("/workers")).status_code == 401  # only /metrics is public


async def test_while_redis_is_down_metrics_answer_this_processs_series():
    server = RedisServer().start()
    redis = aioredis.Redis.from_url(server.url, socket_timeout=1)
    try:
        async with running_api(redis, dispatch=False) as api:
            server.stop()
            resp = await api.client.get("/metrics")
    finally:
        server.stop()
    assert resp.status_code == 200, resp.text
    samples = parse(resp.text)
    assert value(samples, "redisq_dispatched_total", worker=WORKER) == 0
    assert value(samples, "redisq_redis_up") == 0
    assert not [k for k in samples if k[0] == "redisq_jobs"]  # global series need Redis


async def test_posted_receipts_are_counted_by_the_process_that_settles_them(engine_redis):
    worker = worker_config(max_attempts=3)
    async with running_api(engine_redis, worker=worker) as api:  # the mock worker answers 202
        job = await api.enqueue()
        first = await api.call_for(job["id"], 1)
        resp = await api.receipt(job["id"], {"status": "failure", "error": "not yet"}, first["receiptToken"])
        assert resp.status_code == 200 and resp.json()["state"] == "retrying"
        second = await api.call_for(job["id"], 2)
        resp = await api.receipt(job["id"], {"status": "success"}, second["receiptToken"])
        assert resp.json()["state"] == "succeeded"
        samples = await scrape(api.client)
    assert value(samples, "redisq_dispatched_total", worker=WORKER) == 2
    assert value(samples, "redisq_failed_total", worker=WORKER) == 1
    assert value(samples, "redisq_retried_total", worker=WORKER) == 1
    assert value(samples, "redisq_succeeded_total", worker=WORKER) == 1


async def test_leases_that_run_out_are_counted_as_reaped_and_their_dead_jobs_logged(engine_redis, caplog):
    caplog.set_level(logging.INFO, logger="redisq.signals")
    worker = worker_config(max_attempts=1, timeout_s=0.3)
    async with running_api(engine_redis, worker=worker) as api:  # 202, and no receipt ever comes
        job = await api.enqueue()
        done = await api.state(job["id"], "dead", within_s=5)
        assert done["lastError"] == "timed out"
        samples = await scrape(api.client)
    assert value(samples, "redisq_reaped_total", worker=WORKER) == 1
    assert value(samples, "redisq_dispatched_total", worker=WORKER) == 1
    assert value(samples, "redisq_dead_total", worker=WORKER) == 1  # a job that dies of a timeout is dead
    (dead,) = [r for r in caplog.records if getattr(r, "redisq_event", None) == "job_dead"]
    assert dead.redisq_fields["job"] == job["id"] and dead.redisq_fields["error"] == "timed out"
    assert dead.getMessage() == f"{job['id']}: dead after 1 attempt; last error: timed out"
