"""The proof of limits shared by workers: three redisq workers (job types of one Shopify
app) name ``[limits.shopify]`` and call one stand-in that enforces Shopify's bucket per
shop, by the shop in the job's args, whatever worker sends the call
(``tests/shopify_server.py``). Three ``redisq serve`` processes on one real Redis. What is
asserted is what the app's developer would check: no 429, each shop at 2/s after its
burst (within 2%), and each job type served in turn for a shop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from redis_server import free_port
from test_resilience import SECRET, client, start_coordinator, start_redis  # noqa: F401
from test_shopify import BUCKET, SHOPS, ShopifyWorker, check_every_shop_at_two_per_second, wait_served

JOB_TYPES = ["sync-orders", "sync-products", "push-inventory"]
PER_TYPE_PER_SHOP = 60  # 180 calls per shop: 39 at once, then 141 at 2/s, about 71 s


def write_config(path: Path, *, redis_url: str, port: int, worker_url: str, limit: dict[str, Any],
                 others: Mapping[str, str] | None = None, cluster: bool = False) -> Path:
    """The job types naming ``[limits.shopify]``; ``others``: workers of their own (name ->
    url); ``cluster``: ``redis_cluster = true``."""
    lines = [f'redis_url = "{redis_url}"', f'public_url = "http://127.0.0.1:{port}"', f"port = {port}",
             f'secret = "{SECRET}"', "shutdown_grace = 1", *(["redis_cluster = true"] if cluster else []),
             "", "[limits.shopify]", *(f"{k} = {v}" for k, v in limit.items())]
    for job_type in JOB_TYPES:
        lines += ["", f"[workers.{job_type}]", f'url = "{worker_url}"', 'limits = ["shopify"]', "timeout = 5"]
    for name, url in (others or {}).items():
        lines += ["", f"[workers.{name}]", f'url = "{url}"', "timeout = 5"]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_coordinators(tmp_path: Path, client: httpx.Client, processes: list[Any], redis_url: str,
                       worker_url: str, count: int, limit: dict[str, Any], **config: Any) -> list[Any]:
    """``count`` `redisq serve` processes; ``config``: ``write_config``'s ``others`` and ``cluster``."""
    coordinators = []
    for n in range(count):
        port = free_port()
        config_path = write_config(tmp_path / f"redisq-{n}.toml", redis_url=redis_url, port=port,
                                   worker_url=worker_url, limit=limit, **config)
        coordinators.append(start_coordinator(processes, client, config_path, port, tmp_path / f"redisq-{n}.log"))
    return coordinators


def enqueue_every_type(client: httpx.Client, base_url: str, per_type: int) -> dict[str, tuple[str, str]]:
    """Each job type's jobs for every shop, one type after the other (the first type's backlog
    comes first); returns job id -> (its type, its shop)."""
    jobs_of: dict[str, tuple[str, str]] = {}
    for job_type in JOB_TYPES:
        jobs = [{"worker": job_type, "throttleKey": shop, "args": {"shop": shop, "n": n}}
                for n in range(per_type) for shop in SHOPS]
        resp = client.post(f"{base_url}/jobs", json={"jobs": jobs})
        assert resp.status_code == 201, resp.text
        for sent, job in zip(jobs, resp.json()["jobs"], strict=True):
            jobs_of[job["id"]] = (job_type, sent["throttleKey"])
    return jobs_of


def check_types_served_in_turn(shopify: ShopifyWorker, jobs_of: dict[str, tuple[str, str]]) -> None:
    """After a shop's burst, each job type has about a third of the calls: the backlog
    enqueued last is not starved by the first's."""
    arrivals = shopify.wall_arrivals
    for shop in SHOPS:
        ordered = sorted((at, jobs_of[job_id][0]) for job_id, at in arrivals.items() if jobs_of[job_id][1] == shop)
        paced = [job_type for _, job_type in ordered[BUCKET - 1:BUCKET - 1 + 60]]
        counts = {job_type: paced.count(job_type) for job_type in JOB_TYPES}
        print(f"{shop}: the 60 calls after its burst by type: {counts}")  # seen with pytest -s
        assert all(n >= 15 for n in counts.values()), (shop, counts)  # 20 each when exactly in turn


def test_three_job_types_sharing_shopifys_limit_get_no_429_and_each_shop_runs_at_2_per_second(
        tmp_path, client, processes):
    server = start_redis(processes)
    with ShopifyWorker() as shopify:
        coordinators = start_coordinators(tmp_path, client, processes, server.url, shopify.url, count=3,
                                          limit={"rate": 2, "burst": BUCKET - 1})
        jobs_of = enqueue_every_type(client, coordinators[0].base_url, PER_TYPE_PER_SHOP)
        wait_served(shopify, len(jobs_of), within_s=120)
        check_every_shop_at_two_per_second(shopify, SHOPS, PER_TYPE_PER_SHOP * len(JOB_TYPES))
        check_types_served_in_turn(shopify, jobs_of)
        assert all(c.alive() for c in coordinators)
