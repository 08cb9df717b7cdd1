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

from test_api import iso_ms, server_ms, stop_within
from test_store import failure


@contextlib.asynccontextmanager
async def shopify_api(redis: Any, **shopify: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with shopify_coordinator(redis, **shopify) as (client, _):
        yield client


@contextlib.asynccontextmanager
async def shopify_coordinator(redis: Any, **shopify: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Coordinator]]:
    """The API of a coordinator that dispatches nothing (a test claims and settles itself):
    sync-orders and sync-products share [limits.shopify]; send-email names no limit."""
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
            yield client, coordinator
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


async def keys_of(api: httpx.AsyncClient, worker: str) -> dict[str, dict[str, Any]]:
    resp = await api.get(f"/workers/{worker}/keys")
    assert resp.status_code == 200, resp.text
    return {k["key"]: k for k in resp.json()["keys"]}


async def test_a_workers_keys_show_each_shared_limits_bucket_another_worker_drew(engine_redis):
    """sync-orders takes 5 of shop-a's 39 shared tokens: sync-products, with no rate of its
    own, sees shop-a's shared bucket lowered (and its costly job wait for the tokens), then
    the back-pressure sync-orders met and a key an operator paused in the limit."""
    async with shopify_coordinator(engine_redis, rate=0.1, burst=39) as (api, coordinator):  # refills 1 per 10 s
        async def enqueue(worker: str, key: str, **body: Any) -> None:
            resp = await api.post("/job", json={"worker": worker, "throttleKey": key, **body})
            assert resp.status_code == 201, resp.text

        for _ in range(5):
            await enqueue("sync-orders", "shop-a")
        orders = coordinator.engine.worker("sync-orders")
        claimed = (await orders.claim(10)).jobs
        assert len(claimed) == 5
        await enqueue("sync-products", "shop-a", cost=38)  # 34 tokens left: it waits for 4 more (40 s)
        await enqueue("sync-products", "shop-b")
        before_ms = await server_ms(engine_redis)
        keys = await keys_of(api, "sync-products")
        shop_a, shop_b = keys["shop-a"], keys["shop-b"]
        assert shop_a["tokens"] is None  # no rate of its own: its limit's bucket says how it is throttled
        assert shop_a["limits"].keys() == {"shopify"}
        assert 34 <= shop_a["limits"]["shopify"]["tokens"] < 35
        assert shop_a["limits"]["shopify"]["paused"] is False and shop_a["limits"]["shopify"]["pausedFor"] == 0
        assert iso_ms(shop_a["readyAt"]) - before_ms >= 30_000  # when the shared bucket has its 38
        assert shop_b["limits"] == {"shopify": {"tokens": 39.0, "paused": False, "pausedFor": 0}}
        assert iso_ms(shop_b["readyAt"]) - before_ms < 5_000
        assert (await keys_of(api, "sync-orders")) == {}  # its jobs all left
        await enqueue("send-email", "shop-a")
        assert (await keys_of(api, "send-email"))["shop-a"]["limits"] == {}  # it names no limit

        assert await orders.settle([failure(claimed[0], "HTTP 429", retry_after_ms=60_000)]) == ["retrying"]
        shop_a = (await keys_of(api, "sync-products"))["shop-a"]
        assert 50 < shop_a["limits"]["shopify"]["pausedFor"] <= 60  # the back-pressure sync-orders met
        assert shop_a["pausedFor"] == 0  # its own bucket is not paused
        assert iso_ms(shop_a["readyAt"]) - before_ms >= 50_000

        assert (await api.post("/limits/shopify/pause", json={"key": "shop-b"})).status_code == 200
        resp = await api.get("/workers/sync-products/keys")
        listed = resp.json()["keys"]
        assert [k["key"] for k in listed] == ["shop-b", "shop-a"]  # paused in a limit comes first
        assert listed[0]["limits"]["shopify"]["paused"] is True and listed[0]["readyAt"] is None
        assert listed[1]["limits"]["shopify"]["paused"] is False
        await api.post("/limits/shopify/resume", json={"key": "shop-b"})
        shop_b = (await keys_of(api, "sync-products"))["shop-b"]
        assert shop_b["limits"]["shopify"]["paused"] is False and shop_b["readyAt"] is not None


def test_a_receipt_may_report_what_the_downstream_said():
    from redisq.api.receipts import parse_receipt
    from redisq.errors import ValidationError

    receipt = parse_receipt({"status": "success", "cost": 37.5, "available": 8, "bucketSize": 40}, "w:j", 1)
    assert (receipt.actual_cost, receipt.available, receipt.bucket_size) == (37.5, 8.0, 40.0)
    assert parse_receipt({"status": "failure"}, "w:j", 1).actual_cost is None
    with pytest.raises(ValidationError, match="cost: must be a number >= 0"):
        parse_receipt({"status": "success", "cost": -1}, "w:j", 1)
