"""Step 4: end to end, through ``redisq serve``: HTTP API -> Redis -> dispatcher -> worker.

Starts a throwaway redis-server, the Node sink and one ``redisq serve --config PATH
--processes N`` for each N of ``--processes`` (1 and 2: N coordinator processes on one
port, sharing the Redis), then:

* Throughput: POSTs ``--jobs`` (20,000) jobs to ``/jobs`` in batches of 1000 (N posters at
  once, to the one port) and counts jobs/s from the first POST until ``ZCARD`` of the
  worker's ``state:succeeded`` index reaches the total. Printed beside the client's requests/s to
  the same kind of sink from step 3 (the client is the dispatcher's limit), the target,
  and for N > 1 beside one process's figure from the same run. The coordinator's CPU time
  over that window (all its processes, all threads, from ``/proc``) divided by the jobs is
  its CPU µs per job.
* Dispatch only: ``--jobs`` more jobs written straight into Redis with
  ``redisq.engine.Engine``, all due 3 s later; jobs/s from that moment until all are
  finished: the dispatchers without the API's enqueue work competing for the process.
* Delayed-job lag: 1,000 jobs with ``runAt`` spread over 5 s (``args.dueAt`` carries the
  same time); the sink computes arrival - dueAt per request and reports p50/p99/max. The
  peer, measured in the same run by the same sink: this process holding the same 1,000
  posts on asyncio timers (``loop.call_at``) and sending each with aiohttp when it is due,
  the lag of an ideal in-memory scheduler on this machine.

When ``redisq serve`` is not there or does not start, prints
``coordinator not available: <reason>`` and returns, so the rest of ``python -m bench``
still runs.

Run alone: ``python -m bench.e2e [--quick] [--processes 1,2] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redisq.keys import WorkerKeys

from .procs import Coordinator, RedisProc, Sink, coordinator_argv, free_port, http_json
from .report import Deadline, figure, note, progress, run

WORKER = "bench"
BATCH = 1000
TARGET_JOBS_S = 6000.0
TARGET_LAG_P99_MS = 10.0


@dataclass
class E2EResult:
    processes: int
    jobs: int
    seconds: float
    enqueue_seconds: float
    jobs_s: float
    dispatch_only_jobs_s: float
    lag: dict[str, Any] | None
    timer_lag: dict[str, Any] | None
    cpu_us_per_job: float = 0.0


class CoordinatorUnavailable(RuntimeError):
    """``redisq serve`` did not start and answer GET /health."""


def unavailable_reason() -> str | None:
    """Why ``redisq serve`` cannot be run, or None when it looks runnable."""
    if importlib.util.find_spec("redisq.cli") is None:
        return "src/redisq/cli.py does not exist yet"
    try:
        res = subprocess.run([*coordinator_argv(), "serve", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`redisq serve --help` failed: {e}"
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return f"`redisq serve --help` exited {res.returncode}: {tail[0]}"
    return None


def write_config(redis_url: str, sink_url: str, port: int, extra: dict[str, Any]) -> str:
    lines = [
        f'redis_url = "{redis_url}"',
        f'public_url = "http://127.0.0.1:{port}"',
        'secret = "bench-secret-not-for-production"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "",
        f"[workers.{WORKER}]",
        f'url = "{sink_url}"',
        "timeout = 30",
    ]
    with tempfile.NamedTemporaryFile("w", prefix="redisq-bench-", suffix=".toml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    return f.name


async def post_batches(session: Any, base_url: str, batches: list[list[dict[str, Any]]]) -> int:
    created = 0
    for batch in batches:
        async with session.post(f"{base_url}/jobs", json={"jobs": batch}) as resp:
            body = await resp.json(content_type=None)
            if resp.status not in (200, 201):
                raise RuntimeError(f"POST /jobs answered {resp.status}: {str(body)[:200]}")
            created += int(body.get("created", 0))
    return created


async def throughput(redis_url: str, coordinator: Coordinator, posters: int, jobs: int,
                     limit_s: float) -> tuple[float, float, list[str]]:
    """(seconds until all finished, seconds until all were enqueued, two job ids to check)."""
    import aiohttp
    import redis.asyncio as aioredis

    finished_key = WorkerKeys(WORKER).state_index("succeeded")
    client = aioredis.Redis.from_url(redis_url)
    batches = [[{"worker": WORKER, "args": {"n": i + j}} for j in range(min(BATCH, jobs - i))]
               for i in range(0, jobs, BATCH)]
    per_poster = [batches[k::posters] for k in range(posters)]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            started = time.perf_counter()
            enqueue_done = 0.0

            async def enqueue_all() -> None:
                nonlocal enqueue_done
                await asyncio.gather(*(post_batches(session, coordinator.url, part) for part in per_poster))
                enqueue_done = time.perf_counter() - started

            poster = asyncio.ensure_future(enqueue_all())
            deadline = Deadline(limit_s)
            done = 0
            while not deadline.passed:
                done = await client.zcard(finished_key)
                if done >= jobs:
                    break
                if poster.done() and poster.exception() is not None:
                    raise poster.exception()  # type: ignore[misc]
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            await poster
            if done < jobs:
                raise RuntimeError(f"only {done} of {jobs} jobs finished within {limit_s:g} s")
            ids = [m.decode() for m in await client.zrange(finished_key, 0, 0)] + \
                  [m.decode() for m in await client.zrange(finished_key, -1, -1)]
            return elapsed, enqueue_done, [f"{WORKER}:{suffix}" for suffix in ids]
    finally:
        await client.aclose()


async def dispatch_only(redis_url: str, sink_url: str, jobs: int, lead_s: float, limit_s: float) -> float:
    """jobs/s of the dispatchers alone: ``jobs`` enqueued straight into Redis with
    redisq.engine.Engine, all due ``lead_s`` from now; counted from that moment until all
    are finished. Returns jobs/s."""
    import redis.asyncio as aioredis

    from redisq.config import Config, WorkerConfig
    from redisq.engine import Engine
    from redisq.model import EnqueueRequest, new_job_suffix

    client = aioredis.Redis.from_url(redis_url)
    worker = WorkerConfig(name=WORKER, url=sink_url)
    store = Engine(client, Config(redis_url=redis_url, workers={WORKER: worker}))
    finished_key = WorkerKeys(WORKER).state_index("succeeded")
    try:
        before = await client.zcard(finished_key)
        now_ms = int((await client.time())[0]) * 1000  # the engine's clock is the Redis server's
        due_ms = now_ms + int(lead_s * 1000)
        requests = [EnqueueRequest(worker=WORKER, suffix=new_job_suffix(), args_json=f'{{"n":{i}}}', run_at_ms=due_ms,
                                   delay_ms=0, max_attempts=5, timeout_ms=30_000) for i in range(jobs)]
        for start in range(0, jobs, BATCH):
            await store.enqueue_many(requests[start:start + BATCH])
        seconds, micros = await client.time()
        wait_s = due_ms / 1000 - (int(seconds) + int(micros) / 1e6)
        if wait_s <= 0:
            raise RuntimeError(f"enqueueing {jobs} jobs took longer than the {lead_s:g} s lead")
        await asyncio.sleep(wait_s)
        started = time.perf_counter()
        deadline = Deadline(limit_s)
        done = before
        while not deadline.passed:
            done = await client.zcard(finished_key)
            if done >= before + jobs:
                break
            await asyncio.sleep(0.005)
        if done < before + jobs:
            raise RuntimeError(f"dispatch-only: {done - before} of {jobs} jobs finished within {limit_s:g} s")
        return jobs / (time.perf_counter() - started)
    finally:
        await client.aclose()


async def delayed(coordinator: Coordinator, posters: int, count: int, spread_s: float) -> None:
    """Enqueue ``count`` jobs due over ``spread_s``, starting 1 s from now."""
    import aiohttp

    start = time.time() + 1.0
    jobs = []
    for i in range(count):
        due = round(start + i * spread_s / count, 3)  # the engine keeps run_at in ms
        jobs.append({"worker": WORKER, "runAt": due, "args": {"dueAt": due, "n": i}})
    batches = [jobs[i:i + BATCH] for i in range(0, count, BATCH)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(post_batches(session, coordinator.url, batches[k::posters]) for k in range(posters)))


async def timer_peer(sink_url: str, count: int, spread_s: float) -> None:
    """The ideal scheduler: each post held on an asyncio timer and sent with aiohttp when due
    (never before: a timer that fires early is set again for the rest)."""
    from redisq.transport import AiohttpTransport

    transport = AiohttpTransport(max_connections=128)
    loop = asyncio.get_running_loop()
    start = time.time() + 1.0
    offset = loop.time() - time.time()  # unix seconds -> loop time
    tasks: list[asyncio.Future[Any]] = []

    def fire(due: float, n: int) -> None:
        early_s = due - time.time()
        if early_s > 0:  # loop timers have ms granularity; a job must never go early
            loop.call_later(early_s, fire, due, n)
            return
        body = json.dumps({"jobId": f"{WORKER}:{n}", "worker": WORKER, "attempt": 1,
                           "args": {"dueAt": due, "n": n}}).encode()
        tasks.append(asyncio.ensure_future(transport.post(sink_url, body, {"content-type": "application/json"}, 10.0)))

    try:
        # Warm the connections first, as a running dispatcher's pool would be.
        await asyncio.gather(*(transport.post(sink_url, b"{}", {}, 10.0) for _ in range(16)))
        for i in range(count):
            due = round(start + i * spread_s / count, 3)
            loop.call_at(due + offset, fire, due, i)
        await asyncio.sleep(max(0.0, start + spread_s - time.time()) + 0.5)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    finally:
        await transport.close()


async def wait_for_lags(sink: Sink, count: int, limit_s: float) -> dict[str, Any]:
    """The sink's lag figures once ``count`` samples are in (or time is up), corrected for
    the offset between the sink's clock and this process's (dueAt was computed here)."""
    deadline = Deadline(limit_s)
    while not deadline.passed:
        status, body = sink.get("/count")
        if status == 200 and body.get("lagSamples", 0) >= count:
            break
        await asyncio.sleep(0.1)
    lags = sink.lags()
    offset_ms = sink.clock_offset_s() * 1000
    for key in ("p50Ms", "p99Ms", "maxMs", "minMs"):
        if lags.get(key) is not None:
            lags[key] -= offset_ms
    lags["clockOffsetMs"] = offset_ms
    return lags


def run_once(processes: int, jobs: int, lag_jobs: int, lag_spread_s: float, extra_config: dict[str, Any],
             sink_latency_ms: float = 0.0) -> E2EResult:
    with RedisProc() as redis, Sink(latency_ms=sink_latency_ms) as sink:
        port = free_port()
        config = write_config(redis.url, sink.url, port, extra_config)
        coordinator: Coordinator | None = None
        try:
            try:
                coordinator = Coordinator(config, port=port, processes=processes)
            except RuntimeError as e:
                raise CoordinatorUnavailable(str(e)) from None
            cpu_before = coordinator.cpu_s()
            seconds, enqueue_s, ids = run(
                lambda: throughput(redis.url, coordinator, processes, jobs, limit_s=max(60.0, jobs / 500)))
            cpu_us_per_job = (coordinator.cpu_s() - cpu_before) / jobs * 1e6
            states = [http_json(port, "GET", f"/job/{job_id}")[1].get("state") for job_id in ids]
            if any(state != "succeeded" for state in states):
                raise RuntimeError(f"jobs {ids} finished as {states}, expected succeeded")
            dispatch_s = run(lambda: dispatch_only(redis.url, sink.url, jobs, 3.0, max(60.0, jobs / 500)))
            lag: dict[str, Any] | None = None
            timer: dict[str, Any] | None = None
            if lag_jobs:
                sink.reset()
                run(lambda: delayed(coordinator, processes, lag_jobs, lag_spread_s))
                lag = run(lambda: wait_for_lags(sink, lag_jobs, lag_spread_s + 15))
                coordinator.stop()  # the peer runs with the coordinator stopped
                sink.reset()
                run(lambda: timer_peer(sink.url, lag_jobs, lag_spread_s))
                timer = run(lambda: wait_for_lags(sink, lag_jobs, 10))
            return E2EResult(processes, jobs, seconds, enqueue_s, jobs / seconds, dispatch_s, lag, timer,
                             cpu_us_per_job)
        finally:
            if coordinator is not None:
                coordinator.stop()
            Path(config).unlink(missing_ok=True)


def measure(quick: bool, references: list[tuple[str, float]] | None, processes: list[int], jobs: int | None = None,
            extra_config: dict[str, Any] | None = None, sink_latency_ms: float = 0.0,
            client_cpu_us: float = 0.0) -> list[E2EResult]:
    jobs = jobs or (5_000 if quick else 20_000)
    lag_jobs, lag_spread_s = (500, 2.5) if quick else (1_000, 5.0)
    progress(f"[4/6] end to end: redisq serve x{processes} processes, {jobs:,} jobs via POST /jobs, "
             f"then {lag_jobs:,} delayed jobs over {lag_spread_s:g} s")
    reason = unavailable_reason()
    if reason:
        print(f"  coordinator not available: {reason}", flush=True)
        return []
    if not references:
        from .http_client import count_at_sink, python_child

        client = (extra_config or {}).get("http_client", "native")
        with Sink() as sink:
            rps, _, client_cpu_us = count_at_sink(sink, client, python_child(client, sink.url, 128, True), 2.0, 0.5)
        references = [(f"{client} @128 (measured here)", rps)]
    results = []
    for n in processes:
        try:
            result = run_once(n, jobs, lag_jobs, lag_spread_s, extra_config or {}, sink_latency_ms)
        except CoordinatorUnavailable as e:
            print(f"  coordinator not available: {e}", flush=True)
            continue
        except RuntimeError as e:
            print(f"  e2e with {n} process(es) failed: {e}", flush=True)
            continue
        results.append(result)
        label = f"{n} process{'es' if n > 1 else ''}"
        for i, (ref_label, ref_rps) in enumerate(references):
            figure("e2e", f"e2e {jobs:,} jobs, {label}", result.jobs_s, "jobs/s", ref_label, ref_rps,
                   "" if i else f"POSTs answered after {result.enqueue_seconds:.2f} s of {result.seconds:.2f} s")
        figure("e2e", f"e2e {jobs:,} jobs, {label}", result.jobs_s, "jobs/s", "target", TARGET_JOBS_S,
               "PASS" if result.jobs_s >= TARGET_JOBS_S else "BELOW TARGET")
        if n > 1 and results[0].processes == 1:
            figure("e2e", f"e2e {jobs:,} jobs, {label}", result.jobs_s, "jobs/s", "1 process, same run",
                   results[0].jobs_s)
        figure("e2e", f"  coordinator CPU per job, {label}", result.cpu_us_per_job, "us",
               "1 process, same run" if n > 1 and results[0].processes == 1 else "the client's CPU per request",
               results[0].cpu_us_per_job if n > 1 and results[0].processes == 1 else client_cpu_us,
               f"all {n + (n > 1)} processes of serve" if n > 1 else "")
        figure("e2e", f"  dispatch only ({jobs:,} due at once), {label}", result.dispatch_only_jobs_s, "jobs/s",
               references[0][0], references[0][1], "no API traffic while it runs")
        if result.lag and result.lag.get("n"):
            lag, timer = result.lag, result.timer_lag or {}
            ok = lag["n"] >= lag_jobs and lag["p99Ms"] <= TARGET_LAG_P99_MS
            figure("e2e", f"delayed-job lag p99 ({lag['n']} jobs), {label}", lag["p99Ms"], "ms", "target",
                   TARGET_LAG_P99_MS, "PASS" if ok else "ABOVE TARGET" if lag["n"] >= lag_jobs else "MISSING JOBS")
            if lag.get("minMs") is not None and lag["minMs"] < -1.0:
                note("e2e", f"a delayed job reached the sink {-lag['minMs']:.2f} ms before its runAt ({label})")
            if timer.get("n"):
                for key in ("p50Ms", "p99Ms", "maxMs"):
                    figure("e2e", f"  lag {key[:-2]}, {label}", lag[key], "ms", "asyncio timer + aiohttp", timer[key],
                           f"{lag['n']} / {timer['n']} samples; sink clock offset {lag['clockOffsetMs']:+.3f} ms"
                           if key == "p50Ms" else "")
        else:
            note("e2e", f"no delayed job reached the sink ({label})")
    return results


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", default=None, help="coordinator processes, e.g. 1 or 2 or 1,2")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--max-in-flight", type=int, help="the coordinators' max_in_flight (default: redisq's)")
    parser.add_argument("--claim-batch", type=int, help="the coordinators' claim_batch (default: redisq's)")
    parser.add_argument("--sink-latency-ms", type=float, default=0.0, help="the sink answers after this long")
    parser.add_argument("--http-client", help="the coordinators' http_client (default: redisq's)")
    args = parser.parse_args(argv)
    processes = [int(x) for x in (args.processes or ("1" if args.quick else "1,2")).split(",")]
    extra = {k: v for k, v in (("max_in_flight", args.max_in_flight), ("claim_batch", args.claim_batch),
                               ("http_client", args.http_client)) if v}
    return measure(args.quick, None, processes, args.jobs, extra, args.sink_latency_ms)


if __name__ == "__main__":
    main()
