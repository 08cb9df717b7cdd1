"""Step 11: the claim's cost when workers share a limit (``[limits.NAME]``).

Ten workers name one shared limit (``rate = 1000, burst = 1000`` per throttle key: no job
waits for tokens, so every claim takes its jobs and the figure is the cost of taking them);
``--ready`` (2,000) jobs over 200 throttle keys, spread over the ten workers, are claimed 10
at a time, the workers in turn. The peer, in the same run on the same Redis: one worker
with the same limits as its own (``rate``/``burst``, what a worker had before shared
limits), the same jobs and keys, claimed 10 at a time. The figure is the claim script's own
time (``INFO commandstats``) and the call's wall time; target <= 1.5x.

Run alone: ``python -m bench.shared_limits [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

from redisq.config import parse_config
from redisq.engine import Engine
from redisq.model import parse_enqueue

from .procs import RedisProc
from .report import figure, note, progress, run
from .throttle import per_claim

TARGET_RATIO = 1.5
KEYS = 200
LIMIT = {"rate": 1000, "burst": 1000}


async def claim_cost(url: str, workers: int, shared: bool, ready: int) -> tuple[float, float]:
    """(Redis µs per claim, wall µs per claim) of ``ready`` jobs claimed 10 at a time by
    ``workers`` workers in turn, naming one shared limit or (``shared`` False) each its own."""
    from redisq.coordinator import connect

    names = [f"sync-{n}" for n in range(workers)]
    settings: dict[str, Any] = {"limits": ["shopify"]} if shared else dict(LIMIT)
    config = parse_config({"redis_url": url, "limits": {"shopify": LIMIT},
                           "workers": {name: {"url": "http://127.0.0.1:9/", **settings} for name in names}})
    client = connect(url)
    store = Engine(client, config)
    try:
        await client.flushdb()
        for start in range(0, ready, 1000):
            await store.enqueue_many([
                parse_enqueue({"worker": names[i % workers], "throttleKey": f"shop-{i % KEYS}"}, config.workers)
                for i in range(start, min(start + 1000, ready))])
        for name in names:  # seeded before the figure
            await store.worker(name).ensure_limits()
        await client.config_resetstat()
        claims = claimed = 0
        started = time.perf_counter()
        while claimed < ready:
            got = len((await store.worker(names[claims % workers]).claim(10)).jobs)
            claims += 1
            claimed += got
            if claims > 10 * ready:
                raise RuntimeError(f"claimed {claimed} of {ready} ready jobs")
        return await per_claim(client, started, claims)
    finally:
        await client.aclose()


def measure(quick: bool, ready: int | None = None) -> None:
    ready = ready or (1000 if quick else 2000)
    progress(f"[11] shared limits: time per claim of {ready:,} jobs (10 per claim) by 10 workers sharing one limit, "
             "and by one worker with its own")
    with RedisProc() as redis:
        rounds = {setup: [run(partial(claim_cost, redis.url, workers, shared, ready)) for _ in range(3)]
                  for setup, (workers, shared) in {"ten": (10, True), "one shared": (1, True),
                                                   "one": (1, False)}.items()}
    medians = {setup: (sorted(r[0] for r in got)[1], sorted(r[1] for r in got)[1]) for setup, got in rounds.items()}
    for i, what in ((0, "Redis time"), (1, "wall time")):
        ten, one = medians["ten"][i], medians["one"][i]
        figure("shared", f"claim, {what}, 10 workers sharing a limit", ten, "us", "1 worker, its own limit", one,
               "PASS" if ten <= TARGET_RATIO * one else f"ABOVE {TARGET_RATIO}x")
        figure("shared", f"claim, {what}, 1 worker naming the limit", medians["one shared"][i], "us",
               "1 worker, its own limit", one, "")
    note("shared", "medians of 3 rounds each; Redis time is the claim script's own (INFO commandstats)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_limits")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ready", type=int)
    args = parser.parse_args(argv)
    measure(args.quick, args.ready)


if __name__ == "__main__":
    main()
