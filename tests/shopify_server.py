"""A stand-in for Shopify's REST API as a worker URL, in a process of its own (as Shopify
is): a leaky bucket per shop (the job's ``args.shop``) of ``--bucket`` calls leaking
``--leak`` per second, and 429 with Retry-After for a call that would overflow it.

A call is counted when it *arrived*, not when this process got round to reading it: the
kernel stamps each TCP segment as it is received (``SO_TIMESTAMPNS``), so a stand-in that
is starved of CPU by the test still counts every call at the moment it reached Shopify's
edge. (Where the kernel offers no stamps, the time of the read is used.) Verdicts are
therefore given in arrival order whatever order the calls are read in: a call is refused
when counting it at its arrival would overflow the bucket at that moment or any later
counted call.

``--jitter-ms L --seed S`` adds a latency of 0-L ms to each call before it is counted,
drawn from a generator seeded by S, the shop, the job's ``args.n`` and the attempt, so
that a run's delays are the same each time: a network whose latency varies by L ms.
``--late-burst-ms D --burst-calls N`` adds D ms to the first N calls of each shop only:
the worst case of a spread of D, a latency that falls by D after a burst and the calls
that follow it.

``POST /shopify`` is a call; ``GET /log`` answers what it saw (times are ``time.time()``
seconds): per shop the counted times of the calls it served and the highest level its
bucket reached, each job's counted arrival, every 429 as (shop, level), and a trace of
every call (kernel arrival, read, handled). Run by ``tests/test_shopify.py`` and
``bench/shopify_spacing.py``:
``python tests/shopify_server.py --port P [--bucket 40] [--leak 2] [--jitter-ms 0 --seed 0]``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import random
import selectors
import socket
import struct
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

SO_TIMESTAMPNS = 35  # Linux; the stamp comes as a struct timespec in SCM_TIMESTAMPNS
EPSILON = 1e-9


def kernel_stamps_supported() -> bool:
    return sys.platform.startswith("linux")


class LeakyBuckets:
    """Shopify's limit, judged on arrival times that may be read out of order."""

    def __init__(self, bucket: float, leak_per_s: float):
        self.bucket = bucket
        self.leak_per_s = leak_per_s
        self.served: dict[str, list[float]] = defaultdict(list)  # shop -> counted times, sorted

    def _levels(self, times: list[float]) -> list[float]:
        """The bucket's level just before each call of ``times`` (sorted) is counted."""
        levels, level, last = [], 0.0, None
        for t in times:
            if last is not None:
                level = max(0.0, level - (t - last) * self.leak_per_s)
            levels.append(level)
            level += 1
            last = t
        return levels

    def call(self, shop: str, at: float) -> float | None:
        """Count a call at ``at``; None when it fits, else the level it would overflow."""
        times = self.served[shop]
        position = bisect.bisect(times, at)
        candidate = times[:position] + [at] + times[position:]
        levels = self._levels(candidate)
        for level in levels[position:]:
            if level + 1 > self.bucket + EPSILON:
                return level
        times.insert(position, at)
        return None

    def highest_level(self, shop: str) -> float:
        times = self.served[shop]
        return max((level + 1 for level in self._levels(times)), default=0.0)


@dataclass
class Connection:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    arrived: float = 0.0  # the kernel's stamp of the last segment read
    read_at: float = 0.0  # when this process read it
    close_after_write: bool = False


class ShopifyStandIn:
    def __init__(self, bucket: float, leak_per_s: float, jitter_ms: float = 0, seed: int = 0,
                 late_burst_ms: float = 0, burst_calls: int = 0):
        self.buckets = LeakyBuckets(bucket, leak_per_s)
        self.jitter_ms = jitter_ms
        self.seed = seed
        self.late_burst_ms = late_burst_ms
        self.burst_calls = burst_calls
        self.calls_seen: dict[str, int] = defaultdict(int)
        self.wall_arrivals: dict[str, float] = {}
        self.throttled: list[tuple[str, float]] = []
        self.trace: list[dict[str, Any]] = []

    def delay_s(self, shop: str, n: Any, attempt: int) -> float:
        delay_ms = 0.0
        if self.jitter_ms:
            delay_ms += random.Random(f"{self.seed}:{shop}:{n}:{attempt}").random() * self.jitter_ms
        self.calls_seen[shop] += 1
        if self.calls_seen[shop] <= self.burst_calls:
            delay_ms += self.late_burst_ms
        return delay_ms / 1000

    def call(self, body: dict[str, Any], arrived: float, read_at: float) -> tuple[int, dict[str, Any], dict[str, str]]:
        shop = body["args"]["shop"]
        job_id, attempt = body["jobId"], int(body.get("attempt", 1))
        counted = arrived + self.delay_s(shop, body["args"].get("n", job_id), attempt)
        overflow = self.buckets.call(shop, counted)
        self.trace.append({"jobId": job_id, "shop": shop, "attempt": attempt, "arrived": arrived, "read": read_at,
                           "handled": time.time(), "counted": counted, "status": 429 if overflow is not None else 200})
        if overflow is not None:
            self.throttled.append((shop, overflow))
            retry_after_s = max(0.05, (overflow + 1 - self.buckets.bucket) / self.buckets.leak_per_s)
            return (429, {"errors": "Exceeded 2 calls per second for api client."},
                    {"Retry-After": f"{retry_after_s:.3f}"})
        self.wall_arrivals[job_id] = counted
        return 200, {"ok": True}, {}

    def log(self) -> dict[str, Any]:
        shops = self.buckets.served
        return {"calls": shops, "maxLevel": {shop: self.buckets.highest_level(shop) for shop in shops},
                "wallArrivals": self.wall_arrivals, "throttled": self.throttled, "trace": self.trace,
                "kernelStamps": kernel_stamps_supported()}


def parse_request(inbox: bytearray) -> tuple[str, str, dict[str, str], bytes] | None:
    """(method, path, headers, body) of the first complete request in ``inbox``, removed
    from it; None while it is incomplete."""
    end = inbox.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = inbox[:end].decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(inbox) < end + 4 + length:
        return None
    body = bytes(inbox[end + 4:end + 4 + length])
    del inbox[:end + 4 + length]
    return method, path, headers, body


def http_response(status: int, payload: dict[str, Any], headers: dict[str, str], close: bool) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "OK")
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Server:
    """One thread, non-blocking sockets, HTTP/1.1 keep-alive: enough for a dispatcher."""

    def __init__(self, port: int, stand_in: ShopifyStandIn):
        self.stand_in = stand_in
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.listener.setblocking(False)
        self.stamps = kernel_stamps_supported()
        if self.stamps:
            self.listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.selector.register(self.listener, selectors.EVENT_READ, None)

    def serve_forever(self) -> None:
        while True:
            ready: list[tuple[float, Connection, tuple[str, str, dict[str, str], bytes]]] = []
            for key, events in self.selector.select():
                if key.data is None:
                    self._accept()
                    continue
                conn: Connection = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ and self._read(conn):
                    while (request := parse_request(conn.inbox)) is not None:
                        ready.append((conn.arrived, conn, request))
            ready.sort(key=lambda item: item[0])  # judge the calls of this round in arrival order
            for _, conn, request in ready:
                self._answer(conn, request)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.stamps:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.selector.register(sock, selectors.EVENT_READ, Connection(sock))

    def _read(self, conn: Connection) -> bool:
        """Read what is there; False when the peer closed (the connection is dropped)."""
        try:
            data, ancillary, _, _ = conn.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data, ancillary = b"", []
        conn.read_at = time.time()
        if not data:
            self._drop(conn)
            return False
        conn.arrived = conn.read_at
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(stamp) >= 16:
                seconds, nanoseconds = struct.unpack("qq", stamp[:16])
                conn.arrived = seconds + nanoseconds / 1e9
        conn.inbox += data
        return True

    def _answer(self, conn: Connection, request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        close = headers.get("connection", "").lower() == "close"
        if method == "POST" and path == "/shopify":
            status, payload, extra = self.stand_in.call(json.loads(body), conn.arrived, conn.read_at)
        elif method == "GET" and path == "/log":
            status, payload, extra = 200, self.stand_in.log(), {}
        else:
            status, payload, extra = 404, {"error": f"no route {method} {path}"}, {}
        conn.outbox += http_response(status, payload, extra, close)
        conn.close_after_write = conn.close_after_write or close
        self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
            del conn.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if conn.outbox:
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return
        if conn.close_after_write:
            self._drop(conn)
            return
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: Connection) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", type=float, default=40)
    parser.add_argument("--leak", type=float, default=2.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--late-burst-ms", type=float, default=0.0)
    parser.add_argument("--burst-calls", type=int, default=0)
    o = parser.parse_args()
    stand_in = ShopifyStandIn(o.bucket, o.leak, o.jitter_ms, o.seed, o.late_burst_ms, o.burst_calls)
    Server(o.port, stand_in).serve_forever()


if __name__ == "__main__":
    main()
