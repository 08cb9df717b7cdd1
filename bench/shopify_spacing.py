"""Step 7: how far apart a shop's calls reach Shopify, idle and beside a CPU burner.

Three ``redisq serve`` processes on one redis-server dispatch 5 shops x 100 jobs (rate 2,
burst 39 per shop) to ``tests/shopify_server.py``, the stand-in for Shopify that counts a
call at its arrival by the kernel's stamp (``SO_TIMESTAMPNS``; on loopback that is the
moment the coordinator wrote it). The run is made twice: on an idle machine, and beside
one CPU burner per core (busy loops at the same priority as the coordinators).

Per run it prints, for the shops together:
- the highest level any shop's bucket reached at the stand-in (Shopify's is 40);
- the minimum and p1 gap between a shop's consecutive calls from the last call of its
  burst on (the pace that must stay >= 500 ms), counted at send (the kernel's stamp) and
  at the stand-in's read of the request (what a server that is itself short of CPU sees);
- where the time goes between the claim and the count: claim (Redis clock, from the
  job's lease) -> send (kernel stamp) -> read by the stand-in -> handled, p50/p99/max.

Run alone: ``python -m bench.shopify_spacing [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import sys
import tempfile
import time
from typing import Any

import redis

from redisq.job_fields import stored
from redisq.keys import WorkerKeys, split_job_id

from .cron_lag import percentiles
from .procs import REPO_DIR, Child, Coordinator, RedisProc, free_port, http_json
from .report import figure, note, progress

WORKER = "shopify"
SHOPS = [f"shop-{c}.myshopify.com" for c in "abcde"]
BURST = 39
RATE = 2.0
SHOPIFY_BUCKET = 40


def _cpu_burner() -> Any:
    """tests/cpu_burner.py's CpuBurner (the Shopify tests use the same one)."""
    spec = importlib.util.spec_from_file_location("cpu_burner", REPO_DIR / "tests" / "cpu_burner.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.CpuBurner()


def _config(path: str, redis_url: str, port: int, worker_url: str) -> None:
    with open(path, "w") as f:
        f.write("\n".join([
            f'redis_url = "{redis_url}"', f'public_url = "http://127.0.0.1:{port}"', 'secret = "bench-secret"',
            "shutdown_grace = 1", "", f"[workers.{WORKER}]", f'url = "{worker_url}"', f"rate = {RATE}",
            f"burst = {BURST}", "timeout = 5",
        ]) + "\n")


def _gaps_after_burst(times: list[float]) -> list[float]:
    paced = sorted(times)[BURST - 1:]
    return [b - a for a, b in itertools.pairwise(paced)]


def _claim_times_s(client: redis.Redis, job_ids: list[str]) -> dict[str, float]:
    """job id -> the Redis clock's time of its claim (its lease deadline minus its timeout)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        worker, suffix = split_job_id(job_id)  # type: ignore[misc]
        pipe.hmget(WorkerKeys(worker).job(suffix), *stored("lease_deadline_ms", "lease_timeout_ms"))
    claims = {}
    for job_id, (deadline, timeout) in zip(job_ids, pipe.execute(), strict=True):
        if deadline is not None and timeout is not None:
            claims[job_id] = (int(deadline) - int(timeout)) / 1000
    return claims


def one_run(label: str, per_shop: int, burner: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="redisq-bench-shopify-") as tmp, RedisProc() as server:
        shopify_port = free_port()
        stand_in = Child("shopify", [sys.executable, str(REPO_DIR / "tests" / "shopify_server.py"),
                                     "--port", str(shopify_port)])
        coordinators: list[Coordinator] = []
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    http_json(shopify_port, "GET", "/log", timeout_s=1)
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the Shopify stand-in did not start") from e
                    time.sleep(0.05)
            for n in range(3):
                port = free_port()
                path = f"{tmp}/redisq-{n}.toml"
                _config(path, server.url, port, f"http://127.0.0.1:{shopify_port}/shopify")
                coordinators.append(Coordinator(path, port=port))
            jobs = [{"worker": WORKER, "throttleKey": shop, "args": {"shop": shop, "n": n}}
                    for n in range(per_shop) for shop in SHOPS]
            total = len(jobs)
            with _cpu_burner() if burner else contextlib.nullcontext():
                for start in range(0, total, 1000):
                    status, body = http_json(coordinators[0].port, "POST", "/jobs",
                                             body={"jobs": jobs[start:start + 1000]})
                    assert status == 201, body
                wait_until = time.monotonic() + per_shop / RATE + 60
                while True:
                    log = http_json(shopify_port, "GET", "/log", timeout_s=10)[1]
                    served = sum(len(t) for t in log["calls"].values())
                    if served >= total or time.monotonic() > wait_until:
                        break
                    time.sleep(0.5)
            progress(f"{label}: {served} of {total} calls served, {len(log['throttled'])} answered 429")
            client = redis.Redis.from_url(server.url)
            claims = _claim_times_s(client, [t["jobId"] for t in log["trace"]])
            client.close()
            return {"log": log, "claims": claims, "served": served, "total": total}
        finally:
            for c in coordinators:
                c.stop()
            stand_in.stop()


def report(label: str, run: dict[str, Any]) -> None:
    log, claims = run["log"], run["claims"]
    trace = [t for t in log["trace"] if t["status"] == 200]
    by_shop_sent: dict[str, list[float]] = {}
    by_shop_read: dict[str, list[float]] = {}
    for t in trace:
        by_shop_sent.setdefault(t["shop"], []).append(t["arrived"])
        by_shop_read.setdefault(t["shop"], []).append(t["read"])
    highest = max(log["maxLevel"].values())
    figure("shopify", f"{label}: highest bucket level at the stand-in", highest, "calls",
           "Shopify's bucket", SHOPIFY_BUCKET, note=f"{len(log['throttled'])} calls answered 429")
    for where, by_shop in (("send (kernel stamp)", by_shop_sent), ("the stand-in's read", by_shop_read)):
        gaps_ms = sorted(g * 1000 for times in by_shop.values() for g in _gaps_after_burst(times))
        p1 = gaps_ms[max(0, int(len(gaps_ms) * 0.01) - 1)]
        figure("shopify", f"{label}: min gap after the burst, at {where}", gaps_ms[0], "ms",
               "the token interval", 1000 / RATE, note=f"p1 {p1:.1f} ms over {len(gaps_ms)} gaps")
    stages = {"claim -> send": [], "send -> read": [], "read -> handled": []}
    for t in trace:
        claim = claims.get(t["jobId"])
        if claim is not None:
            stages["claim -> send"].append((t["arrived"] - claim) * 1000)
        stages["send -> read"].append((t["read"] - t["arrived"]) * 1000)
        stages["read -> handled"].append((t["handled"] - t["read"]) * 1000)
    for stage, values in stages.items():
        p = percentiles(values)
        note("shopify", f"{label}: {stage}: p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms")


def measure(quick: bool = False) -> None:
    per_shop = 60 if quick else 100
    for label, burner in (("idle", False), ("beside a CPU burner", True)):
        report(label, one_run(label, per_shop, burner))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    measure(parser.parse_args().quick)


if __name__ == "__main__":
    main()
