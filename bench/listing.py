"""Step 8: what a listing page costs (``GET /jobs``, ``lua/list.lua``) as the state grows.

A page of 100 dead jobs with 210 (the fewest that fill a page half-way in) and with
1,000,000 dead jobs in the state, first page and a page deep in (by cursor, from half-way
through the state): the script's own time in
Redis (``INFO commandstats`` of EVALSHA) and the call's wall time through the engine,
medians of 200 pages. The target is a ratio <= 2: a page costs O(log n + page).

The dead jobs are written straight into Redis as the scripts would leave them (job hash,
the state's index, the finished zset, the counter), 10,000 to a pipeline.

Run alone: ``python -m bench.listing [--quick]`` (--quick: 100,000 instead of 1,000,000).
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis.asyncio as aioredis

from redisq.config import Config, WorkerConfig
from redisq.engine import Engine
from redisq.engine.listings import encode_cursor
from redisq.job_fields import stored_job_fields
from redisq.model import JobState

from .procs import RedisProc
from .report import figure, note, progress, run

WORKER = "send-email"
PAGE = 100
PAGES = 200
TARGET_RATIO = 2.0
SMALL = 2 * PAGE + 10  # "10 jobs", made enough for a full page half-way in


async def fill(client: aioredis.Redis, engine: Engine, count: int) -> None:
    keys = engine.keys(WORKER)
    for start in range(0, count, 10_000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(count, start + 10_000)):
            suffix = f"dead-{n:07d}"
            pipe.hset(keys.job(suffix), mapping=stored_job_fields(
                state="dead", args='{"to":"someone@example.com"}', run_at_ms=1_700_000_000_000,
                attempts=3, max_attempts=3, created_ms=1_700_000_000_000, seq=n + 1,
                finished_ms=1_700_000_000_000 + n, last_error="HTTP 404: not found"))
            pipe.zadd(keys.state_index("dead"), {suffix: 1_700_000_000_000 + n})
        pipe.hincrby(keys.stats, "dead", min(count, start + 10_000) - start)
        await pipe.execute()


async def script_usec(client: aioredis.Redis) -> tuple[int, float]:
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(entry["calls"]), float(entry["usec"])


async def page_cost(url: str, count: int) -> tuple[float, float, float, float]:
    """(Redis us per page, wall us per page) for the first page and for pages from the middle."""
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    engine = Engine(client, Config(workers={WORKER: WorkerConfig(name=WORKER, url="http://127.0.0.1:9/")}))
    worker = engine.worker(WORKER)
    try:
        await fill(client, engine, count)
        await worker.list_jobs(JobState.DEAD, limit=PAGE)  # the script loaded, the limits seeded
        half = count // 2  # a cursor after the job half-way through the state
        cursor = encode_cursor(WORKER, JobState.DEAD, "", str(1_700_000_000_000 + half), f"dead-{half:07d}")
        results = []
        for start_cursor in (None, cursor):
            walls = []
            calls_before, usec_before = await script_usec(client)
            for _ in range(PAGES):
                started = time.perf_counter()
                page = await worker.list_jobs(JobState.DEAD, limit=PAGE, cursor=start_cursor)
                walls.append((time.perf_counter() - started) * 1e6)
                assert len(page.jobs) == PAGE
            calls_after, usec_after = await script_usec(client)
            results += [(usec_after - usec_before) / max(1, calls_after - calls_before), statistics.median(walls)]
        return results[0], results[1], results[2], results[3]
    finally:
        await client.flushdb()
        await client.aclose()


def measure(quick: bool) -> None:
    large = 100_000 if quick else 1_000_000
    progress(f"[8/8] listing: a page of {PAGE} dead jobs with {SMALL} and with {large:,} in the state "
             "(first page, and a page from half-way by cursor)")
    with RedisProc() as redis:
        small = run(lambda: page_cost(redis.url, SMALL))
        big = run(lambda: page_cost(redis.url, large))
    labels = ("first page, Redis time", "first page, wall time", "page half-way in, Redis time",
              "page half-way in, wall time")
    for label, small_value, big_value in zip(labels, small, big, strict=True):
        figure("listing", f"{label}, {large:,} dead", big_value, "us", f"{SMALL} dead", small_value,
               "PASS" if big_value <= TARGET_RATIO * small_value else f"ABOVE {TARGET_RATIO}x")
    note("listing", f"Redis time: the list script's own (INFO commandstats); wall: medians of {PAGES} pages "
                    f"through Engine.list_jobs; the small state holds {SMALL} jobs so that both pages are full")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.listing")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    measure(args.quick)


if __name__ == "__main__":
    main()
