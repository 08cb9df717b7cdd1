"""Operators' side of the API: GET /workers, PATCH /workers/{name}, pause and resume;
and the callers' throttling fields (throttleKey, cost, a receipt's retryAfter)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redisq.security import receipt_token

from test_api import WORKER, iso_ms, running_api, worker_config


async def worker_body(api: Any, name: str = WORKER) -> dict[str, Any]:
    resp = await api.client.get(f"/workers/{name}")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_get_workers_shows_config_and_live_state(engine_redis):
    worker = worker_config(rate=2.0, burst=40, concurrency=8)
    async with running_api(engine_redis, dispatch=False, worker=worker) as api:
        await api.enqueue(throttleKey="shop-a.myshopify.com")
        await api.enqueue()
        resp = await api.client.get("/workers")
        assert resp.status_code == 200
        (w,) = resp.json()["workers"]
        assert w["name"] == WORKER and w["url"] == "http://worker.test/send-email"
        assert w["limits"] == {"rate": 2.0, "burst": 40.0, "concurrency": 8, "totalRate": None, "totalBurst": None,
                               "timeout": 5.0, "paused": False}
        assert w["jobs"] == {"scheduled": 2, "retrying": 0, "running": 0, "succeeded": 0, "dead": 0, "cancelled": 0}
        assert w["throttleKeysWaiting"] == 2 and w["tokens"] == 40.0
        assert (w["dispatchedLastMinute"], w["dispatchRate"]) == (0, 0.0)
        assert await worker_body(api) == w


async def test_patch_changes_the_live_limits(engine_redis):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=2.0, burst=40)) as api:
        resp = await api.client.patch(f"/workers/{WORKER}", json={"rate": 10, "concurrency": 4, "timeout": 2.5})
        assert resp.status_code == 200, resp.text
        assert resp.json()["limits"] == {"rate": 10.0, "burst": 40.0, "concurrency": 4, "totalRate": None,
                                         "totalBurst": None, "timeout": 2.5, "paused": False}
        resp = await api.client.patch(f"/workers/{WORKER}", json={"rate": None, "burst": None, "concurrency": None})
        assert resp.json()["limits"]["rate"] is None and resp.json()["limits"]["concurrency"] is None
        assert (await worker_body(api))["limits"]["timeout"] == 2.5


@pytest.mark.parametrize("body, field, message", [
    ({"rate": 0}, "rate", "must be a number > 0 and <= 1000000000 or null, got 0"),
    ({"rate": -1}, "rate", "must be a number > 0"),
    ({"rate": "fast"}, "rate", "must be a number > 0 and <= 1000000000 or null, got 'fast'"),
    ({"burst": 0.5}, "burst", "must be a number >= 1"),
    ({"burst": True}, "burst", "must be a number"),
    ({"concurrency": 0}, "concurrency", "whole number >= 1"),
    ({"concurrency": 2.5}, "concurrency", "whole number >= 1"),
    ({"timeout": 0}, "timeout", "seconds > 0"),
    ({"speed": 3}, "speed", "unknown field"),
    ({}, None, "give at least one of"),
    ({"totalBurst": 5}, "totalBurst", "needs a totalRate"),
])
async def test_bad_patches_are_422_and_change_nothing(engine_redis, body, field, message):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=2.0, burst=40)) as api:
        before = await worker_body(api)
        resp = await api.client.patch(f"/workers/{WORKER}", json=body)
        assert resp.status_code == 422, resp.text
        assert message in resp.json()["error"] and resp.json().get("field") == field
        assert await worker_body(api) == before


async def test_a_burst_needs_a_rate_and_an_unknown_worker_is_404(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:  # this worker has no rate
        resp = await api.client.patch(f"/workers/{WORKER}", json={"burst": 10})
        assert resp.status_code == 422 and "burst: needs a rate" in resp.json()["error"]
        for method, path in (("GET", "/workers/nope"), ("PATCH", "/workers/nope"), ("POST", "/workers/nope/pause"),
                             ("POST", "/workers/nope/resume")):
            resp = await api.client.request(method, path, json={"rate": 1})
            assert resp.status_code == 404 and "unknown worker 'nope'" in resp.json()["error"], (method, path)
        resp = await api.client.patch(f"/workers/{WORKER}", content=b"{not json")
        assert resp.status_code == 400


async def test_pause_holds_dispatch_and_resume_lets_it_go(engine_redis):
    async with running_api(engine_redis) as api:
        resp = await api.client.post(f"/workers/{WORKER}/pause")
        assert resp.status_code == 200 and resp.json()["limits"]["paused"] is True
        job = await api.enqueue()
        await asyncio.sleep(0.3)  # the enqueue woke the dispatcher; a paused worker gives it nothing
        assert api.calls == [] and (await api.get(job["id"]))["state"] == "scheduled"
        resp = await api.client.post(f"/workers/{WORKER}/resume")
        assert resp.status_code == 200 and resp.json()["limits"]["paused"] is False
        await api.call_for(job["id"], within_s=1.0)


async def test_enqueue_fields_throttle_key_and_cost(engine_redis):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=50.0, burst=1000)) as api:
        job = await api.enqueue(throttleKey="shop-a.myshopify.com", cost=12)
        assert (job["throttleKey"], job["cost"]) == ("shop-a.myshopify.com", 12)
        assert (await api.get(job["id"]))["throttleKey"] == "shop-a.myshopify.com"
        for body, field, message in (
            ({"cost": 1001}, "cost", "cost: is 1001, above the burst of 1000 tokens"),
            ({"cost": 0}, "cost", "must be a number of tokens > 0"),
            ({"cost": "12"}, "cost", "must be a number of tokens"),
            ({"throttleKey": ""}, "throttleKey", "1 to 200 printable characters"),
            ({"throttleKey": "a\nb"}, "throttleKey", "printable"),
            ({"throttleKey": 7}, "throttleKey", "printable characters"),
        ):
            resp = await api.client.post("/job", json={"worker": WORKER, "id": "refused", **body})
            assert resp.status_code == 422, (body, resp.text)
            assert message in resp.json()["error"] and resp.json()["field"] == field
        assert (await api.client.get(f"/job/{WORKER}:refused")).status_code == 404
        resp = await api.client.post("/jobs", json={"jobs": [{"worker": WORKER, "id": "ok"},
                                                             {"worker": WORKER, "id": "big", "cost": 5000}]})
        assert resp.status_code == 422 and resp.json()["error"].startswith("jobs[1].cost:")
        assert (await api.client.get(f"/job/{WORKER}:ok")).status_code == 404


async def pushed_back(api: Any, throttle_key: str, error: str) -> dict[str, Any]:
    """A job of the key whose first attempt is answered by a receipt with ``retryAfter: 30``."""
    job = await api.enqueue(throttleKey=throttle_key)
    call = await api.call_for(job["id"])
    resp = await api.receipt(job["id"], {"status": "failure", "error": error, "retryAfter": 30}, call["receiptToken"])
    assert resp.status_code == 200 and resp.json()["state"] == "retrying"
    return job


async def test_a_receipt_with_retry_after_is_back_pressure(engine_redis):
    async with running_api(engine_redis, worker=worker_config(max_attempts=1)) as api:
        job = await pushed_back(api, "shop-a", "Shopify said 429")
        done = await api.get(job["id"])
        # maxAttempts is 1, yet the job is not dead: back-pressure does not use up an attempt.
        assert done["state"] == "retrying" and done["lastError"] == "Shopify said 429"
        assert iso_ms(done["runAt"]) - iso_ms(done["createdAt"]) >= 30_000
        # The key waits out the 30 s; another key's job goes at once.
        same_key = await api.enqueue(throttleKey="shop-a")
        other_key = await api.enqueue(throttleKey="shop-b")
        await api.call_for(other_key["id"])
        assert all(c["jobId"] != same_key["id"] for c in api.calls)
        assert (await worker_body(api))["jobs"]["retrying"] == 1
        for body, message in (({"status": "failure", "retryAfter": -1}, "retryAfter: must be a number of seconds"),
                              ({"status": "success", "retryAfter": 5}, "only a failure that is retried")):
            token = receipt_token(api.coordinator.secret, job["id"], 1, 1)
            resp = await api.receipt(job["id"], body, token)
            assert resp.status_code == 422 and message in resp.json()["error"]


async def test_a_workers_keys_show_the_paused_first_then_the_busiest(engine_redis):
    async with running_api(engine_redis, worker=worker_config(max_attempts=1)) as api:
        await pushed_back(api, "shop-a", "429")
        await api.client.post(f"/workers/{WORKER}/pause")  # nothing leaves now: the counts stay
        for key in ("shop-b", "shop-b", "shop-b", "shop-c"):
            await api.enqueue(throttleKey=key)
        resp = await api.client.get(f"/workers/{WORKER}/keys")
        assert resp.status_code == 200, resp.text
        found = resp.json()
        assert found["keysWaiting"] == 3
        assert [(k["key"], k["waiting"], k["running"]) for k in found["keys"]] == [
            ("shop-a", 1, 0), ("shop-b", 3, 0), ("shop-c", 1, 0)]
        assert 25 < found["keys"][0]["pausedFor"] <= 30 and found["keys"][1]["pausedFor"] == 0
        assert iso_ms(found["keys"][0]["readyAt"]) >= iso_ms(found["keys"][1]["readyAt"]) + 25_000
        limited = (await api.client.get(f"/workers/{WORKER}/keys", params={"limit": 2})).json()
        assert [k["key"] for k in limited["keys"]] == ["shop-a", "shop-b"] and limited["keysWaiting"] == 3
        assert (await worker_body(api))["throttled"] == 1  # the answer that pushed back
        for params in ({"limit": 0}, {"limit": "x"}, {"limit": 1001}, {"most": 1}):
            resp = await api.client.get(f"/workers/{WORKER}/keys", params=params)
            assert resp.status_code == 422, params


async def test_the_dispatch_history_counts_the_jobs_claimed_per_10_s(engine_redis):
    async with running_api(engine_redis) as api:
        jobs = [await api.enqueue() for _ in range(3)]
        for job in jobs:
            await api.call_for(job["id"])
        await asyncio.sleep(1.1)  # the history ends with the last whole second
        w = await worker_body(api)
        history = w["dispatchHistory"]
        assert history["bucketSeconds"] == 10 and len(history["dispatched"]) == 30
        assert sum(history["dispatched"]) == w["dispatchedLastMinute"] == 3
        assert sum(history["dispatched"][-2:]) == 3  # within the last 20 s
        assert w["recentDispatchRate"] == history["dispatched"][-1] / 10
