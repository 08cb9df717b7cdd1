"""Throttling in the engine: per-key buckets, fairness between keys, cost, back-pressure,
and the live limits in Redis, through the ``Engine`` API on a real Redis and on the
embedded store (``engine_redis`` runs every test on both)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from redisq.api.workers import worker_json
from redisq.config import Backoff
from redisq.engine import Engine
from redisq.errors import ValidationError

from test_store import failure, make_store, request, server_ms, success, worker

W = "send-email"


async def enqueue(store: Engine, key: str | None, n: int, **body: Any) -> list[str]:
    bodies = [{"worker": body.pop("worker", W), **({"throttleKey": key} if key else {}), **body} for _ in range(n)]
    results, _ = await store.enqueue_many([request(store, **b) for b in bodies])
    return [job.id for job, _ in results]


async def test_each_throttle_key_has_its_own_bucket(engine_redis):
    w = worker(rate=1.0, burst=3)
    store = make_store(engine_redis, w)
    a = await enqueue(store, "shop-a", 5)
    b = await enqueue(store, "shop-b", 5)
    claim = await store.claim(w, 100)
    # Each key's bucket gives its burst of 3; the jobs of a key leave in enqueue order.
    assert sorted(j.id for j in claim.jobs) == sorted(a[:3] + b[:3])
    assert [j.id for j in claim.jobs if j.id in a] == a[:3]
    assert [j.id for j in claim.jobs if j.id in b] == b[:3]
    assert 900 <= claim.wait_ms <= 1000  # the next token of either key
    assert (await store.claim(w, 100)).jobs == []


async def test_jobs_without_a_key_share_the_worker_bucket_as_before(engine_redis):
    w = worker(rate=1.0, burst=2)
    store = make_store(engine_redis, w)
    await enqueue(store, None, 4)
    assert len((await store.claim(w, 100)).jobs) == 2


async def test_a_key_with_ten_thousand_waiting_does_not_delay_another_keys_job(engine_redis):
    w = worker()  # no rate: only fairness orders the keys
    store = make_store(engine_redis, w)
    for _ in range(10):
        await enqueue(store, "busy", 1000)
    first = await store.claim(w, 50)
    assert len(first.jobs) == 50 and first.wait_ms == 0
    (lone,) = await enqueue(store, "quiet", 1)
    # The very next claim serves the waiting key, though "busy" has older jobs.
    claim = await store.claim(w, 10)
    assert lone in [j.id for j in claim.jobs]


async def test_a_throttled_key_costs_nothing_and_its_neighbour_is_served(engine_redis):
    w = worker(rate=2.0, burst=40)
    store = make_store(engine_redis, w)
    await enqueue(store, "busy", 2000)
    assert len((await store.claim(w, 100)).jobs) == 40
    (lone,) = await enqueue(store, "quiet", 1)
    claim = await store.claim(w, 100)
    assert [j.id for j in claim.jobs] == [lone]
    assert 0 < claim.wait_ms <= 500


async def test_cost_takes_that_many_tokens(engine_redis):
    w = worker(rate=50.0, burst=100)
    store = make_store(engine_redis, w)
    heavy = await enqueue(store, "shop", 3, cost=40)
    light = await enqueue(store, "shop", 1)
    claim = await store.claim(w, 10)
    assert [j.id for j in claim.jobs] == heavy[:2]  # 80 of 100; the third needs 40, 20 are left
    assert 350 <= claim.wait_ms <= 400  # 20 more tokens at 50/s
    assert (await store.get(heavy[0])).cost == 40
    # Order within a key holds: the light job does not overtake the heavy one.
    assert light[0] not in [j.id for j in (await store.claim(w, 10)).jobs]


async def test_a_cost_above_the_burst_is_refused_and_nothing_is_created(engine_redis):
    w = worker(rate=50.0, burst=100, total_rate=10.0, total_burst=60)
    store = make_store(engine_redis, w)
    with pytest.raises(ValidationError, match="cost: is 101, above the burst of 100"):
        await enqueue(store, "shop", 1, cost=101, id="too-big")
    with pytest.raises(ValidationError, match="above the total_burst of 60"):
        await store.enqueue_many([request(store, id="fine", cost=1), request(store, id="big", cost=61)])
    assert await engine_redis.exists(store.keys(W).job("fine"), store.keys(W).job("too-big")) == 0


async def test_a_burst_lowered_below_a_waiting_jobs_cost_does_not_strand_it(engine_redis):
    w = worker(rate=1000.0, burst=100)
    store = make_store(engine_redis, w)
    (job,) = await enqueue(store, None, 1, cost=80)
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), burst=10.0))
    assert [j.id for j in (await store.claim(w, 10)).jobs] == [job]  # it takes the whole bucket


async def test_total_rate_caps_the_worker_over_all_its_keys(engine_redis):
    w = worker(rate=100.0, burst=100, total_rate=1.0, total_burst=5)
    store = make_store(engine_redis, w)
    for key in ("a", "b", "c"):
        await enqueue(store, key, 4)
    claim = await store.claim(w, 100)
    assert len(claim.jobs) == 5
    assert 900 <= claim.wait_ms <= 1000


async def test_back_pressure_on_a_key_pauses_that_key_only(engine_redis):
    w = worker(backoff=Backoff(initial_s=0.0, jitter=False))
    store = make_store(engine_redis, w)
    await enqueue(store, "shop-a", 3)
    await enqueue(store, "shop-b", 3)
    claim = await store.claim(w, 2)
    assert len(claim.jobs) == 2
    hit = claim.jobs[0]
    hit_key = (await store.get(hit.id)).throttle_key
    before = await server_ms(engine_redis)
    assert await store.settle(w, [failure(hit, "HTTP 429", retry_after_ms=2000)]) == ["retrying"]
    rest = (await store.claim(w, 100)).jobs
    keys = {(await store.get(j.id)).throttle_key for j in rest}
    assert keys == {"shop-a", "shop-b"} - {hit_key}  # the other key runs on
    assert len(rest) == 2  # its jobs that had not been claimed yet
    job = await store.get(hit.id)
    assert job.state.value == "retrying" and job.last_error == "HTTP 429"
    assert before + 2000 <= job.run_at_ms
    assert (await store.claim(w, 100)).jobs == []


async def test_live_limits_apply_on_the_next_claim(engine_redis):
    w = worker(rate=1.0, burst=1)
    store = make_store(engine_redis, w)
    await enqueue(store, None, 10)
    assert len((await store.claim(w, 100)).jobs) == 1
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), rate=1000.0, burst=3.0))
    await asyncio.sleep(0.01)
    assert len((await store.claim(w, 100)).jobs) == 3

    paused = await store.worker(W).set_limits(replace(await store.worker(W).limits(), paused=True))
    assert paused.paused
    claim = await store.claim(w, 100)
    assert (claim.jobs, claim.wait_ms) == ([], -3)
    await store.worker(W).set_limits(replace(paused, paused=False, rate=None, burst=None))
    assert len((await store.claim(w, 100)).jobs) == 6


async def test_the_config_seeds_the_limits_and_a_live_change_wins_until_the_file_changes(engine_redis):
    w = worker(rate=2.0, burst=40, concurrency=5, timeout_s=10.0)
    store = make_store(engine_redis, w)
    seeded = await store.seed_limits(w)
    assert (seeded.rate, seeded.bucket_size, seeded.concurrency, seeded.timeout_s) == (2.0, 40.0, 5, 10.0)
    await store.worker(W).set_limits(replace(seeded, rate=5.0))
    # A restart with the same file keeps the live change...
    restarted = make_store(engine_redis, w)
    assert (await restarted.seed_limits(w)).rate == 5.0
    # ...and a file whose rate changed wins; fields it did not change keep their live values.
    await restarted.worker(W).set_limits(replace(await restarted.worker(W).limits(), concurrency=9))
    edited = make_store(engine_redis, replace(w, rate=3.0))
    limits = await edited.seed_limits(replace(w, rate=3.0))
    assert (limits.rate, limits.concurrency) == (3.0, 9)


async def test_the_live_timeout_applies_to_jobs_that_did_not_set_their_own(engine_redis):
    w = worker(timeout_s=30.0)
    store = make_store(engine_redis, w)
    await enqueue(store, None, 1, id="own", timeout=5)
    await enqueue(store, None, 1, id="default")
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), timeout_s=2.0))
    claim = await store.claim(w, 10)
    assert {j.suffix: j.timeout_ms for j in claim.jobs} == {"own": 5000, "default": 2000}


async def test_worker_state_counts_every_state(engine_redis):
    w = worker(rate=1.0, burst=10, max_attempts=1, backoff=Backoff(initial_s=60.0, jitter=False))
    w2 = replace(w, name="other", max_attempts=3)
    store = make_store(engine_redis, w, w2)
    await enqueue(store, None, 6)
    await enqueue(store, "shop", 3)
    claim = await store.claim(w, 5)  # 3 of the key "" (served first: it waited longest), 2 of "shop"
    ok, bad, *running = claim.jobs
    assert await store.settle(w, [success(ok), failure(bad)]) == ["succeeded", "dead"]
    waiting = [j for j in await enqueue(store, None, 1)]
    await store.cancel(waiting[0])
    await enqueue(store, None, 1, worker="other")
    (retry,) = (await store.claim(w2, 1)).jobs
    assert await store.settle(w2, [failure(retry)]) == ["retrying"]

    state = await store.worker(W).state()
    assert (state.scheduled, state.retrying, state.running, state.succeeded, state.dead, state.cancelled) == \
        (4, 0, 3, 1, 1, 1)
    assert state.throttle_keys == 2  # "" and "shop" have jobs waiting
    assert state.dispatched_last_minute == 5
    assert state.tokens is not None and 7 <= state.tokens <= 7.5  # 10 less the 3 of the key "", refilling at 1/s
    other = await store.worker("other").state()
    assert (other.scheduled, other.retrying, other.running) == (0, 1, 0)
    body = worker_json(state)
    assert body["jobs"]["running"] == 3 and body["limits"]["rate"] == 1.0 and body["dispatchRate"] == round(5 / 60, 3)


async def test_a_drained_key_leaves_no_keys_behind(engine_redis):
    w = worker(rate=1000.0, burst=10)
    store = make_store(engine_redis, w)
    await enqueue(store, "shop-a", 3)
    jobs = (await store.claim(w, 10)).jobs
    assert len(jobs) == 3 and (await store.claim(w, 10)).wait_ms == -1
    keys = store.keys(W)
    assert await engine_redis.exists(keys.queue("shop-a"), keys.throttle_keys) == 0
    # The key's bucket is full again within 3 ms (3 tokens at 1000/s); purge then deletes it.
    assert await engine_redis.exists(keys.key_bucket("shop-a")) == 1
    await asyncio.sleep(0.01)
    await store.purge(w)
    assert await engine_redis.exists(keys.key_bucket("shop-a"), keys.buckets) == 0


async def test_a_paused_keys_bucket_outlives_its_pause(engine_redis):
    w = worker(rate=1000.0, burst=10, backoff=Backoff(initial_s=0.0, jitter=False))
    store = make_store(engine_redis, w)
    await enqueue(store, "shop-a", 2)
    first, _ = (await store.claim(w, 1)).jobs + [None]
    assert await store.settle(w, [failure(first, "HTTP 429", retry_after_ms=500)]) == ["retrying"]
    await asyncio.sleep(0.05)
    await store.purge(w)  # full again at 1000/s, but paused: kept, or the pause would be forgotten
    assert await engine_redis.exists(store.keys(W).key_bucket("shop-a")) == 1
    assert (await store.claim(w, 10)).jobs == []


async def test_a_key_that_used_its_last_token_waits_for_the_next_one_not_for_the_next_claim(engine_redis):
    w = worker(rate=0.001, burst=1)  # one token per key, the next in 1,000 s
    store = make_store(engine_redis, w)
    for n in range(10):
        await enqueue(store, f"busy-{n}", 2)
    assert len((await store.claim(w, 10)).jobs) == 10
    now = await server_ms(engine_redis)
    scores = [s for _, s in await engine_redis.zrange(store.keys(W).throttle_keys, 0, -1, withscores=True)]
    assert len(scores) == 10 and min(scores) >= now + 999_000
    # So a claim of one job goes straight to a key that can run, past the ten waiting ones.
    (fresh,) = await enqueue(store, "fresh", 1)
    assert [j.id for j in (await store.claim(w, 1)).jobs] == [fresh]


async def test_lowering_the_rate_live_never_lets_more_out_than_the_new_rate(engine_redis):
    w = worker(rate=100.0, burst=10)
    store = make_store(engine_redis, w)
    await enqueue(store, "shop", 30)
    assert len((await store.claim(w, 100)).jobs) == 10
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), rate=0.1))
    # The bucket was written to expire once full at 100/s (0.1 s, plus a second); at 0.1/s
    # it holds a tenth of a token per second, and an expired bucket must not read as full.
    await asyncio.sleep(1.3)
    assert (await store.claim(w, 100)).jobs == []
    # Purge, which deletes buckets once full, sees that this one is not full at 0.1/s.
    await store.purge(w)
    assert await engine_redis.exists(store.keys(W).key_bucket("shop")) == 1
    assert (await store.claim(w, 100)).jobs == []
    (fresh,) = await enqueue(store, "new-shop", 1)
    assert [j.id for j in (await store.claim(w, 100)).jobs] == [fresh]  # a new key's bucket is full


async def test_patch_writes_only_what_it_changes(engine_redis):
    w = worker(rate=2.0, burst=40)
    store = make_store(engine_redis, w)
    from redisq.limits import parse_limits_patch, patched_fields

    seen = await store.worker(W).limits()  # one coordinator reads, to change the rate...
    await store.worker(W).set_limits(replace(seen, paused=True), fields={"paused"})  # ...another pauses meanwhile
    await store.worker(W).set_limits(parse_limits_patch({"rate": 5}, seen), fields=patched_fields({"rate": 5}))
    after = await store.worker(W).limits()
    assert (after.rate, after.bucket_size, after.paused) == (5.0, 40.0, True)
    # A PATCH back to a value it read as current is still written (another changed it since).
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), rate=7.0), fields={"rate"})
    await store.worker(W).set_limits(parse_limits_patch({"rate": 5}, after), fields=patched_fields({"rate": 5}))
    assert (await store.worker(W).limits()).rate == 5.0


async def test_a_batch_across_workers_with_a_cost_above_a_burst_writes_nothing(engine_redis):
    alpha, beta = worker("alpha"), worker("beta", rate=1.0, burst=2)
    store = make_store(engine_redis, alpha, beta)
    with pytest.raises(ValidationError, match=r"jobs\[1\].cost: is 5, above the burst of 2 tokens"):
        await store.enqueue_many([request(store, worker="alpha", id="a"),
                                  request(store, worker="beta", id="b", cost=5)])
    assert await engine_redis.exists(store.keys("alpha").job("a"), store.keys("beta").job("b")) == 0


async def test_a_cost_refusal_reads_the_same_from_the_script_and_from_the_check_before_a_batch(engine_redis):
    w, other = worker(rate=1.0, burst=2.3), worker("other")
    store = make_store(engine_redis, w, other)
    words = "cost: is 2.35, above the burst of 2.3 tokens of worker 'send-email', so it could never run"
    with pytest.raises(ValidationError) as by_the_script:  # one worker: the enqueue script refuses it
        await store.enqueue(request(store, cost=2.35))
    with pytest.raises(ValidationError) as before_the_batch:  # two workers: refused before any script writes
        await store.enqueue_many([request(store, worker="other"), request(store, cost=2.35)])
    assert str(by_the_script.value) == words and str(before_the_batch.value) == f"jobs[1].{words}"


async def test_an_existing_id_is_answered_with_its_job_even_after_its_burst_was_lowered(engine_redis):
    w = worker(rate=1.0, burst=20)
    store = make_store(engine_redis, w)
    job, created = await store.enqueue(request(store, id="costly", cost=15))
    await store.worker(W).set_limits(replace(await store.worker(W).limits(), burst=10.0))
    again, created_again = await store.enqueue(request(store, id="costly", cost=15))
    assert created and not created_again and again.id == job.id


async def test_removing_the_rate_removes_its_burst(engine_redis):
    from redisq.limits import parse_limits_patch, patched_fields

    w = worker(rate=2.0, burst=40)
    store = make_store(engine_redis, w)
    current = await store.worker(W).limits()
    unlimited = parse_limits_patch({"rate": None}, current)
    assert (unlimited.rate, unlimited.burst) == (None, None)
    await store.worker(W).set_limits(unlimited, fields=patched_fields({"rate": None}))
    assert parse_limits_patch({"concurrency": 3}, await store.worker(W).limits()).concurrency == 3
    with pytest.raises(ValidationError, match="burst: needs a rate"):
        parse_limits_patch({"rate": None, "burst": 5}, current)


async def test_a_claim_of_thousands_of_jobs_at_once_moves_them_all(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    for _ in range(6):
        await enqueue(store, None, 1000)
    claim = await store.claim(w, 5000)  # more values than one Lua unpack takes
    assert len(claim.jobs) == 5000
    assert await engine_redis.zcard(store.keys(W).running) == 5000
    state = await store.worker(W).state()
    assert (state.scheduled, state.running) == (1000, 5000)


async def test_a_bucket_with_a_ttl_from_an_earlier_release_is_kept(engine_redis):
    w = worker(rate=1.0, burst=5)
    store = make_store(engine_redis, w)
    bucket = store.keys(W).key_bucket("shop")
    await engine_redis.hset(bucket, mapping={"tokens": "5", "updated_ms": str(await server_ms(engine_redis))})
    await engine_redis.pexpire(bucket, 1000)  # what the release before purge-deleted buckets did
    await enqueue(store, "shop", 10)
    assert len((await store.claim(w, 10)).jobs) == 5
    assert await engine_redis.pttl(bucket) == -1
