"""Step 12: what a job costs in Redis memory, waiting, running and finished.

On a throwaway redis-server, ``Engine.enqueue_many`` writes N jobs (``--quick``: fewer) of
one worker with small args (``{"n": i}``), half of them without a throttle key and half
spread over 100 keys; then a claim takes every one of them (running), then a settle ends
them all (succeeded). After each stage it reads ``used_memory`` (``INFO memory``, minus the
empty server's) and, as ``redis-cli --bigkeys --memkeys`` does, ``MEMORY USAGE`` of every
key (``SAMPLES 0``: the whole key), summed by the structure it is (``WorkerKeys``): job
hashes, history lists, throttle-key queues, state indexes, the running zset,
the event stream and the rest. Every figure is bytes per job.

Beside it, in the same run on the same server: the least a waiting job can take in Redis
without redisq, one hash holding its args and due time and one sorted-set entry of its id
by that time (the shape of Quirrel's and most Redis queues' waiting jobs), written from a
redis-py pipeline. Step 9 puts Quirrel's own figure beside redisq's.

Run alone: ``python -m bench.footprint [--quick] [--jobs N]``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

from .procs import RedisProc
from .report import figure, note, progress, run

WORKER = "bench"
THROTTLE_KEYS = 100
MEMORY_STAGES = ("waiting", "running", "finished")


def structure(key: str, tag: str) -> str:
    """The part of the layout a key of the worker is (``redisq.keys.WorkerKeys``)."""
    rest = key[len(tag) + 1:] if key.startswith(tag + ":") else key
    head, _, tail = rest.partition(":")
    if head in ("job", "history"):
        return f"{head} hashes" if head == "job" else "history lists"
    if head == "queue":
        return "throttle-key queues" if tail else "queue (no throttle key)"
    if head == "state":
        state, _, throttle_key = tail.partition(":")
        return f"state index {state}" + (" (per key)" if throttle_key else "")
    if head in ("running", "finished", "events", "keys"):
        return {"keys": "throttle keys zset"}.get(head, head)
    return "other"


async def used_memory(client: Any) -> int:
    return int((await client.info("memory"))["used_memory"])


async def by_structure(client: Any, tag: str) -> dict[str, int]:
    sizes: dict[str, int] = defaultdict(int)
    async for key in client.scan_iter(count=1000):
        name = key.decode()
        sizes[structure(name, tag)] += int(await client.memory_usage(name, samples=0) or 0)
    return dict(sizes)


async def measure_redisq(url: str, jobs: int) -> dict[str, tuple[int, dict[str, int]]]:
    import redis.asyncio as redis_asyncio

    from redisq.config import parse_config
    from redisq.engine import Engine, Receipt
    from redisq.keys import WorkerKeys
    from redisq.model import parse_enqueue

    client = redis_asyncio.Redis.from_url(url)
    config = parse_config({"workers": {WORKER: {"url": "http://127.0.0.1:9/x"}}})
    engine = Engine(client, config)
    tag = WorkerKeys(WORKER).tag
    stages: dict[str, tuple[int, dict[str, int]]] = {}
    try:
        await client.flushall()
        empty = await used_memory(client)
        requests = [parse_enqueue({"worker": WORKER, "args": {"n": i},
                                   **({"throttleKey": f"shop-{i % THROTTLE_KEYS}"} if i % 2 else {})}, config.workers)
                    for i in range(jobs)]
        for start in range(0, jobs, 1000):
            await engine.enqueue_many(requests[start:start + 1000])
        stages["waiting"] = (await used_memory(client) - empty, await by_structure(client, tag))
        worker = config.workers[WORKER]
        claimed = []
        while len(claimed) < jobs:
            batch = (await engine.claim(worker, 1000)).jobs
            if not batch:
                raise RuntimeError(f"claimed {len(claimed)} of {jobs} jobs")
            claimed += batch
        stages["running"] = (await used_memory(client) - empty, await by_structure(client, tag))
        for start in range(0, jobs, 1000):
            await engine.settle(worker, [Receipt(j.suffix, j.attempt, "success", seq=j.seq)
                                         for j in claimed[start:start + 1000]])
        stages["finished"] = (await used_memory(client) - empty, await by_structure(client, tag))
        await client.flushall()
    finally:
        await client.aclose()
    return stages


async def measure_least(url: str, jobs: int) -> float:
    """Bytes per job of one hash (args, due time) and one zset entry (id by due time) per job."""
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(url)
    try:
        await client.flushall()
        empty = await used_memory(client)
        for start in range(0, jobs, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(jobs, start + 1000)):
                job_id = f"{i:020x}"
                pipe.hset(f"q:job:{job_id}", mapping={"args": f'{{"n":{i}}}', "run_at": 1798761600000 + i})
                pipe.zadd("q:scheduled", {job_id: 1798761600000 + i})
            await pipe.execute()
        used = await used_memory(client) - empty
        await client.flushall()
    finally:
        await client.aclose()
    return used / jobs


def measure(quick: bool, jobs: int | None = None) -> dict[str, Any]:
    jobs = jobs or (5_000 if quick else 50_000)
    progress(f"[12] Redis memory per job: {jobs:,} jobs, half of them over {THROTTLE_KEYS} throttle keys, "
             "waiting, running and finished")
    with RedisProc() as redis:
        least = run(lambda: measure_least(redis.url, jobs))
        stages = run(lambda: measure_redisq(redis.url, jobs))
    for stage in MEMORY_STAGES:
        used, sizes = stages[stage]
        figure("footprint", f"used_memory per {stage} job", used / jobs, "B", "hash + zset entry", least,
               "goal <= 0.5x Quirrel's, step 9" if stage == "waiting" else "")
        for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
            if size / jobs >= 0.5:
                note("footprint", f"  {stage}: {name:<40} {size / jobs:>8,.1f} B/job")
    return {"least_b": least, **{stage: used / jobs for stage, (used, _) in stages.items()}}


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    args = parser.parse_args(argv)
    return measure(args.quick, args.jobs)


if __name__ == "__main__":
    main()
