"""A downstream API that says what it charged and what is left, as a worker URL in a process
of its own (``tests/shopify_server.py``'s server, another bucket): per shop (the job's
``args.shop``) a bucket of ``--size`` points restoring ``--restore`` per second.

- ``--mode graphql``: Shopify GraphQL's cost model. A call asks for ``args.requested``
  points and is throttled (429) when more than that is not available; it then costs
  ``args.actual`` (less, usually). Every answer reports the actual cost and the level left
  (``X-Redisq-Cost``, ``X-Redisq-Available``), as a worker that read
  ``extensions.cost`` would.
- ``--mode rest --outside R``: Shopify REST's 40 calls leaking 2/s, and the app's own calls
  made outside redisq, R per second per shop from its first call on (counted here, a 429
  of theirs dropped). Every answer reports the level left and the bucket's size
  (``X-Redisq-Available``, ``X-Redisq-Bucket-Size``), as ``X-Shopify-Shop-Api-Call-Limit``
  says it. The app's calls race redisq's for what leaks: one that does not fit is the
  app's own 429 (counted, not retried).

Calls are counted at their arrival (the kernel's stamp), in the order they are read.
``GET /log``: per shop the (time, cost, level after) of each call it served, every throttled call as
(shop, level), each job's arrival. Run by ``tests/test_downstream_reports.py``.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from typing import Any

from shopify_server import Server

EPSILON = 1e-9


class PointsStandIn:
    def __init__(self, mode: str, size: float, restore_per_s: float, outside_per_s: float = 0.0):
        self.mode, self.size, self.restore_per_s, self.outside_per_s = mode, size, restore_per_s, outside_per_s
        self.level: dict[str, float] = {}  # shop -> points available
        self.at: dict[str, float] = {}  # shop -> when its level was
        self.outside_from: dict[str, float] = {}  # shop -> its first call (the app's own calls start then)
        self.outside_done: dict[str, int] = defaultdict(int)
        self.outside_refused: dict[str, int] = defaultdict(int)
        self.calls: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # (time, cost, level after)
        self.throttled: list[tuple[str, float]] = []
        self.wall_arrivals: dict[str, float] = {}

    def _advance(self, shop: str, to: float) -> None:
        """The shop's level at ``to``: restored, less the app's own calls made until then."""
        if shop not in self.level:
            self.level[shop], self.at[shop], self.outside_from[shop] = self.size, to, to
        while self.outside_per_s:
            next_outside = self.outside_from[shop] + self.outside_done[shop] / self.outside_per_s
            if next_outside > to:
                break
            self._restore(shop, next_outside)
            if self.level[shop] >= 1 - EPSILON:
                self.level[shop] -= 1
            else:
                self.outside_refused[shop] += 1  # the app's own 429
            self.outside_done[shop] += 1
        self._restore(shop, to)

    def _restore(self, shop: str, to: float) -> None:
        elapsed = max(0.0, to - self.at[shop])
        self.level[shop] = min(self.size, self.level[shop] + elapsed * self.restore_per_s)
        self.at[shop] = max(self.at[shop], to)

    def call(self, body: dict[str, Any], arrived: float, read_at: float) -> tuple[int, dict[str, Any], dict[str, str]]:
        args = body["args"]
        shop = args["shop"]
        self._advance(shop, arrived)
        requested = float(args.get("requested", 1))
        actual = float(args.get("actual", requested)) if self.mode == "graphql" else 1.0
        if self.level[shop] + EPSILON < requested:
            self.throttled.append((shop, self.level[shop]))
            wait_s = (requested - self.level[shop]) / self.restore_per_s
            return 429, {"errors": [{"message": "Throttled"}]}, {"Retry-After": f"{max(0.05, wait_s):.3f}",
                                                                 **self._report(shop, None)}
        self.level[shop] -= actual
        self.calls[shop].append((arrived, actual, self.level[shop]))
        self.wall_arrivals[body["jobId"]] = arrived
        return 200, {"ok": True}, self._report(shop, actual)

    def _report(self, shop: str, actual: float | None) -> dict[str, str]:
        headers = {"X-Redisq-Available": f"{max(0.0, self.level[shop]):.3f}"}
        if self.mode == "graphql":
            if actual is not None:
                headers["X-Redisq-Cost"] = f"{actual:g}"
        else:
            headers["X-Redisq-Bucket-Size"] = f"{self.size:g}"
        return headers

    def log(self) -> dict[str, Any]:
        return {"calls": self.calls, "throttled": self.throttled, "wallArrivals": self.wall_arrivals,
                "outside": dict(self.outside_done), "outsideRefused": dict(self.outside_refused)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("graphql", "rest"), required=True)
    parser.add_argument("--size", type=float, required=True)
    parser.add_argument("--restore", type=float, required=True)
    parser.add_argument("--outside", type=float, default=0.0)
    o = parser.parse_args()
    assert math.isfinite(o.size) and o.restore > 0
    Server(o.port, PointsStandIn(o.mode, o.size, o.restore, o.outside)).serve_forever()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
