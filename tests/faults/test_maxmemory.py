"""A full Redis (``maxmemory`` reached, policy ``noeviction``), on real redis-server processes.

What a user checks when Redis fills up with jobs: enqueue answers 503 with an error that
names maxmemory; the jobs already accepted are still dispatched and finished (claim and
settle run at maxmemory), their retention passes and purge frees them; then enqueue works
again by itself, and no accepted job was lost. The embedded store has no maxmemory: the
same flagged scripts run on it in every engine test (``engine_redis``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from redisq.config import Backoff, Config, Retention, WorkerConfig
from redisq.cron import parse_schedule
from redisq.engine import Engine, HoldBack, Receipt
from redisq.errors import UnavailableError
from redisq.limits import Limits
from redisq.model import parse_enqueue

from redis_server import RedisServer, free_port
from test_resilience import (  # noqa: F401 (fixtures)
    WORKER,
    WorkerSink,
    client,
    start_coordinator,
    start_redis,
    wait_until,
    write_config,
)

MAXMEMORY_BYTES = 4 * 1024 * 1024
FULL_REDIS_ARGS = ("--maxmemory", str(MAXMEMORY_BYTES), "--maxmemory-policy", "noeviction")
# Jobs per enqueue while filling: a batch that does not fit is refused while a smaller one
# may still fit (Redis counted the refused batch's own arguments, in its query buffer).
FILL_BATCHES = (250, 10, 1)


def used_memory(server: RedisServer) -> int:
    r = redis.Redis.from_url(server.url)
    try:
        return int(r.info("memory")["used_memory"])
    finally:
        r.close()


# -- the engine: each script at maxmemory --------------------------------------------------

@pytest.fixture
def full_redis(processes: list[Any]) -> Iterator[RedisServer]:
    yield start_redis(processes, *FULL_REDIS_ARGS)


async def fill(engine: Engine) -> tuple[list[str], UnavailableError]:
    """Enqueue jobs until Redis refuses even one: the ids accepted, and the last refusal."""
    accepted: list[str] = []
    for batch in FILL_BATCHES:
        while True:
            ids = [f"job-{len(accepted) + i:05d}" for i in range(batch)]
            requests = [parse_enqueue({"worker": WORKER, "id": i, "args": {"n": i}}, engine.config.workers)
                        for i in ids]
            try:
                results, _ = await engine.enqueue_many(requests)
            except UnavailableError as e:
                refusal = e
                break
            accepted += [job.id for job, _ in results]
            assert len(accepted) < 100_000, "Redis never refused an enqueue: is maxmemory set?"
    return accepted, refusal


async def test_at_maxmemory_scripts_that_move_jobs_on_run_and_only_new_data_is_refused(full_redis):
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/work", timeout_s=0.3, rate=100_000.0,
                          backoff=Backoff(initial_s=0.01, max_s=0.01, jitter=False),
                          retention=Retention(succeeded_s=0.0))
    client = aioredis.Redis.from_url(full_redis.url)
    engine = Engine(client, Config(workers={WORKER: worker}))
    jobs = engine.worker(WORKER)
    try:
        schedule, _ = await engine.schedules.save(parse_schedule({"worker": WORKER, "cron": "0 9 * * *"},
                                                                 engine.config.workers))
        accepted, refusal = await fill(engine)
        assert len(accepted) >= 2000, "Redis filled up with something else than jobs"
        assert refusal.status_code == 503 and "redis is full (maxmemory)" in refusal.message, refusal.message

        # claim, heartbeat, hold back and settle (success and failure) run: work goes on,
        # and what it records (90 results of 1 KB) takes Redis further past its limit
        claimed = (await jobs.claim(100)).jobs
        assert len(claimed) == 100
        assert await jobs.heartbeat(claimed[0].suffix, claimed[0].attempt) > 0
        await jobs.hold_back([HoldBack("key", "", 0.0, 1.0, 50)])
        result_json = json.dumps({"text": "x" * 1000})
        receipts = [Receipt(j.suffix, j.attempt, "success", result_json=result_json) for j in claimed[:90]]
        receipts += [Receipt(j.suffix, j.attempt, "failure", error="boom") for j in claimed[90:95]]
        assert await jobs.settle(receipts) == ["succeeded"] * 90 + ["retrying"] * 5
        assert used_memory(full_redis) > MAXMEMORY_BYTES

        # what adds data is refused, whole
        with pytest.raises(UnavailableError, match=r"^redis is full \(maxmemory\)"):
            await engine.enqueue_many([parse_enqueue({"worker": WORKER}, engine.config.workers) for _ in range(10)])
        with pytest.raises(UnavailableError, match=r"^redis is full \(maxmemory\)"):
            await engine.schedules.save(parse_schedule({"worker": WORKER, "cron": "0 10 * * *"},
                                                       engine.config.workers))
        assert (await jobs.state()).scheduled == len(accepted) - 100
        assert [s.id for s in await engine.schedules.list()] == [schedule.id]

        # an operator can still pause and resume the worker, and pause or delete a schedule
        await jobs.set_limits(Limits(rate=100_000.0, timeout_s=0.3, paused=True))
        assert (await jobs.claim(10)).jobs == []
        await jobs.set_limits(Limits(rate=100_000.0, timeout_s=0.3))
        assert (await engine.schedules.set_paused(schedule.id, True)).paused

        # reap and cancel run
        await asyncio.sleep(0.4)  # the 5 attempts left unanswered pass their lease
        reaped, _, _ = await jobs.reap()
        assert reaped == 5
        assert (await engine.cancel(accepted[-1])).state == "cancelled"
        assert (await engine.schedules.delete(schedule.id)).id == schedule.id

        # every accepted job is moved on and finishes; purge frees them; enqueue works again
        deadline = time.monotonic() + 30
        while (state := await jobs.state()).scheduled + state.retrying + state.running and time.monotonic() < deadline:
            claimed = (await jobs.claim(500)).jobs
            await jobs.settle([Receipt(j.suffix, j.attempt, "success") for j in claimed])
            await asyncio.sleep(0 if claimed else 0.01)  # the 10 retries are due 10 ms after they failed
        assert (state.succeeded, state.cancelled, state.scheduled + state.retrying + state.running) == \
            (len(accepted) - 1, 1, 0)
        while (await jobs.purge(500))[1]:
            pass
        assert (await jobs.state()).succeeded == 0
        assert used_memory(full_redis) < MAXMEMORY_BYTES
        (job, created), = (await engine.enqueue_many([parse_enqueue({"worker": WORKER}, engine.config.workers)]))[0]
        assert created and job.state == "scheduled"
    finally:
        await client.aclose()


# -- what a job costs (README, "Sizing maxmemory") -------------------------------------------

README_BYTES_PER_JOB = {"waiting": 393, "finished": 542}  # with ~30 bytes of args and 13 of result


async def test_a_job_costs_in_redis_memory_what_readme_says(processes):
    server = start_redis(processes, "--maxmemory-policy", "noeviction")
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/work")
    client = aioredis.Redis.from_url(server.url)
    engine = Engine(client, Config(workers={WORKER: worker}))
    jobs, count = engine.worker(WORKER), 10_000
    try:
        await jobs.ensure_limits()
        before = used_memory(server)
        for start in range(0, count, 500):
            await engine.enqueue_many([parse_enqueue({"worker": WORKER, "args": {"to": f"user{start + i}@example.com"}},
                                                     engine.config.workers) for i in range(500)])
        waiting = used_memory(server)
        while claimed := (await jobs.claim(500)).jobs:
            await jobs.settle([Receipt(j.suffix, j.attempt, "success", result_json='{"sent":true}') for j in claimed])
        finished = used_memory(server)
    finally:
        await client.aclose()
    measured = {"waiting": (waiting - before) / count, "finished": (finished - before) / count}
    for state, figure in README_BYTES_PER_JOB.items():
        assert 0.8 * figure <= measured[state] <= 1.2 * figure, (measured, "README's figures are", README_BYTES_PER_JOB)


# -- a coordinator against a full Redis -------------------------------------------------------

RETENTION_S = 5.0  # the 503 while full is checked after 1000 deliveries, well within it
FILL_BUDGET_S = 5.0  # the jobs fall due this long after the first enqueue: filling (0.4-0.6 s) must be done by then


def post_jobs(client: httpx.Client, base_url: str, ids: list[str], delay_s: float) -> httpx.Response:
    return client.post(f"{base_url}/jobs", json={"jobs": [
        {"worker": WORKER, "id": i, "args": {"n": i}, "delay": delay_s} for i in ids]})


def worker_jobs(client: httpx.Client, base_url: str) -> dict[str, int]:
    resp = client.get(f"{base_url}/workers/{WORKER}")
    assert resp.status_code == 200, resp.text
    counts: dict[str, int] = resp.json()["jobs"]
    return counts


def test_a_full_redis_finishes_and_purges_the_accepted_jobs_and_enqueue_recovers_by_itself(
        tmp_path: Path, client: httpx.Client, processes: list[Any]) -> None:
    server = start_redis(processes, *FULL_REDIS_ARGS)
    port = free_port()
    with WorkerSink(lambda: 0.005) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              timeout_s=10.0)
        with config.open("a") as f:
            f.write(f"\n[workers.{WORKER}.retention]\nsucceeded = {RETENTION_S}\n")
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url

        # Fill Redis with jobs that all fall due at one moment, until it refuses even one.
        due_at = time.monotonic() + FILL_BUDGET_S
        accepted: list[str] = []
        for batch in FILL_BATCHES:
            while True:
                delay_s = due_at - time.monotonic()
                assert delay_s > 1.0, f"filling took longer than {FILL_BUDGET_S} s ({len(accepted)} jobs accepted)"
                ids = [f"job-{len(accepted) + i:05d}" for i in range(batch)]
                resp = post_jobs(client, base, ids, delay_s)
                if resp.status_code != 201:
                    break
                assert resp.json()["created"] == len(ids)
                accepted += [job["id"] for job in resp.json()["jobs"]]
            assert resp.status_code == 503, resp.text
        assert "maxmemory" in resp.json()["error"], resp.json()
        assert len(accepted) >= 2000, "Redis filled up with something else than jobs"
        assert sink.delivered_ids() == set(), "jobs were sent before they were due"

        # They fall due while Redis is full: every one is sent once and answered, though what
        # claims and settles record may take Redis past its limit (a running or finished job
        # takes about what a waiting one did: README, Sizing maxmemory). The peak is printed
        # for README's headroom figure.
        peak = [used_memory(server)]

        def all_delivered() -> bool:
            peak[0] = max(peak[0], used_memory(server))
            return sink.delivered_ids() >= set(accepted)
        wait_until(all_delivered, FILL_BUDGET_S + 30,
                   f"all {len(accepted)} accepted jobs delivered (got {len(sink.delivered_ids())})")
        print(f"{len(accepted)} jobs accepted into a {MAXMEMORY_BYTES} B Redis; used_memory peaked at {peak[0]} B "
              "while they ran")
        # Their retention passes and purge frees them: nothing waits, runs or died; none is left.
        wait_until(lambda: worker_jobs(client, base) == dict.fromkeys(
            ("scheduled", "retrying", "running", "succeeded", "dead", "cancelled"), 0),
            RETENTION_S + 20, f"all finished jobs purged (now {worker_jobs(client, base)})")
        assert client.get(f"{base}/job/{accepted[0]}").status_code == 404
        assert used_memory(server) < MAXMEMORY_BYTES

        # Enqueue answers 201 again, no operator needed, and that job runs too.
        after = client.post(f"{base}/job", json={"worker": WORKER, "args": {}})
        assert after.status_code == 201, after.text
        wait_until(lambda: after.json()["id"] in sink.delivered_ids(), 10, "the job enqueued after the purge delivered")
        assert coordinator.alive(), coordinator.log()

    deliveries = sink.deliveries()
    assert set(accepted) <= set(deliveries), "an accepted job was lost"
    retried = {job_id: attempts for job_id, attempts in deliveries.items() if attempts != [1]}
    assert not retried, f"{len(retried)} jobs were sent more than once: {dict(list(retried.items())[:5])}"
    assert "Traceback" not in coordinator.log(), coordinator.log()
