"""Step 6: the cost of throttling: a claim with 100,000 throttled jobs waiting, and the lag
of a quiet throttle key's job behind a busy key.

1. Claim cost. A worker with ``rate = 0.001, burst = 1`` per throttle key: each key's first
   job takes its only token, and the key then waits 1,000 s. Throttled jobs are put in
   place that way (10 per key: 100 jobs in 10 keys, then 100,000 jobs in 10,000 keys);
   then ``--ready`` (2,000) jobs of fresh keys, each with a full bucket, are claimed 10 at a
   time, and the time per claim is the figure: the claim script's own time as Redis counts
   it (``INFO commandstats``), and the wall time of the call. The ratio of the two setups
   is the claim's cost of throttled jobs (target <= 1.5x: claiming is O(log n)).
2. Fairness lag. A coordinator in this process (real Redis, aiohttp to an aiohttp worker in
   this process) with ``rate = 2, burst = 40`` per key; 10,000 jobs of one key are queued
   (40 leave, the rest wait for tokens), then ``--samples`` (50) single jobs of other keys
   are enqueued one after another: the lag is arrival at the worker minus the job's
   ``createdAt``. The peer, in the same run and process: as many delayed jobs of other keys
   (``runAt`` 50 ms ahead), whose lag is arrival minus ``runAt`` (the core's delayed-job
   lag, target p99 <= 10 ms).

Run alone: ``python -m bench.throttle [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web

from redisq.config import Config, WorkerConfig
from redisq.engine import Engine
from redisq.model import parse_enqueue

from .cron_lag import percentiles
from .procs import RedisProc, start_local_worker
from .report import figure, note, progress, run

WORKER = "shopify"
TARGET_CLAIM_RATIO = 1.5
TARGET_LAG_P99_MS = 10.0


async def _script_usec(client: Any) -> tuple[int, float]:
    stats = await client.info("commandstats")
    scripts = [v for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")]
    return sum(int(v["calls"]) for v in scripts), sum(int(v["usec"]) for v in scripts)


async def claim_cost(url: str, throttled_jobs: int, ready: int, per_key: int = 10) -> tuple[float, float]:
    """(Redis µs per claim, wall µs per claim) with ``throttled_jobs`` waiting for tokens."""
    from redisq.coordinator import connect

    client = connect(url)
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/", rate=0.001, burst=1)
    store = Engine(client, Config(redis_url=url, workers={WORKER: worker}))
    try:
        await client.flushdb()
        keys = throttled_jobs // per_key
        for start in range(0, throttled_jobs + keys, 1000):
            chunk = range(start, min(start + 1000, throttled_jobs + keys))
            # per_key + 1 jobs per key: the first takes the key's token, per_key stay throttled
            await store.enqueue_many([parse_enqueue({"worker": WORKER, "throttleKey": f"busy-{i % keys}"},
                                                    store.config.workers) for i in chunk])
        while (await store.claim(worker, 1000)).jobs:
            pass
        waiting = (await store.worker(WORKER).state()).scheduled
        if waiting != throttled_jobs:
            raise RuntimeError(f"{waiting} jobs wait for tokens, expected {throttled_jobs}")
        for start in range(0, ready, 1000):
            await store.enqueue_many([
                parse_enqueue({"worker": WORKER, "throttleKey": f"ready-{i}"}, store.config.workers)
                for i in range(start, min(start + 1000, ready))])
        await client.config_resetstat()
        claims = claimed = 0
        started = time.perf_counter()
        while claimed < ready:
            got = len((await store.claim(worker, 10)).jobs)
            if not got:
                raise RuntimeError(f"claimed {claimed} of {ready} ready jobs")
            claims += 1
            claimed += got
        return await per_claim(client, started, claims)
    finally:
        await client.aclose()


async def per_claim(client: Any, started: float, claims: int) -> tuple[float, float]:
    """(Redis µs, wall µs) per claim of ``claims`` made since ``started`` (``perf_counter``)
    and since ``INFO commandstats`` was reset; the database is emptied after."""
    wall_s = time.perf_counter() - started
    calls, usec = await _script_usec(client)
    await client.flushdb()
    return usec / calls, wall_s * 1e6 / claims


async def fairness_lag(url: str, busy_jobs: int, samples: int) -> tuple[dict[str, float], dict[str, float]]:
    from redisq.coordinator import Coordinator, connect

    arrivals: dict[str, float] = {}
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        arrivals[body["jobId"]] = time.time()
        arrived.set()
        return web.json_response({"ok": True})

    worker_url, runner = await start_local_worker(handle)
    worker = WorkerConfig(name=WORKER, url=worker_url, rate=2.0, burst=40)
    config = Config(redis_url=url, secret="bench", workers={WORKER: worker})
    redis = connect(url)
    await redis.flushdb()
    coordinator = Coordinator(config, redis=redis)
    await coordinator.start()
    store = coordinator.engine

    async def enqueue(body: dict[str, Any]) -> Any:
        results, wake = await store.enqueue_many([parse_enqueue({"worker": WORKER, **body}, config.workers)])
        await coordinator.enqueued(wake)
        return results[0][0]

    async def arrival(job_id: str) -> float:
        deadline = time.monotonic() + 5
        while job_id not in arrivals:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{job_id} was not dispatched within 5 s")
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.5)
        return arrivals[job_id]

    try:
        for start in range(0, busy_jobs, 1000):
            requests = [parse_enqueue({"worker": WORKER, "throttleKey": "busy"}, config.workers)
                        for _ in range(min(1000, busy_jobs - start))]
            await coordinator.enqueued((await store.enqueue_many(requests))[1])
        burst_deadline = time.monotonic() + 30
        while len(arrivals) < 40:  # the busy key's burst
            if time.monotonic() > burst_deadline:
                raise RuntimeError(f"{len(arrivals)} of the busy key's burst of 40 dispatched within 30 s")
            await asyncio.sleep(0.01)
        quiet, delayed = [], []
        for n in range(samples):
            job = await enqueue({"throttleKey": f"quiet-{n}"})
            quiet.append((await arrival(job.id)) * 1000 - job.created_ms)
            job = await enqueue({"throttleKey": f"later-{n}", "delay": 0.05})
            delayed.append((await arrival(job.id)) * 1000 - job.run_at_ms)
        return percentiles(quiet), percentiles(delayed)
    finally:
        await coordinator.stop()
        await runner.cleanup()


def measure(quick: bool, ready: int | None = None, samples: int | None = None) -> None:
    ready = ready or (1000 if quick else 2000)
    samples = samples or (20 if quick else 50)
    progress(f"[6/6] throttling: time per claim of {ready:,} ready jobs (10 per claim) with 100 and with 100,000 "
             f"throttled jobs waiting; lag of {samples} quiet-key jobs behind 10,000 of a busy key")
    with RedisProc() as redis:
        small = [run(lambda: claim_cost(redis.url, 100, ready)) for _ in range(3)]
        large = [run(lambda: claim_cost(redis.url, 100_000, ready)) for _ in range(3)]
        small_redis, small_wall = sorted(s[0] for s in small)[1], sorted(s[1] for s in small)[1]
        large_redis, large_wall = sorted(s[0] for s in large)[1], sorted(s[1] for s in large)[1]
        figure("throttle", "claim, Redis time, 100,000 throttled waiting", large_redis, "us",
               "100 throttled waiting", small_redis,
               "PASS" if large_redis <= TARGET_CLAIM_RATIO * small_redis else f"ABOVE {TARGET_CLAIM_RATIO}x")
        figure("throttle", "claim, wall time, 100,000 throttled waiting", large_wall, "us",
               "100 throttled waiting", small_wall,
               "PASS" if large_wall <= TARGET_CLAIM_RATIO * small_wall else f"ABOVE {TARGET_CLAIM_RATIO}x")
        note("throttle", "medians of 3 rounds each; Redis time is the claim script's own (INFO commandstats)")
        quiet, delayed = run(lambda: fairness_lag(redis.url, 10_000, samples))
    for p in ("p50", "p99"):
        figure("throttle", f"quiet key behind 10,000 busy, lag {p}", quiet[p], "ms", f"delayed-job lag {p}", delayed[p],
               ("PASS" if quiet[p] <= TARGET_LAG_P99_MS else "ABOVE 10 ms TARGET") if p == "p99" else "")
    note("throttle", f"quiet-key lag max {quiet['max']:.2f} ms, delayed-job lag max {delayed['max']:.2f} ms "
                     f"({quiet['n']} samples each)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throttle")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ready", type=int)
    parser.add_argument("--samples", type=int)
    args = parser.parse_args(argv)
    measure(args.quick, args.ready, args.samples)


if __name__ == "__main__":
    main()
