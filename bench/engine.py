"""Step 2: the engine alone (no HTTP): enqueue -> claim -> settle through redisq.engine.Engine.

One Python process, one Redis connection pool, the way a coordinator uses the store:
``enqueue_many`` in chunks of 1000, claims of ``--claim-batch`` (256) jobs, and settles of
every claimed batch in one call. A producer task enqueues while ``--consumers`` tasks
claim and settle, so Redis and Python overlap. Jobs/s counts from the first enqueue until
the last job is settled as succeeded.

Round trips per job are counted twice: by the loop (calls it made) and by the server
(``INFO commandstats``: the EVALSHA/EVAL calls it served), and must agree.

Run alone: ``python -m bench.engine [--quick] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from redisq.config import Config, WorkerConfig
from redisq.engine import Engine, Receipt
from redisq.model import EnqueueRequest, new_job_suffix

from .procs import RedisProc
from .redis_ceiling import OPS_PER_JOB, Ceiling
from .report import Deadline, figure, note, progress, run

WORKER = "bench"
ENQUEUE_CHUNK = 1000


@dataclass
class EngineResult:
    jobs: int
    seconds: float
    jobs_s: float
    enqueue_only_jobs_s: float
    round_trips: int
    server_script_calls: int
    server_busy_s: float  # time Redis spent inside the scripts


def requests_for(n: int) -> list[EnqueueRequest]:
    return [
        EnqueueRequest(worker=WORKER, suffix=new_job_suffix(), args_json=f'{{"n":{i}}}', run_at_ms=None,
                       delay_ms=0, max_attempts=5, timeout_ms=30_000)
        for i in range(n)
    ]


async def server_script_stats(client: Any) -> tuple[int, float]:
    """(script calls, seconds Redis spent running them) since the last CONFIG RESETSTAT."""
    stats = await client.info("commandstats")
    scripts = [v for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")]
    return sum(int(v["calls"]) for v in scripts), sum(int(v["usec"]) for v in scripts) / 1e6


async def cycle(url: str, jobs: int, claim_batch: int, consumers: int, time_limit_s: float,
                python_packer: bool = False) -> EngineResult:
    """As shipped: the client ``redisq serve`` builds (``coordinator.connect``, commands packed
    by hiredis). ``python_packer``: a plain redis-py client, which packs commands in Python."""
    import redis.asyncio as aioredis

    from redisq.coordinator import connect

    client = aioredis.Redis.from_url(url) if python_packer else connect(url)
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/")
    store = Engine(client, Config(redis_url=url, workers={WORKER: worker}))
    try:
        await client.flushdb()
        # Load the scripts and warm the connections outside the timed part.
        await store.enqueue_many(requests_for(10))
        claim = await store.claim(worker, 100)
        await store.settle(worker, [Receipt(j.suffix, j.attempt, "success") for j in claim.jobs])
        await client.flushdb()
        batches = [requests_for(min(ENQUEUE_CHUNK, jobs - s)) for s in range(0, jobs, ENQUEUE_CHUNK)]

        await client.config_resetstat()
        calls = 0
        settled = 0
        enqueued_all = asyncio.Event()
        deadline = Deadline(time_limit_s)
        enqueue_done_s = 0.0
        started = time.perf_counter()

        async def produce() -> None:
            nonlocal calls, enqueue_done_s
            for batch in batches:
                await store.enqueue_many(batch)
                calls += 1
                if deadline.passed:
                    break
            enqueue_done_s = time.perf_counter() - started
            enqueued_all.set()

        async def consume() -> None:
            nonlocal calls, settled
            while settled < jobs and not deadline.passed:
                claim = await store.claim(worker, claim_batch)
                calls += 1
                if not claim.jobs:
                    if enqueued_all.is_set() and claim.wait_ms == -1:
                        return  # nothing left to claim; the other consumers settle the rest
                    await asyncio.sleep(0.001)
                    continue
                words = await store.settle(worker, [Receipt(j.suffix, j.attempt, "success") for j in claim.jobs])
                calls += 1
                settled += sum(1 for w in words if w == "succeeded")

        await asyncio.gather(produce(), *(consume() for _ in range(consumers)))
        elapsed = time.perf_counter() - started
        done = await client.zcard(store.keys(WORKER).state_index("succeeded"))
        server_calls, server_busy_s = await server_script_stats(client)
        if done != jobs:
            raise RuntimeError(f"engine settled {done} of {jobs} jobs within {time_limit_s:g} s")
        await client.flushdb()
        return EngineResult(jobs, elapsed, jobs / elapsed, jobs / enqueue_done_s if enqueue_done_s else 0.0,
                            calls, server_calls, server_busy_s)
    finally:
        await client.aclose()


async def enqueue_only(url: str, jobs: int) -> float:
    """jobs/s of enqueue_many alone, chunks of 1000 (the batch API's engine cost)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    worker = WorkerConfig(name=WORKER, url="http://127.0.0.1:9/")
    store = Engine(client, Config(redis_url=url, workers={WORKER: worker}))
    try:
        await client.flushdb()
        await store.enqueue_many(requests_for(10))
        batches = [requests_for(min(ENQUEUE_CHUNK, jobs - s)) for s in range(0, jobs, ENQUEUE_CHUNK)]
        started = time.perf_counter()
        for batch in batches:
            await store.enqueue_many(batch)
        elapsed = time.perf_counter() - started
        await client.flushdb()
        return jobs / elapsed
    finally:
        await client.aclose()


def median(results: list[EngineResult]) -> EngineResult:
    return sorted(results, key=lambda r: r.jobs_s)[len(results) // 2]


def measure(redis: RedisProc, ceiling: Ceiling | None, quick: bool, jobs: int | None = None,
            claim_batch: int = 256, consumers: int = 2) -> EngineResult:
    jobs = jobs or (20_000 if quick else 50_000)
    rounds = 1 if quick else 3
    progress(f"[2/6] engine alone: {jobs:,} jobs enqueue -> claim({claim_batch}) -> settle, {consumers} consumers, "
             f"redisq.engine.Engine; {rounds} round(s), each as shipped and with redis-py's Python packer")
    results: list[EngineResult] = []
    python_packed: list[EngineResult] = []
    for _ in range(rounds):  # interleaved, so that load from elsewhere hits both alike
        results.append(run(lambda: cycle(redis.url, jobs, claim_batch, consumers, 60.0)))
        python_packed.append(run(lambda: cycle(redis.url, jobs, claim_batch, consumers, 60.0, python_packer=True)))
    result = median(results)
    enqueue_s = run(lambda: enqueue_only(redis.url, jobs))
    spread = f"median of {len(results)}: " + ", ".join(f"{r.jobs_s:,.0f}" for r in results) if len(results) > 1 else ""
    if ceiling is not None:
        server_jobs = min(ceiling.benchmark_ops_s.values()) / OPS_PER_JOB if ceiling.benchmark_ops_s else 0.0
        figure("engine", "engine enqueue->claim->settle", result.jobs_s, "jobs/s",
               "redis-py pipelined job lives", ceiling.python_jobs_s, spread)
        figure("engine", "engine enqueue->claim->settle", result.jobs_s, "jobs/s",
               "redis-benchmark/8 (server ceiling)", server_jobs)
        figure("engine", "engine enqueue_many alone (chunks of 1000)", enqueue_s, "jobs/s",
               "redis-py pipelined job lives", ceiling.python_jobs_s)
    figure("engine", "engine enqueue->claim->settle", result.jobs_s, "jobs/s", "target", 20_000,
           "PASS" if result.jobs_s >= 20_000 else "BELOW TARGET")
    figure("engine", "engine as shipped (hiredis packs commands)", result.jobs_s, "jobs/s",
           "engine on redis-py's Python packer", median(python_packed).jobs_s)
    note("engine", f"round trips per job: {result.round_trips / result.jobs:.4f} counted by the loop, "
                   f"{result.server_script_calls / result.jobs:.4f} script calls seen by Redis "
                   f"({result.round_trips} / {result.server_script_calls} for {result.jobs:,} jobs)")
    note("engine", f"Redis ran scripts for {result.server_busy_s:.2f} s of the {result.seconds:.2f} s "
                   f"({result.server_busy_s / result.seconds:.0%}); the rest of the time it waited for Python")
    return result


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--claim-batch", type=int, default=256)
    parser.add_argument("--consumers", type=int, default=2)
    args = parser.parse_args(argv)
    with RedisProc() as redis:
        return measure(redis, None, args.quick, args.jobs, args.claim_batch, args.consumers)


if __name__ == "__main__":
    main()
