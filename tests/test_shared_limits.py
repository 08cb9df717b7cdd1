"""Limits shared by several workers (``[limits.NAME]``): the claim takes every limit's
tokens and concurrency at once, per throttle key, fairly between the workers that wait for
a key; pauses of a limit or one key; the config that places workers in their limits' slot
and refuses what cannot be atomic. On a real Redis and on the embedded store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from redisq.config import ConfigError, parse_config
from redisq.engine import Engine
from redisq.errors import ValidationError
from redisq.keys import LimitKeys, WorkerKeys

from test_store import request, success

URL = "http://127.0.0.1:9/x"


def config(limits: dict[str, Any], workers: dict[str, Any]) -> Any:
    return parse_config({"limits": limits,
                         "workers": {name: {"url": URL, **settings} for name, settings in workers.items()}})


def shopify_store(client: Any, *, workers: int = 3, **shopify: Any) -> Engine:
    return Engine(client, config({"shopify": shopify or {"rate": 1, "burst": 3}},
                                 {f"job-{n}": {"limits": ["shopify"]} for n in range(workers)}))


async def enqueue(store: Engine, worker: str, key: str, n: int, **body: Any) -> list[str]:
    keyed = {"throttleKey": key} if key else {}
    results, _ = await store.enqueue_many([request(store, worker=worker, args={"n": i}, **keyed, **body)
                                           for i in range(n)])
    return [job.id for job, _ in results]


async def claim(store: Engine, worker: str, most: int = 100) -> list[str]:
    return [job.id for job in (await store.worker(worker).claim(most)).jobs]


async def test_workers_naming_a_limit_draw_on_one_bucket_per_key(engine_redis):
    store = shopify_store(engine_redis)
    for name in ("job-0", "job-1", "job-2"):
        await enqueue(store, name, "shop-a", 5)
        await enqueue(store, name, "shop-b", 5)
    claimed = [job for name in ("job-0", "job-1", "job-2") for job in await claim(store, name)]
    # shop-a's bucket of 3 and shop-b's of 3, whichever worker's jobs they are.
    assert len(claimed) == 6
    jobs = [await store.get(job_id) for job_id in claimed]
    assert sorted(job.throttle_key or "" for job in jobs) == ["shop-a"] * 3 + ["shop-b"] * 3
    for name in ("job-0", "job-1", "job-2"):
        assert await claim(store, name) == []


async def test_a_worker_keeps_its_own_limits_on_top(engine_redis):
    store = Engine(engine_redis, config({"shopify": {"rate": 1, "burst": 10}},
                                        {"orders": {"limits": ["shopify"], "rate": 1, "burst": 2},
                                         "products": {"limits": ["shopify"]}}))
    await enqueue(store, "orders", "shop-a", 5)
    await enqueue(store, "products", "shop-a", 20)
    assert len(await claim(store, "orders")) == 2  # its own burst
    assert len(await claim(store, "products")) == 8  # what is left of the shared 10


async def test_the_claim_takes_all_or_nothing_of_a_costly_job(engine_redis):
    store = shopify_store(engine_redis, rate=50, burst=100)
    await enqueue(store, "job-0", "shop", 2, cost=40)
    await enqueue(store, "job-1", "shop", 1, cost=30)
    assert len(await claim(store, "job-0")) == 2
    assert await claim(store, "job-1") == []  # 20 tokens left of the shop's 100, it needs 30
    state = await store.limit("shopify").state("shop")
    assert state.key_tokens is not None and 20 <= state.key_tokens < 25


async def test_a_shared_concurrency_cap_counts_every_workers_attempts(engine_redis):
    store = shopify_store(engine_redis, workers=2, concurrency=2)
    await enqueue(store, "job-0", "", 3)
    await enqueue(store, "job-1", "", 3)
    first = (await store.worker("job-0").claim(10)).jobs
    assert len(first) == 2
    other = await store.worker("job-1").claim(10)
    assert other.jobs == [] and other.wait_ms == -2 and other.capped
    assert (await store.limit("shopify").state()).in_flight == 2
    await store.worker("job-0").settle([success(first[0])])
    assert len(await claim(store, "job-1")) == 1  # the slot the settle freed


async def test_workers_waiting_for_one_key_take_its_tokens_in_turn(engine_redis):
    """Whichever worker's claim comes first, a worker that took the key's last token waits
    until the others had theirs: a backlog of one cannot starve the other's jobs."""
    store = shopify_store(engine_redis, workers=2, rate=50, burst=1)
    await enqueue(store, "job-0", "shop", 20)
    await enqueue(store, "job-1", "shop", 20)
    took = []
    for _ in range(40):
        for name in ("job-0", "job-1"):  # job-0 always asks first
            took += [name] * len(await claim(store, name))
        if len(took) >= 12:
            break
        await asyncio.sleep(0.025)  # more than a token's 20 ms
    assert len(took) >= 12
    assert took.count("job-1") >= len(took) // 2 - 1, took


async def test_the_turn_passes_on_from_a_worker_that_does_not_claim(engine_redis):
    store = shopify_store(engine_redis, workers=2, rate=100, burst=1)
    await enqueue(store, "job-0", "shop", 5)
    await enqueue(store, "job-1", "shop", 5)
    assert len(await claim(store, "job-1")) == 1
    assert await claim(store, "job-0") == []  # the bucket is empty: job-0 waits in line
    await asyncio.sleep(0.02)
    # job-0's turn now; it never claims again (its coordinators are gone): job-1 is held
    # back for the turn's grace only, then takes every token.
    assert await claim(store, "job-1") == []
    await asyncio.sleep(0.3)
    assert len(await claim(store, "job-1")) == 1


async def test_a_busy_key_does_not_hold_back_another(engine_redis):
    store = shopify_store(engine_redis, rate=2, burst=40)
    await enqueue(store, "job-0", "busy", 500)
    assert len(await claim(store, "job-0", 200)) == 40
    (quiet,) = await enqueue(store, "job-1", "quiet", 1)
    assert await claim(store, "job-1") == [quiet]


async def test_a_paused_limit_or_key_lets_none_of_its_jobs_go(engine_redis):
    store = shopify_store(engine_redis, workers=2, rate=10, burst=10)
    limit = store.limit("shopify")
    await enqueue(store, "job-0", "gone", 2)
    await enqueue(store, "job-1", "gone", 2)
    (kept,) = await enqueue(store, "job-1", "kept", 1)
    assert await limit.pause_key("gone", True)
    assert await claim(store, "job-0") == []
    assert await claim(store, "job-1") == [kept]
    assert (await limit.state()).paused_keys == ("gone",)
    assert await limit.pause_key("gone", False)
    assert len(await claim(store, "job-0")) == 2  # looked at again at once

    state = await limit.state()
    await limit.set_limits(state.limits.__class__(**{**state.limits.__dict__, "paused": True}), {"paused"})
    assert (await store.worker("job-1").claim(10)).wait_ms == -3
    await limit.set_limits(state.limits, {"paused"})
    assert len(await claim(store, "job-1")) == 2


async def test_a_live_rate_change_holds_for_every_worker_at_once(engine_redis):
    store = shopify_store(engine_redis, workers=2, rate=0.1, burst=1)
    await enqueue(store, "job-0", "shop", 3)
    await enqueue(store, "job-1", "shop", 3)
    assert len(await claim(store, "job-0")) == 1
    limit = store.limit("shopify")
    limits = (await limit.state()).limits
    await limit.set_limits(limits.__class__(**{**limits.__dict__, "rate": 1000.0, "burst": 10.0}), {"rate", "burst"})
    assert (await limit.state()).limits.rate == 1000.0
    await asyncio.sleep(0.01)
    assert len(await claim(store, "job-1")) + len(await claim(store, "job-0")) == 5


def test_workers_live_in_their_limits_slot():
    cfg = config({"shopify": {"rate": 2}, "mail": {"rate": 5, "slot": "shopify"}},
                 {"orders": {"limits": ["shopify", "mail"]}, "alone": {}})
    orders, alone = cfg.workers["orders"], cfg.workers["alone"]
    assert orders.slot == "shopify" and alone.slot is None
    assert WorkerKeys("orders", orders.slot).tag == "redisq:{shopify}/worker/orders"
    assert LimitKeys("mail", "shopify").limits == "redisq:{shopify}/limit/mail:limits"
    assert WorkerKeys("alone").tag == "redisq:{alone}"


@pytest.mark.parametrize(("limits", "workers", "message"), [
    ({}, {"w": {"limits": ["shopify"]}}, "workers.w.limits: unknown limit 'shopify'"),
    ({"shopify": {"burst": 3}}, {}, "limits.shopify.burst: needs a rate"),
    ({"shopify": {}}, {}, "limits.shopify: limits nothing: give it a rate, a total_rate or a concurrency"),
    ({"shopify": {"rate": 2, "timeout": 3}}, {}, "limits.shopify.timeout: unknown setting"),
    ({"a": {"rate": 1}, "b": {"rate": 1}}, {"w": {"limits": ["a", "b"]}},
     "workers.w.limits: 'a' and 'b' live in different hash slots ({a} and {b}), so no one script can take both "
     'atomically; put them in one (slot = "a" under [limits.b])'),
    ({"a": {"rate": 1}}, {"w": {"limits": "a"}}, "workers.w.limits: must be a list of limit names"),
])
def test_a_layout_that_cannot_be_atomic_or_a_limit_of_nothing_is_refused(limits, workers, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}").replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config(limits, workers)


# -- buckets that follow the downstream (lua/report_cost.lua) ---------------------------------

async def claimed_one(store: Engine, worker: str, key: str, **body: Any) -> Any:
    await enqueue(store, worker, key, 1, **body)
    (job,) = (await store.worker(worker).claim(10)).jobs
    return job


async def key_tokens(store: Engine, key: str) -> float:
    tokens = (await store.limit("shopify").state(key)).key_tokens
    assert tokens is not None
    return tokens


async def test_a_reported_actual_cost_gives_back_or_takes_the_difference(engine_redis):
    store = shopify_store(engine_redis, workers=1, rate=0.001, burst=1000)  # refills too slowly to matter
    job = await claimed_one(store, "job-0", "shop", cost=100)
    assert 899 < await key_tokens(store, "shop") < 901
    assert await store.worker("job-0").settle([replace(success(job), actual_cost=30)]) == ["succeeded"]
    assert 969 < await key_tokens(store, "shop") < 971  # 70 given back
    job = await claimed_one(store, "job-0", "shop", cost=100)
    await store.worker("job-0").settle([replace(success(job), actual_cost=250)])
    assert 719 < await key_tokens(store, "shop") < 721  # 150 more taken


async def test_the_downstreams_level_is_taken_when_lower_less_what_was_sent_since(engine_redis):
    store = shopify_store(engine_redis, workers=2, rate=0.001, burst=40)
    first = await claimed_one(store, "job-0", "shop")
    await claimed_one(store, "job-1", "shop")  # sent after the first: the downstream had not counted it
    assert 37.9 < await key_tokens(store, "shop") < 38.1
    await store.worker("job-0").settle([replace(success(first), available=20)])
    assert 18.9 < await key_tokens(store, "shop") < 19.1
    second = await claimed_one(store, "job-0", "shop")
    await store.worker("job-0").settle([replace(success(second), available=35)])  # higher: redisq's own stays
    assert 17.9 < await key_tokens(store, "shop") < 18.1
    third = await claimed_one(store, "job-0", "shop")
    await store.worker("job-0").settle([replace(success(third), available=10, bucket_size=42)])  # 2 below 42 kept
    assert 7.9 < await key_tokens(store, "shop") < 8.1


async def test_a_report_counts_once_per_attempt(engine_redis):
    store = shopify_store(engine_redis, workers=1, rate=0.001, burst=1000)
    job = await claimed_one(store, "job-0", "shop", cost=100)
    engine = store.worker("job-0")
    assert await engine.report_cost(replace(success(job), actual_cost=0)) == "applied"
    assert await engine.report_cost(replace(success(job), actual_cost=0)) == "duplicate"
    assert await engine.report_cost(replace(success(job), attempt=2, actual_cost=0)) == "stale"
    await engine.settle([replace(success(job), actual_cost=0)])
    assert 999 < await key_tokens(store, "shop") <= 1000


async def test_a_cost_above_a_shared_limits_burst_is_refused_and_nothing_is_written(engine_redis):
    store = shopify_store(engine_redis, workers=1, rate=50, burst=100)
    await store.worker("job-0").ensure_limits()
    with pytest.raises(ValidationError, match="cost: is 150, above the burst of 100 tokens of limit 'shopify'"):
        await enqueue(store, "job-0", "shop", 1, cost=150)
    with pytest.raises(ValidationError, match=r"jobs\[1\]\.cost: is 101, above the burst"):
        await store.enqueue_many([request(store, worker="job-0", throttleKey="shop"),
                                  request(store, worker="job-0", throttleKey="shop", cost=101)])
    assert (await store.worker("job-0").state()).scheduled == 0
    assert len(await enqueue(store, "job-0", "shop", 1, cost=100)) == 1


async def test_back_pressure_one_worker_met_holds_the_key_for_every_worker_naming_the_limit(engine_redis):
    store = shopify_store(engine_redis, workers=2, rate=100, burst=100)
    job = await claimed_one(store, "job-0", "shop")
    await enqueue(store, "job-1", "shop", 1)
    (other,) = await enqueue(store, "job-1", "other-shop", 1)
    throttled = replace(success(job), outcome="failure", error="HTTP 429", retry_after_ms=300, status=429)
    assert await store.worker("job-0").settle([throttled]) == ["retrying"]
    assert await claim(store, "job-1") == [other]  # the shop waits, whichever worker's; others go on
    await asyncio.sleep(0.35)
    assert len(await claim(store, "job-1")) == 1


async def test_a_job_returned_unsent_gives_the_shared_tokens_back(engine_redis):
    store = shopify_store(engine_redis, workers=1, rate=0.001, burst=10)
    job = await claimed_one(store, "job-0", "shop", cost=4)
    assert 5.9 < await key_tokens(store, "shop") < 6.1
    unsent = replace(success(job), outcome="unsent", error="not sent: its send window passed")
    assert await store.worker("job-0").settle([unsent]) == ["returned"]
    assert 9.9 < await key_tokens(store, "shop") <= 10
