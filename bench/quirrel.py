"""Step 9: redisq beside Quirrel 1.14.1 (HTTP jobs for serverless, on Redis), in one run.

Installs ``quirrel@1.14.1`` with npm into a cache directory (``$REDISQ_BENCH_CACHE``, else
``~/.cache/redisq-bench``; once), then runs Quirrel (``quirrel --redis-url URL --port P
--no-cron``) and one ``redisq serve`` in turns on the same redis-server (flushed between
them) and the same Node sinks, and prints every redisq figure as a ratio to Quirrel's:

* end to end: 10,000 jobs POSTed in batches of 1000 (4 posters), the sink answering at
  once; jobs/s from the first POST until the sink has answered all of them;
* the same with 3,000 jobs and a sink that answers after 100 ms;
* batch enqueue: 20,000 jobs due in an hour, POSTed in batches of 1000 (4 posters); jobs/s
  until the last POST is answered; and Redis memory per waiting job once they are written
  (``used_memory`` of ``INFO memory`` over the flushed server's, divided by the jobs);
* delayed-job lag: 1,000 jobs due over 3 s; arrival at the sink minus the job's due time
  (``args.dueAt``), p99;
* each server's CPU time per job (its processes, all threads, from ``/proc``) over the end
  to end run.

Quirrel takes ``POST /queues/{endpoint}/batch`` with ``[{"body": "...", "delay": ms}]``
(at most 1000 a call) and posts ``body`` to the endpoint; the body here is the same JSON a
redisq job's dispatch carries its args in, so the sink reads ``args.dueAt`` from both.

Run alone: ``python -m bench.quirrel [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import Coordinator, Proc, RedisProc, Sink, _wait_for, free_port, http_json, process_cpu_s
from .report import Deadline, figure, note, progress, run

QUIRREL_VERSION = "1.14.1"
BATCH = 1000
POSTERS = 4
WORKER = "bench"


def cache_dir() -> Path:
    root = Path(os.environ.get("REDISQ_BENCH_CACHE") or Path.home() / ".cache" / "redisq-bench")
    return root / f"quirrel-{QUIRREL_VERSION}"


def install_quirrel() -> Path:
    """The path of Quirrel's ``cli.js``, installed with npm into the cache directory first when missing."""
    where = cache_dir()
    cli = where / "node_modules" / "quirrel" / "cli.js"
    if cli.exists():
        return cli
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH (Quirrel is installed with it)")
    where.mkdir(parents=True, exist_ok=True)
    progress(f"  installing quirrel@{QUIRREL_VERSION} into {where} (once)")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", f"quirrel@{QUIRREL_VERSION}"],
                          cwd=where, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not cli.exists():
        raise RuntimeError(f"npm install quirrel@{QUIRREL_VERSION} failed: {(done.stderr or done.stdout)[-300:]}")
    return cli


class QuirrelProc(Proc):
    """``node cli.js --redis-url URL --host 127.0.0.1 --port P --no-cron --quiet``, telemetry off."""

    name = "quirrel"

    def __init__(self, cli: Path, redis_url: str, ready_timeout_s: float = 30.0):
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH")
        self.port = free_port()
        env = {**os.environ, "DISABLE_TELEMETRY": "1"}
        self._spawn([node, str(cli), "--redis-url", redis_url, "--host", "127.0.0.1", "--port", str(self.port),
                     "--no-cron", "--quiet"], env=env, cwd=cli.parent)
        _wait_for(lambda: http_json(self.port, "GET", "/health", timeout_s=1)[0] == 200, self.proc,  # type: ignore[arg-type]
                  f"quirrel on port {self.port}", ready_timeout_s)

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid) if self.proc else 0.0


# -- what each server is asked: the same jobs, in each one's own API ----------------------
Job = dict[str, Any]  # {"n": int, "due": unix s or None}


def redisq_batch(jobs: list[Job]) -> tuple[str, Any]:
    return "/jobs", {"jobs": [{"worker": WORKER, "args": {"n": j["n"], **({"dueAt": j["due"]} if j["due"] else {})},
                               **({"runAt": j["due"]} if j["due"] else {})} for j in jobs]}


def quirrel_batch(sink_url: str) -> Callable[[list[Job]], tuple[str, Any]]:
    path = "/queues/" + urllib.parse.quote(sink_url, safe="") + "/batch"

    def batch(jobs: list[Job]) -> tuple[str, Any]:
        now = time.time()
        return path, [{"body": json.dumps({"args": {"n": j["n"], **({"dueAt": j["due"]} if j["due"] else {})}}),
                       **({"delay": max(0, round((j["due"] - now) * 1000))} if j["due"] else {})} for j in jobs]
    return batch


async def post_all(base_url: str, jobs: list[Job], batch_of: Callable[[list[Job]], tuple[str, Any]],
                   posters: int = POSTERS) -> None:
    import aiohttp

    batches = [jobs[i:i + BATCH] for i in range(0, len(jobs), BATCH)]

    async def poster(part: list[list[Job]], session: aiohttp.ClientSession) -> None:
        for batch in part:
            path, body = batch_of(batch)
            async with session.post(base_url + path, json=body) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"POST {path[:40]} answered {resp.status}: {(await resp.text())[:200]}")
                await resp.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(poster(batches[k::posters], session) for k in range(posters)))


async def until_answered(sink: Sink, count: int, limit_s: float) -> None:
    deadline = Deadline(limit_s)
    while sink.count() < count:
        if deadline.passed:
            raise RuntimeError(f"the sink answered {sink.count()} of {count} within {limit_s:g} s")
        await asyncio.sleep(0.005)


@dataclass
class Side:
    """One server's figures."""

    name: str
    e2e_jobs_s: float = 0.0
    e2e_cpu_us: float = 0.0
    slow_jobs_s: float = 0.0
    enqueue_jobs_s: float = 0.0
    waiting_job_bytes: float = 0.0
    enqueue_cpu_us: float = 0.0  # the server's CPU per job while it enqueued
    enqueue_redis_cpu_us: float = 0.0  # redis-server's CPU per job meanwhile
    lag_p99_ms: float | None = None
    lag_n: int = 0
    problems: list[str] = field(default_factory=list)


def measure_side(side: Side, base_url: str, cpu_s: Callable[[], float], batch_for: Callable[[Sink], Any],
                 fast: Sink, slow: Sink | None, sizes: dict[str, int], lag_spread_s: float,
                 flush: Callable[[], None], used_memory: Callable[[], int],
                 redis_cpu_s: Callable[[], float]) -> None:
    """The figures of ``sizes`` whose count is not 0 (the 100 ms one needs ``slow``)."""
    def step(what: str, fn: Callable[[], Awaitable[None]]) -> float:
        started = time.perf_counter()
        try:
            run(fn)
        except Exception as e:  # a step that fails is reported, and the others still run
            side.problems.append(f"{what}: {e}")
            return 0.0
        return time.perf_counter() - started

    def jobs(count: int, due: float | None = None) -> list[Job]:
        return [{"n": i, "due": due} for i in range(count)]

    if n := sizes["e2e"]:
        fast.reset()
        cpu0 = cpu_s()
        seconds = step("e2e", lambda: _posted_and_answered(base_url, jobs(n), batch_for(fast), fast, n))
        side.e2e_cpu_us = (cpu_s() - cpu0) / n * 1e6 if seconds else 0.0
        side.e2e_jobs_s = n / seconds if seconds else 0.0
    if (n := sizes["slow"]) and slow is not None:
        slow.reset()
        seconds = step("100 ms worker", lambda: _posted_and_answered(base_url, jobs(n), batch_for(slow), slow, n))
        side.slow_jobs_s = n / seconds if seconds else 0.0
    if n := sizes["enqueue"]:
        flush()
        empty, cpu0, redis_cpu0 = used_memory(), cpu_s(), redis_cpu_s()
        seconds = step("batch enqueue", lambda: post_all(base_url, jobs(n, time.time() + 3600), batch_for(fast)))
        side.enqueue_jobs_s = n / seconds if seconds else 0.0
        side.enqueue_cpu_us = (cpu_s() - cpu0) / n * 1e6 if seconds else 0.0
        side.enqueue_redis_cpu_us = (redis_cpu_s() - redis_cpu0) / n * 1e6 if seconds else 0.0
        side.waiting_job_bytes = (used_memory() - empty) / n if seconds else 0.0
        flush()
    if n := sizes["lag"]:
        fast.reset()
        start = time.time() + 1.0
        lag_jobs = [{"n": i, "due": round(start + i * lag_spread_s / n, 3)} for i in range(n)]
        step("lag", lambda: post_all(base_url, lag_jobs, batch_for(fast), posters=1))
        step("lag", lambda: until_answered(fast, n, lag_spread_s + 15))
        lags = fast.lags()
        side.lag_n = int(lags.get("n") or 0)
        side.lag_p99_ms = None if lags.get("p99Ms") is None else lags["p99Ms"] - fast.clock_offset_s() * 1000


async def _posted_and_answered(base_url: str, jobs: list[Job], batch_of: Any, sink: Sink, count: int) -> None:
    poster = asyncio.ensure_future(post_all(base_url, jobs, batch_of))
    try:
        await until_answered(sink, count, max(60.0, count / 200))
    finally:
        await poster


def redisq_config(redis_url: str, sink_url: str, port: int, path: Path) -> str:
    path.write_text(f'redis_url = "{redis_url}"\npublic_url = "http://127.0.0.1:{port}"\n'
                    'secret = "bench-secret-not-for-production"\n\n'
                    f'[workers.{WORKER}]\nurl = "{sink_url}"\ntimeout = 30\n')
    return str(path)


def measure(quick: bool) -> tuple[Side, Side] | None:
    sizes = ({"e2e": 2_000, "slow": 1_000, "enqueue": 5_000, "lag": 300} if quick else
             {"e2e": 10_000, "slow": 3_000, "enqueue": 20_000, "lag": 1_000})
    lag_spread_s = 3.0
    progress(f"[9] beside Quirrel {QUIRREL_VERSION}: e2e {sizes['e2e']:,} jobs, {sizes['slow']:,} to a 100 ms worker, "
             f"enqueue {sizes['enqueue']:,} due in an hour, lag of {sizes['lag']:,} over {lag_spread_s:g} s")
    try:
        cli = install_quirrel()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"  quirrel not available: {e}", flush=True)
        return None
    quirrel, redisq = Side("quirrel"), Side("redisq")
    with RedisProc() as redis, Sink() as fast, Sink(latency_ms=100) as slow:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)

        def flush() -> None:
            client.flushall()

        def redis_cpu_s() -> float:
            return process_cpu_s(redis.proc.pid) if redis.proc is not None else 0.0

        def used_memory() -> int:
            return int(client.info("memory")["used_memory"])  # type: ignore[index]

        try:
            q = QuirrelProc(cli, redis.url)
            try:
                measure_side(quirrel, f"http://127.0.0.1:{q.port}", q.cpu_s, lambda sink: quirrel_batch(sink.url),
                             fast, slow, sizes, lag_spread_s, flush, used_memory, redis_cpu_s)
            finally:
                q.stop()
            flush()
            measure_redisq(redisq, redis.url, fast, slow, sizes, lag_spread_s, flush, used_memory, redis_cpu_s)
        finally:
            client.close()
    report(quirrel, redisq, sizes)
    return quirrel, redisq


def measure_redisq(side: Side, redis_url: str, fast: Sink, slow: Sink, sizes: dict[str, int], lag_spread_s: float,
                   flush: Callable[[], None], used_memory: Callable[[], int],
                   redis_cpu_s: Callable[[], float]) -> None:
    """As ``measure_side``, with one ``redisq serve`` per sink in turn (a worker's URL is in
    the config): the 100 ms figure from the one whose worker is the slow sink."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="redisq-bench-quirrel-") as tmp:
        for sink, its_sizes in ((fast, {**sizes, "slow": 0}), (slow, {"e2e": 0, "slow": sizes["slow"], "enqueue": 0,
                                                                         "lag": 0})):
            port = free_port()
            coordinator = Coordinator(redisq_config(redis_url, sink.url, port, Path(tmp) / f"{port}.toml"), port=port)
            try:
                measure_side(side, coordinator.url, coordinator.cpu_s, lambda sink: redisq_batch, fast,
                             slow if sink is slow else None, its_sizes, lag_spread_s, flush, used_memory,
                             redis_cpu_s)
            finally:
                coordinator.stop()
            flush()


def report(quirrel: Side, redisq: Side, sizes: dict[str, int]) -> None:
    figure("quirrel", f"end to end, {sizes['e2e']:,} jobs, instant worker", redisq.e2e_jobs_s, "jobs/s", "Quirrel",
           quirrel.e2e_jobs_s, "goal >= 3x")
    figure("quirrel", f"end to end, {sizes['slow']:,} jobs, 100 ms worker", redisq.slow_jobs_s, "jobs/s", "Quirrel",
           quirrel.slow_jobs_s, "goal >= 5x")
    figure("quirrel", f"batch enqueue, {sizes['enqueue']:,} jobs due in an hour", redisq.enqueue_jobs_s, "jobs/s",
           "Quirrel", quirrel.enqueue_jobs_s, "goal >= 5x")
    figure("quirrel", "  server CPU per job, batch enqueue", redisq.enqueue_cpu_us, "us", "Quirrel",
           quirrel.enqueue_cpu_us)
    figure("quirrel", "  redis-server CPU per job, batch enqueue", redisq.enqueue_redis_cpu_us, "us", "Quirrel",
           quirrel.enqueue_redis_cpu_us, "one Redis core: 1 s / this is its ceiling")
    figure("quirrel", "  Redis memory per waiting job", redisq.waiting_job_bytes, "B", "Quirrel",
           quirrel.waiting_job_bytes, "goal <= 0.5x; per structure: step 12")
    if redisq.lag_p99_ms is not None and quirrel.lag_p99_ms is not None:
        figure("quirrel", f"delayed-job lag p99, {sizes['lag']:,} jobs over 3 s", redisq.lag_p99_ms, "ms", "Quirrel",
               quirrel.lag_p99_ms, f"{redisq.lag_n} / {quirrel.lag_n} samples; goal <= 5 ms")
    figure("quirrel", "  server CPU per job, end to end", redisq.e2e_cpu_us, "us", "Quirrel", quirrel.e2e_cpu_us)
    for side in (quirrel, redisq):
        for problem in side.problems:
            note("quirrel", f"{side.name}: {problem}")


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.quirrel")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    return measure(args.quick)


if __name__ == "__main__":
    main()
