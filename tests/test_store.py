"""The engine's semantics, proven through the ``Engine`` API on a real Redis and on the
embedded store (``engine_redis`` runs every test on both).

Times are checked against the Redis server's clock (``TIME``), the one clock the scripts
use: a value the script computed from "now" must lie between the server's time read just
before the call and just after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from stores import sibling_client

from redisq.config import Backoff, Config, Retention, WorkerConfig
from redisq.engine import Claim, ClaimedJob, Engine, Receipt
from redisq.errors import ConflictError, NotFoundError
from redisq.events import entry_events
from redisq.job_fields import decode_job_hash, stored
from redisq.keys import WorkerKeys
from redisq.keys import job_id as make_job_id  # (job_id names the tests' ids)
from redisq.model import JobState, parse_enqueue

WORKER = "send-email"
NO_JITTER = Backoff(initial_s=5.0, factor=2.0, max_s=3600.0, jitter=False)


def worker(name: str = WORKER, **settings: Any) -> WorkerConfig:
    settings.setdefault("url", f"http://127.0.0.1:9/{name}")
    return WorkerConfig(name=name, **settings)


def make_store(client: Any, *workers: WorkerConfig) -> Engine:
    return Engine(client, Config(workers={w.name: w for w in workers}))


def request(store: Engine, **body: Any):
    body.setdefault("worker", WORKER)
    return parse_enqueue(body, store.config.workers)


async def server_ms(client: Any) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def snapshot(client: Any, keys: WorkerKeys, suffix: str) -> tuple[Any, ...]:
    """Everything a settle could change about one job."""
    return (
        await client.hgetall(keys.job(suffix)),
        await client.zrange(keys.scheduled, 0, -1, withscores=True),
        await client.zrange(keys.running, 0, -1, withscores=True),
        await client.zrange(keys.state_index("succeeded"), 0, -1, withscores=True),
    )


async def claim_when_due(store: Engine, w: WorkerConfig, most: int = 1, within_s: float = 3.0) -> Claim:
    """Claim until something comes out, sleeping as long as claim's wait_ms says."""
    deadline = time.monotonic() + within_s
    while True:
        claim = await store.claim(w, most)
        if claim.jobs:
            return claim
        assert time.monotonic() < deadline, f"nothing became claimable within {within_s} s (wait_ms={claim.wait_ms})"
        await asyncio.sleep(max(claim.wait_ms, 1) / 1000 if claim.wait_ms > 0 else 0.005)


def success(job: ClaimedJob, result: Any = None) -> Receipt:
    return Receipt(job.suffix, job.attempt, "success", result_json="" if result is None else json.dumps(result))


def failure(job: ClaimedJob, error: str = "boom", retry_after_ms: int = -1) -> Receipt:
    return Receipt(job.suffix, job.attempt, "failure", error=error, retry_after_ms=retry_after_ms)


async def start_one(store: Engine, w: WorkerConfig, **body: Any) -> ClaimedJob:
    """Enqueue one job and claim it: its first attempt is running."""
    await store.enqueue(request(store, worker=w.name, **body))
    (job,) = (await store.claim(w, 1)).jobs
    return job


# -- enqueue -----------------------------------------------------------------------------


async def test_immediate_job_is_claimable_at_once(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job, created = await store.enqueue(request(store, id="welcome-1", args={"to": "a@example.com"}))
    assert created and job.id == "send-email:welcome-1" and job.state is JobState.SCHEDULED

    claim = await store.claim(w, 10)
    assert [(j.id, j.attempt, json.loads(j.args_json)) for j in claim.jobs] == [
        ("send-email:welcome-1", 1, {"to": "a@example.com"})
    ]
    assert claim.wait_ms == -1  # nothing else is scheduled
    got = await store.get("send-email:welcome-1")
    assert got.state is JobState.RUNNING and got.attempts == 1
    assert (await store.claim(w, 10)).jobs == []


@pytest.mark.parametrize("how", ["delay", "runAt"])
async def test_delayed_job_is_never_claimed_early_and_is_claimed_once_due(engine_redis, how):
    w = worker()
    store = make_store(engine_redis, w)
    if how == "delay":
        body: dict[str, Any] = {"delay": 0.3}
    else:
        body = {"runAt": (await server_ms(engine_redis) + 300) / 1000}  # unix seconds, ms precision
    job, _ = await store.enqueue(request(store, **body))
    run_at_ms = (await store.get(job.id)).run_at_ms
    assert run_at_ms == job.run_at_ms

    first = await store.claim(w, 10)
    assert first.jobs == [] and 0 < first.wait_ms <= 300

    deadline = time.monotonic() + 3
    while True:
        before = await server_ms(engine_redis)
        claim = await store.claim(w, 10)
        after = await server_ms(engine_redis)
        if claim.jobs:
            break
        assert before < run_at_ms, "a due job was not claimed"
        assert 0 < claim.wait_ms <= run_at_ms - before + 1
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert [j.id for j in claim.jobs] == [job.id]
    assert after >= run_at_ms
    fields = await engine_redis.hgetall(store.keys(WORKER).job(job.id.split(":", 1)[1]))
    claimed_at_ms = int(decode_job_hash(fields)["lease_deadline_ms"]) - claim.jobs[0].timeout_ms
    assert claimed_at_ms >= run_at_ms


async def test_same_id_again_creates_nothing_and_changes_nothing(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    first, created = await store.enqueue(request(store, id="order-7", args={"n": 1}, delay=60))
    assert created
    keys = store.keys(WORKER)
    before = await snapshot(engine_redis, keys, "order-7")

    again, created = await store.enqueue(request(store, id="order-7", args={"n": 2}, maxAttempts=1))
    assert not created
    assert (again.id, again.args_json, again.run_at_ms, again.max_attempts) == (
        first.id, first.args_json, first.run_at_ms, first.max_attempts)
    assert await snapshot(engine_redis, keys, "order-7") == before

    # Also after the job has run and finished: the id stays taken while the job is kept.
    await store.enqueue(request(store, id="order-8"))
    (job,) = (await store.claim(w, 5)).jobs
    assert await store.settle(w, [success(job)]) == ["succeeded"]
    again, created = await store.enqueue(request(store, id="order-8"))
    assert not created and again.state is JobState.SUCCEEDED
    assert (await store.claim(w, 5)).jobs == []


async def test_duplicate_ids_within_one_batch_make_one_job(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    results, _ = await store.enqueue_many([request(store, id="x", args=1), request(store, id="x", args=2)])
    assert [created for _, created in results] == [True, False]
    claim = await store.claim(w, 10)
    assert [(j.suffix, j.args_json) for j in claim.jobs] == [("x", "1")]


async def test_a_batch_of_1000_comes_out_of_claim_in_enqueue_order(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    # Ids that sort the other way round, so that only the enqueue order can explain the result.
    suffixes = [f"job-{999 - i:04d}" for i in range(1000)]
    results, wake = await store.enqueue_many([request(store, id=s, args={"i": i}) for i, s in enumerate(suffixes)])
    assert [job.id for job, _ in results] == [f"send-email:{s}" for s in suffixes]
    assert all(created for _, created in results) and wake == {WORKER}

    claimed: list[str] = []
    for _ in range(10):
        claimed += [j.suffix for j in (await store.claim(w, 100)).jobs]
    assert claimed == suffixes


async def test_enqueue_wakes_dispatchers_only_for_a_new_earliest_job(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    assert (await store.enqueue_many([request(store, delay=60)]))[1] == {WORKER}
    assert (await store.enqueue_many([request(store, delay=120)]))[1] == set()
    assert (await store.enqueue_many([request(store, delay=1)]))[1] == {WORKER}


# -- claim: throttling ---------------------------------------------------------------------


async def test_token_bucket_gives_the_burst_then_the_rate(engine_redis):
    w = worker(rate=2.0, burst=40)
    store = make_store(engine_redis, w)
    await store.enqueue_many([request(store) for _ in range(1000)])

    started = time.monotonic()
    first = await store.claim(w, 1000)
    assert len(first.jobs) == 40
    assert 0 < first.wait_ms <= 500  # an empty bucket refills one token in 1 / rate s

    empty = await store.claim(w, 1000)
    assert empty.jobs == [] and 0 < empty.wait_ms <= 500

    await asyncio.sleep(1.0)
    second = await store.claim(w, 1000)
    elapsed = time.monotonic() - started
    assert 2 <= len(second.jobs) <= 3
    assert len(first.jobs) + len(second.jobs) <= 40 + 2.0 * elapsed
    assert len({j.suffix for j in first.jobs + second.jobs}) == len(first.jobs) + len(second.jobs)

    # wait_ms says when the next token is due: not before, but then.
    wait_ms = second.wait_ms
    assert 0 < wait_ms <= 500
    await asyncio.sleep(max(0, wait_ms - 100) / 1000)
    assert (await store.claim(w, 1000)).jobs == []
    await asyncio.sleep(0.15)
    assert len((await store.claim(w, 1000)).jobs) == 1


async def test_a_full_bucket_reports_when_the_next_job_is_due(engine_redis):
    w = worker(rate=2.0, burst=40)
    store = make_store(engine_redis, w)
    await store.enqueue(request(store, delay=5))
    claim = await store.claim(w, 10)
    assert claim.jobs == [] and 4900 <= claim.wait_ms <= 5000


async def test_concurrency_cap(engine_redis):
    w = worker(concurrency=3)
    store = make_store(engine_redis, w)
    await store.enqueue_many([request(store) for _ in range(10)])

    first = await store.claim(w, 10)
    assert len(first.jobs) == 3 and first.wait_ms == -2
    full = await store.claim(w, 10)
    assert full.jobs == [] and full.wait_ms == -2
    assert await engine_redis.zcard(store.keys(WORKER).running) == 3

    assert await store.settle(w, [success(first.jobs[0])]) == ["succeeded"]
    freed = await store.claim(w, 10)
    assert len(freed.jobs) == 1 and freed.wait_ms == -2
    assert await engine_redis.zcard(store.keys(WORKER).running) == 3


async def test_coordinators_claiming_together_never_exceed_the_burst(engine_redis):
    w = worker(rate=2.0, burst=40)
    clients = [engine_redis] + [sibling_client(engine_redis) for _ in range(4)]
    stores = [make_store(c, w) for c in clients]
    try:
        await stores[0].enqueue_many([request(stores[0]) for _ in range(300)])
        started = time.monotonic()
        first_round = await asyncio.gather(*(s.claim(w, 15) for s in stores))
        assert sum(len(c.jobs) for c in first_round) == 40
        claimed = [j.suffix for c in first_round for j in c.jobs]
        for _ in range(3):
            rounds = await asyncio.gather(*(s.claim(w, 15) for s in stores))
            claimed += [j.suffix for c in rounds for j in c.jobs]
        elapsed = time.monotonic() - started
        assert len(claimed) <= 40 + 2.0 * elapsed
        assert len(set(claimed)) == len(claimed)
    finally:
        for c in clients[1:]:
            await c.aclose()


async def test_coordinators_claiming_together_never_exceed_the_concurrency(engine_redis):
    w = worker(concurrency=3)
    clients = [engine_redis] + [sibling_client(engine_redis) for _ in range(4)]
    stores = [make_store(c, w) for c in clients]
    try:
        await stores[0].enqueue_many([request(stores[0]) for _ in range(50)])
        running: list[ClaimedJob] = []
        for _ in range(3):
            claims = await asyncio.gather(*(s.claim(w, 2) for s in stores))
            running += [j for c in claims for j in c.jobs]
            assert len(running) == 3 == await engine_redis.zcard(stores[0].keys(WORKER).running)
            # One coordinator settles one job; together they may fill exactly that slot again.
            assert await stores[1].settle(w, [success(running.pop())]) == ["succeeded"]
    finally:
        for c in clients[1:]:
            await c.aclose()


# -- settle ----------------------------------------------------------------------------


async def test_success_keeps_the_result(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    before = await server_ms(engine_redis)
    assert await store.settle(w, [success(job, {"sent": True})]) == ["succeeded"]
    after = await server_ms(engine_redis)

    got = await store.get(job.id)
    assert got.state is JobState.SUCCEEDED and got.to_json()["result"] == {"sent": True}
    assert got.finished_ms is not None and before <= got.finished_ms <= after
    assert await engine_redis.zcard(store.keys(WORKER).running) == 0
    assert (await store.claim(w, 5)).jobs == []


async def test_failure_is_retried_after_the_backoff(engine_redis):
    w = worker(backoff=NO_JITTER)
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    before = await server_ms(engine_redis)
    assert await store.settle(w, [failure(job, "smtp 451")]) == ["retrying"]
    after = await server_ms(engine_redis)

    got = await store.get(job.id)
    assert got.state is JobState.RETRYING and got.last_error == "smtp 451" and got.attempts == 1
    assert before + 5000 <= got.run_at_ms <= after + 5000
    claim = await store.claim(w, 5)
    assert claim.jobs == [] and 4900 <= claim.wait_ms <= 5000


async def test_backoff_grows_by_factor_up_to_max_and_the_last_attempt_dies(engine_redis):
    w = worker(max_attempts=5, backoff=Backoff(initial_s=0.01, factor=3.0, max_s=0.2, jitter=False))
    store = make_store(engine_redis, w)
    await store.enqueue(request(store, id="flaky"))
    delays_ms = []
    for attempt in range(1, 6):
        (job,) = (await claim_when_due(store, w)).jobs
        assert job.attempt == attempt
        before = await server_ms(engine_redis)
        word = (await store.settle(w, [failure(job, f"boom {attempt}")]))[0]
        after = await server_ms(engine_redis)
        got = await store.get(job.id)
        if attempt < 5:
            assert word == "retrying" and got.state is JobState.RETRYING
            expected = min(200, 10 * 3 ** (attempt - 1))
            assert before + expected <= got.run_at_ms <= after + expected
            delays_ms.append(expected)
    assert delays_ms == [10, 30, 90, 200]
    assert word == "dead"
    assert got.state is JobState.DEAD and got.last_error == "boom 5" and got.attempts == 5
    assert await engine_redis.zscore(store.keys(WORKER).state_index("dead"), "flaky") is not None
    assert (await store.claim(w, 5)).wait_ms == -1


async def test_jitter_spreads_retries_within_the_backoff(engine_redis):
    w = worker(backoff=Backoff(initial_s=2.0, factor=2.0, max_s=60.0, jitter=True))
    store = make_store(engine_redis, w)
    await store.enqueue_many([request(store) for _ in range(40)])
    jobs = (await store.claim(w, 40)).jobs
    before = await server_ms(engine_redis)
    assert await store.settle(w, [failure(j) for j in jobs]) == ["retrying"] * 40
    after = await server_ms(engine_redis)

    delays = []
    for j in jobs:
        run_at = (await store.get(j.id)).run_at_ms
        assert before <= run_at <= after + 2000
        delays.append(run_at - before)
    assert len(set(delays)) > 1, "jitter on, yet every retry got the same delay"


async def test_max_attempts_and_permanent_failures_die_with_their_error(engine_redis):
    w = worker(max_attempts=5)
    store = make_store(engine_redis, w)
    last = await start_one(store, w, maxAttempts=1)
    permanent = await start_one(store, w)
    receipts = [failure(last, "mailbox full"),
                Receipt(permanent.suffix, permanent.attempt, "permanent", error="no such address")]
    assert await store.settle(w, receipts) == ["dead", "dead"]
    for job, error in ((last, "mailbox full"), (permanent, "no such address")):
        got = await store.get(job.id)
        assert got.state is JobState.DEAD and got.last_error == error and got.attempts == 1
        assert got.finished_ms is not None
    assert (await store.claim(w, 5)).wait_ms == -1


async def test_retry_after_is_back_pressure_it_pauses_the_worker_and_the_attempt_does_not_count(engine_redis):
    w = worker(backoff=NO_JITTER, max_attempts=2)
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    other, _ = await store.enqueue(request(store))
    before = await server_ms(engine_redis)
    assert await store.settle(w, [failure(job, "429", retry_after_ms=1500)]) == ["retrying"]
    after = await server_ms(engine_redis)
    run_at = (await store.get(job.id)).run_at_ms
    assert before + 1500 <= run_at <= after + 1500
    # The worker (its jobs have no throttle key) is paused until then: nothing is claimed.
    claim = await store.claim(w, 5)
    assert claim.jobs == [] and 1400 <= claim.wait_ms <= 1500

    # A Retry-After of 0 retries at once, and however often it comes, maxAttempts (2) is
    # not used up by it: the attempt number still grows, so receipts stay bound to attempts.
    w2 = worker("other", backoff=Backoff(initial_s=0.0, jitter=False), max_attempts=2)
    store = make_store(engine_redis, w, w2)
    third = await start_one(store, w2)
    for attempt in (1, 2, 3):
        assert await store.settle(w2, [failure(third, "503", retry_after_ms=0)]) == ["retrying"]
        (third,) = (await store.claim(w2, 1)).jobs
        assert third.attempt == attempt + 1
    assert await store.settle(w2, [failure(third, "a real failure")]) == ["retrying"]  # failure 1 of 2
    (third,) = (await claim_when_due(store, w2)).jobs
    assert await store.settle(w2, [failure(third, "a real failure")]) == ["dead"]  # failure 2 of 2
    assert (await store.get(third.id)).attempts == 5


async def test_a_receipt_for_an_older_attempt_is_stale_and_changes_nothing(engine_redis):
    w = worker(backoff=Backoff(initial_s=0.0, jitter=False))
    store = make_store(engine_redis, w)
    first = await start_one(store, w)
    accepted = failure(first, "first failure")
    assert await store.settle(w, [accepted]) == ["retrying"]
    (second,) = (await claim_when_due(store, w)).jobs
    assert second.attempt == 2

    keys = store.keys(WORKER)
    before = await snapshot(engine_redis, keys, first.suffix)
    late_success = success(first, {"late": True})
    assert await store.settle(w, [late_success]) == ["stale"]
    assert await store.settle(w, [accepted]) == ["duplicate"]  # the exact repeat is answered as accepted
    assert await snapshot(engine_redis, keys, first.suffix) == before
    got = await store.get(first.id)
    assert got.state is JobState.RUNNING and got.attempts == 2 and got.result_json is None

    with pytest.raises(ConflictError):
        await store.receipt(first.id, late_success)
    assert await store.receipt(first.id, accepted) == "duplicate"
    # The running attempt still finishes normally.
    assert await store.settle(w, [success(second, "ok")]) == ["succeeded"]


async def test_repeat_of_an_accepted_receipt_is_duplicate_a_different_one_stale(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    accepted = success(job, {"id": 1})
    assert await store.settle(w, [accepted]) == ["succeeded"]
    keys = store.keys(WORKER)
    before = await snapshot(engine_redis, keys, job.suffix)

    assert await store.settle(w, [accepted]) == ["duplicate"]
    assert await store.settle(w, [success(job, {"id": 2}), failure(job), accepted]) == ["stale", "stale", "duplicate"]
    assert await snapshot(engine_redis, keys, job.suffix) == before
    assert (await store.get(job.id)).to_json()["result"] == {"id": 1}


async def test_receipts_for_cancelled_and_missing_jobs(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    assert (await store.cancel(job.id)).state is JobState.CANCELLED
    keys = store.keys(WORKER)
    before = await snapshot(engine_redis, keys, job.suffix)
    missing = Receipt("no-such-job", 1, "success")
    assert await store.settle(w, [success(job), failure(job), missing]) == ["cancelled", "cancelled", "missing"]
    assert await snapshot(engine_redis, keys, job.suffix) == before
    assert (await store.get(job.id)).state is JobState.CANCELLED
    with pytest.raises(NotFoundError):
        await store.receipt("send-email:no-such-job", missing)


# -- reap ------------------------------------------------------------------------------


async def test_a_lease_that_ends_without_receipt_is_retried_then_dead(engine_redis):
    w = worker(timeout_s=0.2, max_attempts=2, backoff=Backoff(initial_s=0.0, jitter=False))
    store = make_store(engine_redis, w)
    first = await start_one(store, w)

    reaped, wait_ms, _ = await store.reap(w)
    assert reaped == 0 and 0 < wait_ms <= 200
    assert (await store.get(first.id)).state is JobState.RUNNING
    await asyncio.sleep(wait_ms / 1000 + 0.01)
    assert (await store.reap(w))[:2] == (1, -1)
    got = await store.get(first.id)
    assert got.state is JobState.RETRYING and got.last_error == "timed out" and got.attempts == 1
    assert await store.settle(w, [success(first)]) == ["stale"]  # the receipt that came too late

    (second,) = (await claim_when_due(store, w)).jobs
    assert second.attempt == 2
    await asyncio.sleep(0.21)
    assert (await store.reap(w))[:2] == (1, -1)
    got = await store.get(first.id)
    assert got.state is JobState.DEAD and got.last_error == "timed out" and got.attempts == 2
    assert (await store.claim(w, 5)).wait_ms == -1


async def test_a_success_that_comes_after_the_last_attempt_was_reaped_makes_the_job_succeeded(engine_redis):
    # Redis stalled (or this coordinator did) past the lease while the worker's 200 waited
    # to be settled: the work was done, so the job must not stay dead.
    w = worker(timeout_s=0.1, max_attempts=1)
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    await asyncio.sleep(0.15)
    assert (await store.reap(w))[:2] == (1, -1)
    assert (await store.get(job.id)).state is JobState.DEAD
    assert (await store.worker(WORKER).state()).dead == 1

    assert await store.settle(w, [success(job, {"sent": True})]) == ["succeeded"]
    got = await store.get(job.id)
    assert got.state is JobState.SUCCEEDED and got.attempts == 1 and json.loads(got.result_json) == {"sent": True}
    state = await store.worker(WORKER).state()
    assert (state.dead, state.succeeded) == (0, 1)
    assert await store.settle(w, [success(job, {"sent": True})]) == ["duplicate"]
    # a failure that comes late changes nothing: the job died of its timeout
    other = await start_one(store, w)
    await asyncio.sleep(0.15)
    assert (await store.reap(w))[:2] == (1, -1)
    assert await store.settle(w, [failure(other)]) == ["stale"]
    assert (await store.get(other.id)).state is JobState.DEAD


async def test_a_reap_that_redis_runs_after_its_caller_gave_up_does_nothing(engine_redis):
    # Sent into a frozen Redis and given up on, a reap runs when Redis comes back: it must
    # not fail the leases whose answers the coordinators are about to settle.
    w = worker(timeout_s=0.05)
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    await asyncio.sleep(0.1)
    given_up_at_ms = await server_ms(engine_redis) - 1
    assert (await store.reap(w, not_after_ms=given_up_at_ms))[:2] == (0, 0)
    assert (await store.get(job.id)).state is JobState.RUNNING
    assert (await store.reap(w, not_after_ms=await server_ms(engine_redis) + 1000))[:2] == (1, -1)


async def test_a_claim_repeated_with_its_tag_hands_out_the_same_jobs_once(engine_redis):
    # A claim whose answer was lost (a timeout) is sent again with its tag: the jobs it
    # took come back on the repeat, still attempt 1, with leases that start again.
    w = worker(timeout_s=30)
    store = make_store(engine_redis, w)
    engine = store.worker(WORKER)
    for n in range(3):
        await store.enqueue(request(store, id=f"j{n}"))
    first = await engine.claim(3, tag="lost")
    assert sorted(j.suffix for j in first.jobs) == ["j0", "j1", "j2"]
    leases = dict(await engine_redis.zrange(store.keys(WORKER).running, 0, -1, withscores=True))
    await asyncio.sleep(0.01)

    again = await engine.claim(3, tag="lost")
    assert [(j.suffix, j.attempt) for j in again.jobs] == [(j.suffix, 1) for j in first.jobs]
    assert [(await store.get(j.id)).attempts for j in first.jobs] == [1, 1, 1]
    renewed = dict(await engine_redis.zrange(store.keys(WORKER).running, 0, -1, withscores=True))
    assert all(renewed[member] > leases[member] for member in leases)

    await store.cancel(first.jobs[0].id)  # a job that ended since is left out of a repeat
    assert [j.suffix for j in (await engine.claim(3, tag="lost")).jobs] == [j.suffix for j in first.jobs[1:]]

    # the next claim deletes the answered one's reply; a claim without a tag keeps none
    reply = store.keys(WORKER).reply("lost")
    assert await engine_redis.exists(reply) == 1
    assert (await engine.claim(3, tag="next", answered_tag="lost")).jobs == []
    assert await engine_redis.exists(reply) == 0
    await store.enqueue(request(store, id="untagged"))
    assert len((await store.claim(w, 3)).jobs) == 1
    assert await engine_redis.keys(store.keys(WORKER).reply("*")) == []


async def test_reap_reports_the_next_lease_deadline_and_caps_its_batch(engine_redis):
    w = worker(timeout_s=0.05)
    store = make_store(engine_redis, w)
    assert (await store.reap(w))[:2] == (0, -1)
    short = [await start_one(store, w) for _ in range(3)]
    long = await start_one(store, w, timeout=5)
    await asyncio.sleep(0.06)
    before = await server_ms(engine_redis)
    assert (await store.reap(w, most=2))[0] == 2
    reaped, wait_ms, _ = await store.reap(w, most=2)
    assert reaped == 1
    deadline = await engine_redis.zscore(store.keys(WORKER).running, long.suffix)
    assert deadline - before - 50 <= wait_ms <= deadline - before
    assert 4800 < wait_ms <= 5000
    assert [(await store.get(j.id)).state for j in short] == [JobState.RETRYING] * 3


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_a_scheduled_job(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job, _ = await store.enqueue(request(store))
    cancelled = await store.cancel(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_ms is not None
    assert (await store.get(job.id)).state is JobState.CANCELLED
    assert await store.claim(w, 5) == Claim([], -1)


async def test_cancel_a_retrying_job(engine_redis):
    w = worker(backoff=Backoff(initial_s=0.0, jitter=False))
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    assert await store.settle(w, [failure(job)]) == ["retrying"]
    assert (await store.cancel(job.id)).state is JobState.CANCELLED
    assert await store.claim(w, 5) == Claim([], -1)


async def test_cancel_a_running_job_frees_its_slot_and_ignores_its_receipt(engine_redis):
    w = worker(concurrency=1, timeout_s=0.05)
    store = make_store(engine_redis, w)
    running = await start_one(store, w)
    await store.enqueue(request(store, id="next"))
    assert (await store.claim(w, 5)).wait_ms == -2

    assert (await store.cancel(running.id)).state is JobState.CANCELLED
    assert [j.suffix for j in (await store.claim(w, 5)).jobs] == ["next"]
    assert await store.receipt(running.id, success(running)) == "cancelled"
    await asyncio.sleep(0.06)
    await store.reap(w)  # its lease has ended too: still nothing changes
    got = await store.get(running.id)
    assert got.state is JobState.CANCELLED and got.result_json is None and got.last_error is None


async def test_cancel_a_finished_or_unknown_job(engine_redis):
    w = worker()
    store = make_store(engine_redis, w)
    job = await start_one(store, w)
    await store.settle(w, [success(job)])
    with pytest.raises(ConflictError):
        await store.cancel(job.id)
    assert (await store.get(job.id)).state is JobState.SUCCEEDED

    cancelled, _ = await store.enqueue(request(store))
    await store.cancel(cancelled.id)
    with pytest.raises(ConflictError):
        await store.cancel(cancelled.id)

    for unknown in ("send-email:nope", "other-worker:nope", "not a job id"):
        with pytest.raises(NotFoundError):
            await store.cancel(unknown)
        with pytest.raises(NotFoundError):
            await store.get(unknown)


# -- purge -----------------------------------------------------------------------------


async def test_purge_deletes_finished_jobs_past_retention_in_capped_batches(engine_redis):
    brief = worker("brief", retention=Retention(succeeded_s=0, dead_s=0, cancelled_s=0))
    kept = worker("kept", retention=Retention(succeeded_s=3600, dead_s=3600, cancelled_s=3600))
    store = make_store(engine_redis, brief, kept)
    finished_ids = {}
    for w in (brief, kept):
        ids = []
        for outcome in ("success", "permanent", "success", "permanent"):
            job = await start_one(store, w)
            await store.settle(w, [Receipt(job.suffix, job.attempt, outcome)])
            ids.append(job.id)
        cancelled, _ = await store.enqueue(request(store, worker=w.name))
        await store.cancel(cancelled.id)
        ids.append(cancelled.id)
        finished_ids[w.name] = ids
    waiting, _ = await store.enqueue(request(store, worker="brief", delay=60))

    assert await store.purge(brief, most=2) == (2, True)
    assert await store.purge(brief, most=2) == (2, True)
    assert await store.purge(brief, most=2) == (1, False)
    assert await store.purge(brief, most=2) == (0, False)
    for job_id in finished_ids["brief"]:
        with pytest.raises(NotFoundError):
            await store.get(job_id)
    assert (await store.get(waiting.id)).state is JobState.SCHEDULED

    assert await store.purge(kept) == (0, False)
    assert [(await store.get(i)).state.value for i in finished_ids["kept"]] == [
        "succeeded", "dead", "succeeded", "dead", "cancelled"]


async def test_a_finished_job_is_kept_for_exactly_its_retention(engine_redis):
    w = worker(retention=Retention(succeeded_s=3600, dead_s=60, cancelled_s=5))
    store = make_store(engine_redis, w)
    await assert_kept_for_ms(store, w, [3_600_000, 60_000, 5_000])


async def test_a_fractional_retention_is_not_rounded_to_seconds(engine_redis):
    w = worker(retention=Retention(succeeded_s=8.11, dead_s=2.01, cancelled_s=4.02))
    store = make_store(engine_redis, w)
    await assert_kept_for_ms(store, w, [8110, 2010, 4020])


async def test_a_retention_changed_applies_to_jobs_finished_before_the_change(engine_redis):
    kept_long = worker(retention=Retention(succeeded_s=3600))
    store = make_store(engine_redis, kept_long)
    job = await start_one(store, kept_long)
    await store.settle(kept_long, [success(job)])
    assert await store.purge(kept_long) == (0, False)
    kept_briefly = worker(retention=Retention(succeeded_s=0.001))  # the config changed, the job finished before
    await asyncio.sleep(0.01)
    assert await make_store(engine_redis, kept_briefly).purge(kept_briefly) == (1, False)
    with pytest.raises(NotFoundError):
        await store.get(job.id)


async def test_the_earlier_versions_finished_zset_is_purged_by_its_times_and_emptied(engine_redis):
    """An earlier version also kept each finished job in a zset of purge times; purge deletes
    those jobs when their time comes (even with a longer retention now), and nothing adds to it."""
    w = worker(retention=Retention(succeeded_s=3600))
    store = make_store(engine_redis, w)
    old, new = await start_one(store, w), await start_one(store, w)
    await store.settle(w, [success(old), success(new)])
    keys = store.keys(w.name)
    assert await engine_redis.exists(keys.finished) == 0  # this version adds nothing to it
    now_ms = await server_ms(engine_redis)
    await engine_redis.zadd(keys.finished, {old.suffix: now_ms - 1, new.suffix: now_ms + 3_600_000})
    assert await store.purge(w) == (1, False)
    with pytest.raises(NotFoundError):
        await store.get(old.id)
    assert (await store.get(new.id)).state is JobState.SUCCEEDED
    assert await engine_redis.zrange(keys.finished, 0, -1) == [new.suffix.encode()]
    assert (await store.worker(w.name).state()).succeeded == 1  # the purged one counted off


RETENTION_MARGIN_MS = 50  # the calls' own time, on a busy machine, is well within this


async def assert_kept_for_ms(store: Engine, w: WorkerConfig, kept_ms: list[int]) -> None:
    """A succeeded, a dead and a cancelled job are each kept for ``kept_ms``: a purge leaves
    the job while it finished less than that ago (by ``RETENTION_MARGIN_MS``), and deletes it
    once it finished that long ago. (Each is made to have finished that long ago by moving
    its finished time, in its hash and its state index, back.)"""
    succeeded = await start_one(store, w)
    dead = await start_one(store, w)
    await store.settle(w, [success(succeeded), Receipt(dead.suffix, dead.attempt, "permanent")])
    cancelled, _ = await store.enqueue(request(store, worker=w.name))
    await store.cancel(cancelled.id)
    keys = store.keys(w.name)
    for job_id, state, retention_ms in zip((succeeded.id, dead.id, cancelled.id), ("succeeded", "dead", "cancelled"),
                                           kept_ms, strict=True):
        suffix = job_id.split(":", 1)[1]

        async def finished_ago(ms: int, suffix: str = suffix, state: str = state) -> None:
            finished_ms = await server_ms(store.redis) - ms
            await store.redis.zadd(keys.state_index(state), {suffix: finished_ms})
            await store.redis.hset(keys.job(suffix), *stored("finished_ms"), finished_ms)

        await finished_ago(retention_ms - RETENTION_MARGIN_MS)
        assert await store.purge(w) == (0, False), (state, "purged before its retention")
        assert (await store.get(job_id)).state.value == state
        await finished_ago(retention_ms)
        assert await store.purge(w) == (1, False), (state, "kept past its retention")
        with pytest.raises(NotFoundError):
            await store.get(job_id)


# -- memory ----------------------------------------------------------------------------


class EventLog:
    """The entries a worker's event stream got since the last look, as (suffix, state,
    attempt) per event, entry by entry."""

    def __init__(self, client: Any, keys: WorkerKeys):
        self.client, self.stream, self.last = client, keys.events, "0-0"

    async def added(self) -> list[list[tuple[str, str, int]]]:
        entries = await self.client.xrange(self.stream, f"({self.last}", "+")
        if entries:
            self.last = entries[-1][0].decode()
        return [entry_events(fields) for _, fields in entries]


async def test_each_call_that_moves_jobs_adds_one_stream_entry_with_all_their_events(engine_redis):
    """A claim of N jobs, a settle of N receipts, an enqueue, a reap, an operator's bulk
    retry and delete: one entry each, holding each job's move in the order it was made."""
    n = 40
    w = worker(timeout_s=0.05, max_attempts=2, backoff=Backoff(initial_s=0.0, jitter=False),
               retention=Retention(dead_s=3600))
    store = make_store(engine_redis, w)
    log = EventLog(engine_redis, store.keys(WORKER))
    jobs = [request(store, id=f"j{i}") for i in range(n)]
    await store.enqueue_many(jobs)
    suffixes = [f"j{i}" for i in range(n)]
    assert await log.added() == [[(s, "scheduled", 0) for s in suffixes]]

    claim = await store.claim(w, n)
    assert [j.suffix for j in claim.jobs] == suffixes
    assert await log.added() == [[(s, "running", 1) for s in suffixes]]

    half = n // 2
    words = await store.settle(w, [success(j) if i < half else failure(j) for i, j in enumerate(claim.jobs)])
    assert words == ["succeeded"] * half + ["retrying"] * (n - half)
    assert await log.added() == [[(s, "succeeded" if i < half else "retrying", 1) for i, s in enumerate(suffixes)]]

    retried = (await claim_when_due(store, w, n)).jobs
    while len(retried) < n - half:
        retried += (await claim_when_due(store, w, n)).jobs
    for entry in await log.added():
        assert {state for _, state, _ in entry} == {"running"}
    await asyncio.sleep(0.1)  # their leases (50 ms) run out: the last attempts die
    reaped = await store.reap(w)
    assert len(reaped.ended) == n - half
    assert await log.added() == [[(j.suffix, "dead", 2) for j in retried]]

    engine = store.worker(WORKER)
    assert (await engine.retry_jobs(ids=[make_job_id(WORKER, j.suffix) for j in retried])).changed == n - half
    assert await log.added() == [[(j.suffix, "scheduled", 0) for j in retried]]
    assert (await engine.delete_jobs(ids=[make_job_id(WORKER, s) for s in suffixes[:half]])).changed == half
    assert await log.added() == [[(s, "deleted", 1) for s in suffixes[:half]]]

    # a call that moves nothing adds nothing
    assert await store.settle(w, [success(claim.jobs[0])]) == ["missing"]
    await store.reap(w)
    assert await log.added() == []


async def test_the_event_stream_keeps_about_its_last_10000_events_whatever_the_batches(engine_redis):
    """Trimmed by events, not entries: batches of 1,000 events and single events alike."""
    w = worker(rate=1e9, burst=1e9)
    store = make_store(engine_redis, w)
    keys = store.keys(WORKER)

    async def events_held() -> int:
        return sum(len(entry_events(fields)) for _, fields in await engine_redis.xrange(keys.events))

    for _ in range(15):
        await store.enqueue_many([request(store) for _ in range(1000)])
        assert await events_held() <= 11_000
    assert await events_held() >= 10_000
    for _ in range(1500):  # single events push out the batches, whole entries at a time
        await store.enqueue(request(store))
        assert await events_held() <= 11_000
    assert await events_held() >= 10_000
    await store.enqueue_many([request(store) for _ in range(1000)])
    assert 10_000 <= await events_held() <= 11_000


async def test_memory_returns_to_baseline_after_100k_jobs(real_redis):
    w = worker(rate=1e9, burst=1e9, retention=Retention(succeeded_s=0, dead_s=0, cancelled_s=0))
    store = make_store(real_redis, w)
    keys = store.keys(WORKER)
    # What stays: the sequence, the limits, the counters and the dispatch-rate slots (the
    # bucket of the key "" expires once it has refilled).
    bookkeeping = {k.encode() for k in (keys.bucket, keys.seq, keys.limits, keys.stats, keys.dispatched,
                                        keys.key_bucket(""), keys.events)}

    async def run_jobs(count: int) -> None:
        for _ in range(count // 1000):
            await store.enqueue_many([request(store, args={"to": "someone@example.com", "n": i}) for i in range(1000)])
            for _ in range(2):
                jobs = (await store.claim(w, 500)).jobs
                assert len(jobs) == 500
                for start in range(0, 500, 250):
                    words = await store.settle(w, [success(j, {"ok": True}) for j in jobs[start:start + 250]])
                    assert words == ["succeeded"] * 250

    async def purge_all() -> int:
        total = 0
        while True:
            purged, more = await store.purge(w, most=5000)
            total += purged
            if not more:
                return total

    async def used_memory() -> int:
        return int((await real_redis.info("memory"))["used_memory"])

    # Warm up: scripts loaded, bucket and seq created, so the baseline has what stays.
    await run_jobs(1000)
    await purge_all()
    baseline = await used_memory()

    await run_jobs(100_000)
    assert await real_redis.zcard(keys.state_index("succeeded")) == 100_000
    assert await purge_all() == 100_000
    assert await store.purge(w) == (0, False)

    assert set(await real_redis.keys("*")) <= bookkeeping
    assert await real_redis.dbsize() <= len(bookkeeping)
    # the event stream keeps its last 10,000 events, or up to 1,000 more (an entry goes whole)
    assert 10_000 <= sum(len(entry_events(fields)) for _, fields in await real_redis.xrange(keys.events)) <= 11_000
    # Redis shrinks its emptied key table in the background (serverCron): give it a moment.
    deadline = time.monotonic() + 5
    while (used := await used_memory()) > baseline + 1024 * 1024 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert used <= baseline + 1024 * 1024, f"used_memory {used} vs baseline {baseline}"
