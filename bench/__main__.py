"""``python -m bench [--quick] [--processes 1,2] [--only STEP,...]``: the steps are ceiling,
engine, http, e2e, cron, throttle, shopify, listing, quirrel, cluster, shared and footprint.

Runs the twelve steps in order and prints every figure beside a reference measured in the
same run, then all of them again as a summary. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import (
    cluster,
    cron_lag,
    e2e,
    engine,
    footprint,
    http_client,
    listing,
    quirrel,
    redis_ceiling,
    shared_limits,
    shopify_spacing,
    throttle,
)
from .procs import RedisProc
from .report import FIGURES, NOTES, OtherLoad, loop_name

STEPS = ("ceiling", "engine", "http", "e2e", "cron", "throttle", "shopify", "listing", "quirrel", "cluster", "shared",
         "footprint")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def node_version() -> str:
    node = shutil.which("node")
    if not node:
        return "not installed"
    return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()


def guarded(name: str, fn: Callable[[], Any]) -> Any:
    """Run one step; a failure is printed and the run goes on with the next step."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a benchmark step failing must not hide the others
        print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
        if os.environ.get("BENCH_TRACEBACK"):
            traceback.print_exc()
        NOTES.append(f"[{name}] failed: {type(e).__name__}: {e}")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts, under a minute")
    parser.add_argument("--processes",
                        help="coordinator processes for the e2e step: 1, 2 or 1,2 (default 1,2; --quick: 1)")
    parser.add_argument("--only", help=f"comma-separated steps out of {','.join(STEPS)}")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(STEPS)
    unknown = only - set(STEPS)
    if unknown:
        parser.error(f"unknown step(s) {', '.join(sorted(unknown))}; expected {', '.join(STEPS)}")
    processes = [int(x) for x in (args.processes or ("1" if args.quick else "1,2")).split(",")]

    started = time.monotonic()
    print(f"redisq bench ({'quick' if args.quick else 'full'} run) {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
    print(f"  machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} {platform.release()}")
    print(f"  python {platform.python_version()} on {loop_name()}, node {node_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    ceiling = http = None
    with OtherLoad() as whole:
        if only & {"ceiling", "engine"}:
            with OtherLoad() as load, RedisProc() as redis:
                if "ceiling" in only:
                    ceiling = guarded("ceiling", lambda: redis_ceiling.measure(redis, args.quick))
                if "engine" in only:
                    guarded("engine", lambda: engine.measure(redis, ceiling, args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "http" in only:
            with OtherLoad() as load:
                http = guarded("http", lambda: http_client.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "e2e" in only:
            references = []
            client_cpu_us = 0.0
            if http is not None:
                references = [(f"{client} @128 (step 3)", http.rps(client, 128, loop))
                              for client, loop in (("native", loop_name()), ("pyreqwest", loop_name()),
                                                   ("aiohttp", loop_name()), ("node", "node"))
                              if http.rps(client, 128, loop)]
                client_cpu_us = http.cpu_us("native", 128, loop_name())  # the default client
            with OtherLoad() as load:
                guarded("e2e", lambda: e2e.measure(args.quick, references, processes, client_cpu_us=client_cpu_us))
            print(f"  ({load.describe()})", flush=True)
        if "cron" in only:
            with OtherLoad() as load:
                guarded("cron", lambda: cron_lag.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "throttle" in only:
            with OtherLoad() as load:
                guarded("throttle", lambda: throttle.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "shopify" in only:
            # No OtherLoad here: half of this step runs beside a CPU burner on purpose.
            guarded("shopify", lambda: shopify_spacing.measure(args.quick))
        if "listing" in only:
            with OtherLoad() as load:
                guarded("listing", lambda: listing.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "quirrel" in only:
            with OtherLoad() as load:
                guarded("quirrel", lambda: quirrel.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "cluster" in only:
            with OtherLoad() as load:
                guarded("cluster", lambda: cluster.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "shared" in only:
            with OtherLoad() as load:
                guarded("shared", lambda: shared_limits.measure(args.quick))
            print(f"  ({load.describe()})", flush=True)
        if "footprint" in only:
            guarded("footprint", lambda: footprint.measure(args.quick))  # bytes, not times: the load does not matter

    print(f"\nsummary ({time.monotonic() - started:.0f} s; {whole.describe()}):")
    step = None
    for f in FIGURES:
        if f.step != step:
            step = f.step
            print(f" {step}:")
        print(f.line())
    for text in NOTES:
        print(f"  {text}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
