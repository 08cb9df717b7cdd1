"""Operators' side of shared limits: GET /limits, GET/PATCH /limits/{name}, pausing and
resuming a limit or one of its throttle keys, and the limits each worker names in GET
/workers. On a real Redis and on the embedded store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from redisq.api.app import create_app
from redisq.config import parse_config
from redisq.coordinator import Coordinator
from redisq.transport import MockTransport

from test_api import stop_within


@contextlib.asynccontextmanager
async def shopify_api(redis: Any, **shopify: Any) -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config({"secret": "s", "limits": {"shopify": shopify or {"rate": 2, "burst": 39}},
                           "workers": {"sync-orders": {"url": "http://w.test/o", "limits": ["shopify"]},
                                       "sync-products": {"url": "http://w.test/p", "limits": ["shopify"]},
                                       "send-email": {"url": "http://w.test/e"}}})
    config = replace(config, shutdown_grace_s=0.2)
    coordinator = Coordinator(config, redis=redis, transport=MockTransport(lambda *a: (200, {}, b"{}")))
    await coordinator.start(dispatch=False)
    try:
        app = create_app(coordinator, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://redisq.test") as client:
            yield client
    finally:
        await stop_within(coordinator)


LIVE = {"rate": 2.0, "burst": 39.0, "concurrency": None, "totalRate": None, "totalBurst": None, "paused": False}


async def test_get_limits_shows_each_limit_its_workers_and_state(engine_redis):
    async with shopify_api(engine_redis) as api:
        resp = await api.get("/limits")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"limits": [{"name": "shopify", "slot": "shopify",
                                           "workers": ["sync-orders", "sync-products"], "limits": LIVE,
                                           "running": 0, "totalTokens": None, "pausedKeys": []}]}
        one = (await api.get("/limits/shopify", params={"key": "shop-a"})).json()
        assert one["key"] == {"key": "shop-a", "tokens": 39.0, "paused": False}
        assert (await api.get("/limits/nope")).status_code == 404
        workers = {w["name"]: w for w in (await api.get("/workers")).json()["workers"]}
        assert workers["sync-orders"]["sharedLimits"] == [{"name": "shopify", **LIVE}]
        assert workers["send-email"]["sharedLimits"] == []
        assert (await api.get("/workers/sync-products")).json()["sharedLimits"] == [{"name": "shopify", **LIVE}]


async def test_a_patch_changes_the_limit_for_every_worker_naming_it(engine_redis):
    async with shopify_api(engine_redis) as api:
        resp = await api.patch("/limits/shopify", json={"rate": 4, "concurrency": 10})
        assert resp.status_code == 200, resp.text
        assert resp.json()["limits"] == {**LIVE, "rate": 4.0, "concurrency": 10}
        for name in ("sync-orders", "sync-products"):
            shared = (await api.get(f"/workers/{name}")).json()["sharedLimits"]
            assert shared == [{"name": "shopify", **LIVE, "rate": 4.0, "concurrency": 10}]


@pytest.mark.parametrize("body, message", [
    ({"timeout": 3}, "timeout: unknown field"),
    ({"rate": 0}, "rate: must be a number > 0"),
    ({"rate": None}, "a shared limit needs a rate, a totalRate or a concurrency"),
    ({}, "give at least one of"),
])
async def test_a_bad_patch_is_refused_and_changes_nothing(engine_redis, body, message):
    async with shopify_api(engine_redis) as api:
        resp = await api.patch("/limits/shopify", json=body)
        assert resp.status_code == 422 and message in resp.json()["error"], resp.text
        assert (await api.get("/limits/shopify")).json()["limits"] == LIVE


async def test_pause_and_resume_a_limit_or_one_key(engine_redis):
    async with shopify_api(engine_redis) as api:
        resp = await api.post("/limits/shopify/pause", json={"key": "gone.myshopify.com"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["pausedKeys"] == ["gone.myshopify.com"]
        assert resp.json()["key"] == {"key": "gone.myshopify.com", "tokens": 39.0, "paused": True}
        assert (await api.post("/limits/shopify/pause")).json()["limits"]["paused"] is True
        workers = {w["name"]: w for w in (await api.get("/workers")).json()["workers"]}
        assert workers["sync-orders"]["sharedLimits"][0]["paused"] is True
        assert (await api.post("/limits/shopify/resume")).json()["limits"]["paused"] is False
        resumed = await api.post("/limits/shopify/resume", json={"key": "gone.myshopify.com"})
        assert resumed.json()["pausedKeys"] == []
        bad = await api.post("/limits/shopify/pause", json={"key": ""})
        assert bad.status_code == 422 and bad.json()["field"] == "key"


def test_a_receipt_may_report_what_the_downstream_said():
    from redisq.api.receipts import parse_receipt
    from redisq.errors import ValidationError

    receipt = parse_receipt({"status": "success", "cost": 37.5, "available": 8, "bucketSize": 40}, "w:j", 1)
    assert (receipt.actual_cost, receipt.available, receipt.bucket_size) == (37.5, 8.0, 40.0)
    assert parse_receipt({"status": "failure"}, "w:j", 1).actual_cost is None
    with pytest.raises(ValidationError, match="cost: must be a number >= 0"):
        parse_receipt({"status": "success", "cost": -1}, "w:j", 1)
