"""Step 3: the HTTP client, the dispatcher's limit: requests/s to a fast local sink.

``redisq.transport.PyreqwestTransport``, ``AiohttpTransport`` and ``HttpxTransport`` (the
interface the dispatcher uses: ``await t.post(url, body, headers, timeout_s)``) each keep N
POSTs in flight to the Node sink (``bench/sink.js``), on uvloop when it imports. The peer
measured in the same run is a Node client (``bench/load.js``) against the same sink at the
same N. aiohttp and pyreqwest are also run once on the plain asyncio loop, to show what
uvloop is worth. Each client's CPU time over the window (``/proc/PID/stat``, all its
threads: pyreqwest writes on threads of its own) divided by the requests the sink counted
is its CPU µs per request.

Every client runs in a child process and is counted at the sink: the parent reads the
sink's ``GET /count`` after a warm-up and again ``--seconds`` later, then stops the child.
So a client whose event loop stalls (httpx at 1024 in flight holds it for seconds) is
measured over the same wall-clock window as the others and cannot stretch the run.

Run alone: ``python -m bench.http_client [--quick] [--seconds S] [--in-flight 64,128,1024]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .procs import BENCH_DIR, Child, Sink, process_cpu_s
from .report import figure, loop_name, note, progress, run

BODY = json.dumps({
    "jobId": "bench:0123456789abcdef0123", "worker": "bench", "attempt": 1, "args": {"n": 1, "to": "a@example.com"},
    "receiptUrl": "http://127.0.0.1:7575/job/bench:0123456789abcdef0123/receipt", "receiptToken": "x" * 43,
}, separators=(",", ":")).encode()
HEADERS = {"content-type": "application/json", "x-redisq-signature": "t=1700000000,v1=" + "0" * 64}
CLIENT_NAMES = ("native", "pyreqwest", "aiohttp", "httpx")
CHILD_MAX_S = 60.0  # a child stops by itself after this, should its parent be gone


@dataclass
class ClientRun:
    client: str  # pyreqwest | aiohttp | httpx | node
    in_flight: int
    loop: str  # uvloop | asyncio | node
    rps: float
    problem: str = ""
    cpu_us_per_request: float = 0.0


@dataclass
class HttpResults:
    runs: list[ClientRun] = field(default_factory=list)

    def run(self, client: str, in_flight: int, loop: str | None = None) -> ClientRun | None:
        for r in self.runs:
            if r.client == client and r.in_flight == in_flight and (loop is None or r.loop == loop):
                return r
        return None

    def rps(self, client: str, in_flight: int, loop: str | None = None) -> float:
        found = self.run(client, in_flight, loop)
        return found.rps if found else 0.0

    def cpu_us(self, client: str, in_flight: int, loop: str | None = None) -> float:
        found = self.run(client, in_flight, loop)
        return found.cpu_us_per_request if found else 0.0

    def best(self, client: str = "aiohttp") -> tuple[int, float]:
        """(in_flight, requests/s) of the client's best run on the default loop."""
        runs = [r for r in self.runs if r.client == client and r.loop == loop_name()]
        if not runs:
            return 0, 0.0
        top = max(runs, key=lambda r: r.rps)
        return top.in_flight, top.rps


# -- the child: one client keeping N requests in flight until it is stopped --------------
async def lanes(client: str, url: str, in_flight: int, max_s: float) -> None:
    from redisq.transport import TransportError, make_transport

    transport = make_transport(client, in_flight)
    stop_at = time.monotonic() + max_s

    async def lane() -> None:
        while time.monotonic() < stop_at:
            try:
                await transport.post(url, BODY, HEADERS, 30.0)
            except TransportError:
                await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(lane() for _ in range(in_flight)))
    finally:
        await transport.close()


def child_main(client: str, url: str, in_flight: int, use_uvloop: bool, max_s: float) -> None:
    run(lambda: lanes(client, url, in_flight, max_s), use_uvloop=use_uvloop)


# -- the parent: counts at the sink -------------------------------------------------------
def count_at_sink(sink: Sink, name: str, argv: list[str], seconds: float, warmup_s: float,
                  start_timeout_s: float = 15.0) -> tuple[float, str, float]:
    """requests/s the sink answered for the child ``argv`` over ``seconds`` after a warm-up,
    a problem ("" when none), and the child's CPU µs per request over the window."""
    before = sink.count()
    child = Child(name, argv)
    try:
        deadline = time.monotonic() + start_timeout_s
        while sink.count() == before:
            if not child.running():
                return 0.0, f"{name} exited: {child.log_tail(3)}", 0.0
            if time.monotonic() > deadline:
                return 0.0, f"{name} sent nothing within {start_timeout_s:g} s", 0.0
            time.sleep(0.02)
        time.sleep(warmup_s)
        c0, t0, cpu0 = sink.count(), time.perf_counter(), process_cpu_s(child.proc.pid if child.proc else 0)
        time.sleep(seconds)
        c1, t1, cpu1 = sink.count(), time.perf_counter(), process_cpu_s(child.proc.pid if child.proc else 0)
        problem = "" if child.running() else f"{name} exited early: {child.log_tail(3)}"
        if c1 == c0 and not problem:
            problem = f"the sink answered none of its requests in the {t1 - t0:.1f} s window"
        per_request_us = (cpu1 - cpu0) / (c1 - c0) * 1e6 if c1 > c0 else 0.0
        return (c1 - c0) / (t1 - t0), problem, per_request_us
    finally:
        child.stop(grace_s=2.0)


def python_child(client: str, url: str, in_flight: int, use_uvloop: bool) -> list[str]:
    argv = [sys.executable, "-m", "bench.http_client", "--child", client, "--url", url,
            "--in-flight", str(in_flight), "--max-seconds", str(CHILD_MAX_S)]
    return argv if use_uvloop else [*argv, "--asyncio"]


def measure(quick: bool, in_flight_levels: list[int] | None = None, seconds: float | None = None,
            latency_ms: float = 0.0, clients: tuple[str, ...] = CLIENT_NAMES) -> HttpResults:
    levels = in_flight_levels or [64, 128, 1024]
    seconds = seconds or (1.0 if quick else 3.0)
    warmup_s = 0.5 if quick else 1.0
    results = HttpResults()
    node = shutil.which("node")
    progress(f"[3/6] HTTP client: {' vs '.join(clients)} vs a Node client, to the Node sink, {seconds:g} s per run "
             f"after {warmup_s:g} s warm-up, at {levels} in flight, Python on {loop_name()}"
             + (f", sink answering after {latency_ms:g} ms" if latency_ms else ""))
    with Sink(latency_ms=latency_ms) as sink:
        for n in levels:
            if node:
                rps, problem, cpu = count_at_sink(sink, "node-load", [node, str(BENCH_DIR / "load.js"), sink.url,
                                                                      str(n), str(CHILD_MAX_S)], seconds, warmup_s)
                results.runs.append(ClientRun("node", n, "node", rps, problem, cpu))
            for client in clients:
                rps, problem, cpu = count_at_sink(sink, client, python_child(client, sink.url, n, True), seconds,
                                                  warmup_s)
                results.runs.append(ClientRun(client, n, loop_name(), rps, problem, cpu))
        if loop_name() == "uvloop" and 128 in levels:
            for client in ("pyreqwest", "aiohttp"):
                if client in clients:
                    rps, problem, cpu = count_at_sink(sink, f"{client}-asyncio",
                                                      python_child(client, sink.url, 128, False), seconds, warmup_s)
                    results.runs.append(ClientRun(client, 128, "asyncio", rps, problem, cpu))

    loop = loop_name()
    for n in levels:
        peer = results.rps("node", n)
        for client in clients:
            figure("http", f"{client:9} @{n} in flight ({loop})", results.rps(client, n, loop), "req/s",
                   "node client", peer)
        if "native" in clients and "pyreqwest" in clients:
            figure("http", f"  native over pyreqwest @{n}", results.rps("native", n, loop), "req/s", "pyreqwest",
                   results.rps("pyreqwest", n, loop))
            figure("http", f"  native CPU per request @{n}", results.cpu_us("native", n, loop), "us", "pyreqwest",
                   results.cpu_us("pyreqwest", n, loop))
        if "pyreqwest" in clients and "aiohttp" in clients:
            figure("http", f"  pyreqwest over aiohttp @{n}", results.rps("pyreqwest", n, loop), "req/s", "aiohttp",
                   results.rps("aiohttp", n, loop))
            figure("http", f"  pyreqwest CPU per request @{n}", results.cpu_us("pyreqwest", n, loop), "us",
                   "aiohttp", results.cpu_us("aiohttp", n, loop))
        if "httpx" in clients and "aiohttp" in clients:
            figure("http", f"  aiohttp over httpx @{n}", results.rps("aiohttp", n, loop), "req/s", "httpx",
                   results.rps("httpx", n, loop))
    if loop == "uvloop" and 128 in levels:
        for client in ("pyreqwest", "aiohttp"):
            if client in clients:
                figure("http", f"{client} @128 on plain asyncio", results.rps(client, 128, "asyncio"), "req/s",
                       f"{client} @128 on uvloop", results.rps(client, 128, "uvloop"))
    for r in results.runs:
        if r.problem:
            note("http", f"{r.client} @{r.in_flight} ({r.loop}): {r.problem}")
    return results


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.http_client")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--in-flight", default="64,128,1024")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the sink answers after this long")
    parser.add_argument("--clients", default=",".join(CLIENT_NAMES), help="the Python clients to measure")
    parser.add_argument("--child", choices=CLIENT_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--asyncio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=CHILD_MAX_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.url, int(args.in_flight), not args.asyncio, args.max_seconds)
    return measure(args.quick, [int(x) for x in args.in_flight.split(",")], args.seconds, args.latency_ms,
                   tuple(c for c in args.clients.split(",") if c))


if __name__ == "__main__":
    main()
