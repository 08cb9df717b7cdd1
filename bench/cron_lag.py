"""Step 5: cron tick lag: a tick's job arriving at the worker minus the tick's time.

Starts a throwaway redis-server, one ``redisq serve`` and a worker in this process (an
aiohttp server that notes ``time.time()`` on arrival: the clock Redis's ``TIME`` reads
too on one machine). Registers ``--schedules`` (10) ``* * * * * *`` schedules and lets
them tick for ``--seconds`` (20); the tick time is in each job's id
(``<worker>:<schedule>@<tick ms>``). The peer, measured in the same run through the same
coordinator and worker: as many ordinary delayed jobs per second, with ``runAt`` half a
second after each tick (so the two never compete), whose lag is arrival minus ``runAt``,
the core's delayed-job lag (target p99 <= 10 ms). A warm-up burst first opens the
dispatcher's connections to the worker, so that cost falls on neither.

Run alone: ``python -m bench.cron_lag [--quick] [--schedules N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import ClientSession, web

from .e2e import TARGET_LAG_P99_MS, WORKER, write_config
from .procs import Coordinator, RedisProc, free_port, start_local_worker
from .report import figure, progress, run


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]

    return {"n": len(ordered), "p50": at(0.50), "p99": at(0.99), "max": ordered[-1]}


async def measure_async(schedules: int, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    tick_lags: list[float] = []
    delayed_lags: list[float] = []
    warmed: list[str] = []

    async def arrive(request: web.Request) -> web.Response:
        at_ms = time.time() * 1000
        body = await request.json()
        if body["args"].get("warmUp"):
            warmed.append(body["jobId"])
        elif body["jobId"].startswith(f"{WORKER}:cron-"):
            tick_lags.append(at_ms - int(body["jobId"].rsplit("@", 1)[1]))
        else:
            delayed_lags.append(at_ms - body["args"]["dueAt"])
        return web.json_response({"ok": True})

    worker_url, runner = await start_local_worker(arrive)
    try:
        with RedisProc() as redis:
            config = write_config(redis.url, worker_url, free_port(), {})
            with Coordinator(config) as coordinator:
                async with ClientSession() as session:
                    # Warm up: the first calls open the dispatcher's connections to the worker;
                    # that cost would fall on whichever kind of job came first.
                    async with session.post(f"{coordinator.url}/jobs", json={"jobs": [
                            {"worker": WORKER, "args": {"warmUp": True}} for _ in range(schedules)]}) as resp:
                        assert resp.status == 201, await resp.text()
                    while len(warmed) < schedules:
                        await asyncio.sleep(0.01)
                    for n in range(schedules):
                        async with session.post(f"{coordinator.url}/job", json={
                                "worker": WORKER, "id": f"cron-{n}", "cron": "* * * * * *"}) as resp:
                            assert resp.status == 201, await resp.text()
                    first_s = int(time.time()) + 1
                    jobs = [{"worker": WORKER, "runAt": s + 0.5, "args": {"dueAt": (s + 0.5) * 1000}}
                            for s in range(first_s, first_s + int(seconds)) for _ in range(schedules)]
                    async with session.post(f"{coordinator.url}/jobs", json={"jobs": jobs}) as resp:
                        assert resp.status == 201, await resp.text()
                    progress(f"  {schedules} schedules ticking every second for {seconds:g} s, "
                             f"{len(jobs)} delayed jobs beside them")
                    await asyncio.sleep(seconds + 1.0)
                    for n in range(schedules):
                        async with session.delete(f"{coordinator.url}/schedule/{WORKER}:cron-{n}") as resp:
                            assert resp.status == 200, await resp.text()
                    await asyncio.sleep(1.0)
    finally:
        await runner.cleanup()
    return percentiles(tick_lags), percentiles(delayed_lags)


def measure(quick: bool, schedules: int | None = None,
            seconds: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    schedules = schedules or 10
    seconds = seconds or (8.0 if quick else 20.0)
    progress(f"[5/6] cron: tick lag, {schedules} schedules x {seconds:g} s, 1 coordinator")
    ticks, delayed = run(lambda: measure_async(schedules, seconds))
    if ticks.get("n"):
        for key in ("p50", "p99", "max"):
            figure("cron", f"tick lag {key} ({ticks['n']} ticks)", ticks[key], "ms",
                   f"delayed-job lag {key}, same run", delayed.get(key, float("nan")),
                   f"{delayed.get('n', 0)} delayed jobs")
        figure("cron", "tick lag p99", ticks["p99"], "ms", "target", TARGET_LAG_P99_MS,
               "PASS" if ticks["p99"] <= TARGET_LAG_P99_MS else "ABOVE TARGET")
    return ticks, delayed


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.cron_lag")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--schedules", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args(argv)
    return measure(args.quick, args.schedules, args.seconds)


if __name__ == "__main__":
    main()
