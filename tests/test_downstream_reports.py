"""Buckets that follow what the downstream reports, end to end: three redisq workers share
``[limits.shopify]`` and call a stand-in that charges each call what it really cost and
says what is left (``tests/downstream_server.py``), as a worker reading Shopify's answer
would report it with ``ctx.report_cost``; three ``redisq serve`` processes on one Redis.

- GraphQL's 1,000 points restoring at 50/s per shop, each call asking for 10 points and
  costing 2 to 10: no call throttled, and each shop's points used at 50/s (within 2%),
  which only the refunds allow (at 10 points a call, redisq alone would use about 30/s).
- REST's 40 calls leaking 2/s, with the app's own calls outside redisq using half of each
  shop's leak: no 429 of redisq's calls (without the reports redisq would send at its 2/s
  into a bucket that the app's calls fill too). The app's calls race redisq's for what
  leaks; redisq does not promise them room.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from test_resilience import client, start_redis  # noqa: F401
from test_shared_shopify import JOB_TYPES, start_coordinators
from test_shopify import SHOPS, ShopifyWorker


class Downstream(ShopifyWorker):
    """``tests/downstream_server.py`` in a process of its own (started and ended as
    ``ShopifyWorker``), and what it saw. A context manager."""

    def __init__(self, *args: str):
        super().__init__()
        self._args = [sys.executable, str(Path(__file__).with_name("downstream_server.py")), "--port", str(self.port),
                      *args]

    def log(self) -> dict[str, Any]:
        resp = self._http.get(f"http://127.0.0.1:{self.port}/log")
        resp.raise_for_status()
        return resp.json()

    def wait_served(self, count: int, within_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            log = self.log()
            served = sum(len(calls) for calls in log["calls"].values())
            if served >= count:
                return log
            assert time.monotonic() < deadline, f"{served} of {count} calls served within {within_s} s"
            time.sleep(0.2)


def enqueue(client: httpx.Client, base_url: str, per_type: int, cost: float | None = None) -> int:
    rng = random.Random(15)
    jobs = []
    for job_type in JOB_TYPES:
        for n in range(per_type):
            for shop in SHOPS:
                args: dict[str, Any] = {"shop": shop, "n": n}
                body: dict[str, Any] = {"worker": job_type, "throttleKey": shop, "args": args}
                if cost is not None:  # asks for `cost` points, costs 2 to `cost` (seeded)
                    args.update(requested=cost, actual=rng.randint(2, int(cost)))
                    body["cost"] = cost
                jobs.append(body)
    for start in range(0, len(jobs), 1000):
        resp = client.post(f"{base_url}/jobs", json={"jobs": jobs[start:start + 1000]})
        assert resp.status_code == 201, resp.text
    return len(jobs)


GRAPHQL_POINTS, GRAPHQL_RESTORE_PER_S, REQUESTED = 1000, 50.0, 10
GRAPHQL_PER_TYPE = 110  # per shop: 330 calls of 6 points on average, 1,000 at once then 50/s: about 20 s


def test_graphql_costs_reported_back_keep_each_shop_at_50_points_a_second_and_never_throttled(
        tmp_path, client, processes):
    server = start_redis(processes)
    with Downstream("--mode", "graphql", "--size", str(GRAPHQL_POINTS), "--restore", str(GRAPHQL_RESTORE_PER_S)) as api:
        coordinators = start_coordinators(tmp_path, client, processes, server.url, api.url, count=3,
                                          limit={"rate": GRAPHQL_RESTORE_PER_S, "burst": GRAPHQL_POINTS})
        total = enqueue(client, coordinators[0].base_url, GRAPHQL_PER_TYPE, cost=REQUESTED)
        log = api.wait_served(total, within_s=120)
    assert log["throttled"] == [], f"{len(log['throttled'])} calls throttled: {log['throttled'][:5]}"
    for shop in SHOPS:
        calls = sorted(log["calls"][shop])
        # After its burst the shop's level settles near the lowest it reaches (below it when
        # the first answers came back out of the order their calls were sent: redisq then
        # counted a call twice, and keeps below the downstream by that much, never above).
        # Paced from the first call that leaves it within one call of that: from there the
        # points used over the span are the points restored in it, within one call's 10.
        lowest = min(level for _, _, level in calls)
        start = next(i for i, (_, _, level) in enumerate(calls) if level < lowest + REQUESTED)
        paced = calls[start:]
        span_s = paced[-1][0] - paced[0][0]
        used_per_s = sum(cost for _, cost, _ in paced[1:]) / span_s
        print(f"{shop}: {len(calls)} calls, paced {len(paced)} over {span_s:.1f} s at a level of {lowest:.0f} to "
              f"{lowest + REQUESTED:.0f}: {used_per_s:.2f} points/s")
        assert span_s > 15, span_s
        assert abs(used_per_s - GRAPHQL_RESTORE_PER_S) <= 0.02 * GRAPHQL_RESTORE_PER_S, (shop, used_per_s)


REST_PER_TYPE = 20  # per shop: 60 calls, 39 at once, then about 1/s (the app's own calls take the rest)


def test_the_apps_own_calls_using_half_of_each_shops_bucket_get_redisqs_calls_no_429(tmp_path, client, processes):
    server = start_redis(processes)
    with Downstream("--mode", "rest", "--size", "40", "--restore", "2", "--outside", "1") as api:
        coordinators = start_coordinators(tmp_path, client, processes, server.url, api.url, count=3,
                                          limit={"rate": 2, "burst": 39})
        total = enqueue(client, coordinators[0].base_url, REST_PER_TYPE)
        log = api.wait_served(total, within_s=90)
    assert log["throttled"] == [], f"{len(log['throttled'])} calls got a 429: {log['throttled'][:5]}"
    for shop in SHOPS:  # seen with pytest -s
        times = sorted(t for t, _, _ in log["calls"][shop])
        paced = times[39:]
        print(f"{shop}: {len(times)} calls, then {(len(paced) - 1) / (paced[-1] - paced[0]):.3f}/s beside the "
              f"app's own {log['outside'][shop]} calls ({log['outsideRefused'].get(shop, 0)} refused)")
