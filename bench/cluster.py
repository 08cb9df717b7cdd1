"""Step 10: Redis Cluster, 6 workers on 1 master against the same 6 on 3 masters.

For each layout: a throwaway cluster (``ClusterProc``: 1 master owning every slot, or 3
masters splitting them), the Node sink, and ``--processes`` coordinators (``redisq serve``
with ``redis_cluster = true``, 6 workers named so that on 3 masters each owns 2). The jobs
(``--jobs``, spread evenly over the workers) are written straight into Redis with
``redisq.engine.Engine`` on the cluster client, all due a few seconds later; from that
moment until every one is finished (the workers' ``succeeded`` state indexes) it counts:

* jobs/s, 3 masters against 1 master;
* CPU seconds of each process over that time (each coordinator, each redis-server, the
  sink), as a share of one core;
* Redis CPU per job: the masters' ``used_cpu_sys + used_cpu_user`` (``INFO cpu``) over that
  time, summed, per job; 3 masters against 1.

On a machine of few cores the jobs/s ratio is bounded by the cores (the coordinators and
the sink need them, not Redis); Redis CPU per job on 3 masters against 1 shows what more
machines would give: about the same per job, spread over 3 servers.

Run alone: ``python -m bench.cluster [--quick] [--jobs N] [--processes N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from redis.crc import key_slot

from redisq.keys import WorkerKeys

from .procs import ClusterProc, Coordinator, Sink, cpu_s, free_port
from .report import Deadline, figure, note, progress, run

STEP = "cluster"
WORKERS = 6
LAYOUTS = (1, 3)
BATCH = 1000
LEAD_S = 3.0


@dataclass
class LayoutResult:
    masters: int
    jobs: int
    seconds: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds over the run
    redis_cpu_s: float = 0.0  # the masters' INFO cpu, summed

    @property
    def jobs_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def redis_cpu_us_per_job(self) -> float:
        return self.redis_cpu_s / self.jobs * 1e6


def worker_names(masters: int = max(LAYOUTS)) -> list[str]:
    """``WORKERS`` names spread evenly over ``masters`` equal slot ranges."""
    per_master = WORKERS // masters
    size = 16384 // masters
    placed: dict[int, list[str]] = {n: [] for n in range(masters)}
    for n in itertools.count():
        name = f"bench{n}"
        owner = min(key_slot(WorkerKeys(name).tag.encode()) // size, masters - 1)
        if len(placed[owner]) < per_master:
            placed[owner].append(name)
        if all(len(names) == per_master for names in placed.values()):
            return [name for names in placed.values() for name in names]
    raise AssertionError("unreachable")


def write_config(redis_url: str, sink_url: str, port: int, names: list[str]) -> str:
    lines = [f'redis_url = "{redis_url}"', "redis_cluster = true", f'public_url = "http://127.0.0.1:{port}"',
             'secret = "bench-secret-not-for-production"']
    for name in names:
        lines += ["", f"[workers.{name}]", f'url = "{sink_url}"', "timeout = 30"]
    with tempfile.NamedTemporaryFile("w", prefix="redisq-bench-cluster-", suffix=".toml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    return f.name


async def redis_cpu_s(client: Any) -> float:
    """used_cpu_sys + used_cpu_user of every master, summed."""
    total = 0.0
    for node in client.get_primaries():
        info = await client.info("cpu", target_nodes=node)
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


async def dispatch(cluster: ClusterProc, names: list[str], jobs: int, pids: dict[str, int],
                   limit_s: float) -> LayoutResult:
    from redisq.config import Config, WorkerConfig
    from redisq.connection import connect_cluster, server_time_ms
    from redisq.engine import Engine
    from redisq.model import EnqueueRequest, new_job_suffix

    client = connect_cluster(cluster.url)
    store = Engine(client, Config(workers={name: WorkerConfig(name=name, url="http://unused") for name in names}))
    try:
        now_ms = await server_time_ms(client, WorkerKeys(names[0]).tag)
        due_ms = now_ms + int(LEAD_S * 1000)
        requests = [EnqueueRequest(worker=names[i % len(names)], suffix=new_job_suffix(), args_json=f'{{"n":{i}}}',
                                   run_at_ms=due_ms, delay_ms=0, max_attempts=5, timeout_ms=30_000)
                    for i in range(jobs)]
        for start in range(0, jobs, BATCH):
            await store.enqueue_many(requests[start:start + BATCH])
        wait_s = (due_ms - await server_time_ms(client, WorkerKeys(names[0]).tag)) / 1000
        if wait_s <= 0:
            raise RuntimeError(f"enqueueing {jobs} jobs took longer than the {LEAD_S:g} s lead")
        await asyncio.sleep(wait_s)
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        redis_before = await redis_cpu_s(client)
        started = time.perf_counter()
        deadline = Deadline(limit_s)
        done = 0
        while not deadline.passed:
            done = sum([await client.zcard(WorkerKeys(name).state_index("succeeded")) for name in names])
            if done >= jobs:
                break
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        if done < jobs:
            raise RuntimeError(f"only {done} of {jobs} jobs finished within {limit_s:g} s")
        return LayoutResult(len(cluster.nodes), jobs, seconds,
                            {name: cpu_s(pid) - cpu_before[name] for name, pid in pids.items()},
                            await redis_cpu_s(client) - redis_before)
    finally:
        await client.aclose()


def run_layout(masters: int, names: list[str], jobs: int, processes: int) -> LayoutResult:
    with ClusterProc(masters) as cluster, Sink(latency_ms=0) as sink:
        coordinators: list[Coordinator] = []
        try:
            for _ in range(processes):
                port = free_port()
                coordinators.append(Coordinator(write_config(cluster.url, sink.url, port, names), port=port))
            pids = {f"coordinator {n + 1}": c.proc.pid for n, c in enumerate(coordinators) if c.proc}
            pids.update({f"redis {node.port}": node.proc.pid for node in cluster.nodes if node.proc})
            if sink.proc:
                pids["sink"] = sink.proc.pid
            return run(lambda: dispatch(cluster, names, jobs, pids, limit_s=120 + jobs / 500))
        finally:
            for coordinator in coordinators:
                coordinator.stop()


def cpu_text(result: LayoutResult) -> str:
    return ", ".join(f"{name} {used / result.seconds:.0%}" for name, used in result.cpu_s.items())


def measure(quick: bool, jobs: int | None = None, processes: int = 2) -> dict[int, LayoutResult]:
    jobs = jobs or (12_000 if quick else 60_000)
    names = worker_names()
    results: dict[int, LayoutResult] = {}
    for masters in LAYOUTS:
        progress(f"{STEP}: {jobs} jobs over {WORKERS} workers on {masters} master(s), {processes} coordinator(s)")
        results[masters] = result = run_layout(masters, names, jobs, processes)
        note(STEP, f"{masters} master(s): {result.jobs_s:,.0f} jobs/s; CPU of one core: {cpu_text(result)}; "
                   f"Redis {result.redis_cpu_us_per_job:.1f} us per job")
    one, three = results[1], results[3]
    figure(STEP, f"jobs/s, {WORKERS} workers on 3 masters", three.jobs_s, "jobs/s", "on 1 master", one.jobs_s,
           "bounded by the cores: coordinators and sink share them")
    figure(STEP, "Redis CPU per job on 3 masters (summed)", three.redis_cpu_us_per_job, "us", "on 1 master",
           one.redis_cpu_us_per_job, "INFO cpu, used_cpu_sys + used_cpu_user")
    busiest = max(v / three.seconds for k, v in three.cpu_s.items() if k.startswith("redis"))
    figure(STEP, "busiest master's CPU on 3 masters", busiest * 100, "%", "the one master",
           max(v / one.seconds for k, v in one.cpu_s.items() if k.startswith("redis")) * 100,
           "share of one core while jobs flow")
    return results


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--processes", type=int, default=2, help="coordinator processes (default 2)")
    args = parser.parse_args(argv)
    return measure(args.quick, args.jobs, args.processes)


if __name__ == "__main__":
    main()
