"""A stand-in for Shopify's REST API as a worker URL, in a process of its own (as Shopify
is): a leaky bucket per shop (the job's ``args.shop``) of ``--bucket`` calls leaking
``--leak`` per second, and 429 with Retry-After for a call that would overflow it.

``POST /shopify`` is a call; ``GET /log`` answers what it saw: the times of the calls it
served per shop (``time.monotonic()``, the clock every process on Linux shares), each job's
arrival (``time.time()``), and every 429. Run by ``tests/test_shopify.py``:
``python tests/shopify_server.py --port P [--bucket 40] [--leak 2]``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from aiohttp import web


def make_app(bucket: float, leak_per_s: float) -> web.Application:
    levels: dict[str, tuple[float, float]] = {}  # shop -> (level, at monotonic s)
    calls: dict[str, list[float]] = defaultdict(list)
    wall_arrivals: dict[str, float] = {}
    throttled: list[tuple[str, float]] = []

    async def call(request: web.Request) -> web.Response:
        now, wall = time.monotonic(), time.time()
        body = await request.json()
        shop = body["args"]["shop"]
        level, at = levels.get(shop, (0.0, now))
        level = max(0.0, level - (now - at) * leak_per_s)
        if level + 1 > bucket:
            levels[shop] = (level, now)
            throttled.append((shop, level))
            retry_after_s = (level + 1 - bucket) / leak_per_s
            return web.json_response({"errors": "Exceeded 2 calls per second for api client."}, status=429,
                                     headers={"Retry-After": f"{retry_after_s:.3f}"})
        levels[shop] = (level + 1, now)
        calls[shop].append(now)
        wall_arrivals[body["jobId"]] = wall
        return web.json_response({"ok": True})

    async def log(request: web.Request) -> web.Response:
        return web.json_response({"calls": calls, "wallArrivals": wall_arrivals, "throttled": throttled})

    app = web.Application()
    app.router.add_post("/shopify", call)
    app.router.add_get("/log", log)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", type=float, default=40)
    parser.add_argument("--leak", type=float, default=2.0)
    options = parser.parse_args()
    web.run_app(make_app(options.bucket, options.leak), host="127.0.0.1", port=options.port,
                access_log=None, print=None)


if __name__ == "__main__":
    main()
