"""Step 1: the raw Redis ceiling, on the same throwaway server the engine step uses.

Two figures:

* ``redis-benchmark -P 32`` of ZADD and of HSET (the C client, 50 connections): what the
  server itself does with the primitives a job's life is made of.
* The same primitives from Python (redis-py + hiredis, the engine's client), pipelined:
  a job's life without Lua is at least 8 writes (enqueue: HSET job + ZADD scheduled;
  claim: ZREM scheduled + HSET job + ZADD running; settle: ZREM running + HSET job +
  ZADD finished), sent 1000 jobs to a pipeline. Its jobs/s is the peer of the engine's.

Run alone: ``python -m bench.redis_ceiling [--quick]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from .procs import RedisProc
from .report import figure, note, progress, run

OPS_PER_JOB = 8
CHUNK = 1000


@dataclass
class Ceiling:
    benchmark_ops_s: dict[str, float]  # redis-benchmark, per command
    python_ops_s: float  # redis-py pipelined primitive ops
    python_jobs_s: float  # python_ops_s / OPS_PER_JOB, measured as whole job lives


def redis_benchmark(port: int, requests: int, timeout_s: float = 60.0) -> dict[str, float]:
    """rps of ZADD and HSET by redis-benchmark -P 32; empty when it is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    commands = {
        "ZADD": ["ZADD", "bench:z", "__rand_int__", "m__rand_int__"],
        "HSET": ["HSET", "bench:h:__rand_int__", "state", "scheduled", "args", "n1", "run_at_ms",
                 "1700000000000", "attempts", "0", "timeout_ms", "30000"],
    }
    out: dict[str, float] = {}
    for name, command in commands.items():
        res = subprocess.run(
            [binary, "-h", "127.0.0.1", "-p", str(port), "-P", "32", "-n", str(requests), "-r", "1000000",
             "--csv", *command],
            capture_output=True, text=True, timeout=timeout_s,
        )
        for line in res.stdout.splitlines():
            fields = line.split('","')
            if len(fields) >= 2 and not line.startswith('"test"'):
                out[name] = float(fields[1].strip('"'))
    return out


async def python_pipelined(url: str, jobs: int) -> tuple[float, float]:
    """(ops/s, jobs/s) of the 8 writes of a job's life, pipelined 1000 jobs at a time."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
        scheduled, running, finished = "c:{w}:scheduled", "c:{w}:running", "c:{w}:finished"
        now_ms = int(time.time() * 1000)
        ops = 0
        started = time.perf_counter()
        for start in range(0, jobs, CHUNK):
            ids = [f"{i:012x}" for i in range(start, min(jobs, start + CHUNK))]
            pipe = client.pipeline(transaction=False)
            for i, suffix in enumerate(ids):  # enqueue
                pipe.hset(f"c:{{w}}:job:{suffix}", mapping={
                    "state": "scheduled", "args": '{"n":1}', "run_at_ms": now_ms, "attempts": 0,
                    "max_attempts": 5, "timeout_ms": 30000, "created_ms": now_ms, "seq": start + i})
                pipe.zadd(scheduled, {suffix: now_ms})
            await pipe.execute()
            pipe = client.pipeline(transaction=False)
            for suffix in ids:  # claim
                pipe.zrem(scheduled, suffix)
                pipe.hset(f"c:{{w}}:job:{suffix}",
                          mapping={"state": "running", "attempts": 1, "lease_deadline_ms": now_ms + 30000})
                pipe.zadd(running, {suffix: now_ms + 30000})
            await pipe.execute()
            pipe = client.pipeline(transaction=False)
            for suffix in ids:  # settle
                pipe.zrem(running, suffix)
                pipe.hset(f"c:{{w}}:job:{suffix}",
                          mapping={"state": "succeeded", "finished_ms": now_ms, "settled_attempt": 1})
                pipe.zadd(finished, {suffix: now_ms + 3600000})
            await pipe.execute()
            ops += OPS_PER_JOB * len(ids)
        elapsed = time.perf_counter() - started
        done = await client.zcard(finished)
        if done != jobs:
            raise RuntimeError(f"pipelined ceiling finished {done} of {jobs} jobs")
        await client.flushdb()
        return ops / elapsed, jobs / elapsed
    finally:
        await client.aclose()


def measure(redis: RedisProc, quick: bool) -> Ceiling:
    progress(f"[1/6] raw Redis ceiling: redis-benchmark -P 32 and redis-py pipelines on redis {redis.version()} "
             f"port {redis.port}")
    bench = redis_benchmark(redis.port, 100_000 if quick else 300_000)
    jobs = 20_000 if quick else 50_000
    best_ops, best_jobs = 0.0, 0.0
    rounds = 1 if quick else 2
    for _ in range(rounds):
        ops_s, jobs_s = run(lambda: python_pipelined(redis.url, jobs))
        if jobs_s > best_jobs:
            best_ops, best_jobs = ops_s, jobs_s
    ceiling = Ceiling(bench, best_ops, best_jobs)
    server_ops = min(bench.values()) if bench else 0.0
    if "ZADD" in bench and "HSET" in bench:
        figure("ceiling", "redis-benchmark -P 32 ZADD (server ceiling)", bench["ZADD"], "ops/s",
               "redis-benchmark -P 32 HSET", bench["HSET"])
    if not bench:
        note("ceiling", "redis-benchmark not found: no server-side ceiling")
    figure("ceiling", f"redis-py pipelined primitives ({jobs:,} job lives)", best_ops, "ops/s",
           "redis-benchmark, slower of the two", server_ops, f"best of {rounds}" if rounds > 1 else "")
    figure("ceiling", f"  = job lives at {OPS_PER_JOB} writes each", best_jobs, "jobs/s",
           "redis-benchmark/8", server_ops / OPS_PER_JOB)
    return ceiling


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_ceiling")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with RedisProc() as redis:
        return measure(redis, args.quick)


if __name__ == "__main__":
    main()
