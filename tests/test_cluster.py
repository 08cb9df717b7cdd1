"""redisq on a real Redis Cluster (``redis_cluster.RedisCluster``): ``redisq serve`` pointed
at one node finds the others; workers whose slots lie on different masters share the load
of two coordinators with no cluster error reaching a caller; a master killed -9 is replaced
by its replica while jobs flow and the coordinators carry on by themselves; what a caller
gets while a slot migrates or a master refuses writes.

The engine's own suite runs on a cluster too (the ``engine_redis`` fixture's third store);
the live reshard is ``test_reshard.py``. What is asserted is what a user would look at:
HTTP answers, ``GET /job``, ``GET /workers``, ``GET /health``, the coordinators' logs.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from in_process import serving
from redis_cluster import RedisCluster

from redisq.config import Config, WorkerConfig
from redisq.connection import connect_cluster
from redisq.coordinator import Coordinator as InProcessCoordinator
from redisq.keys import WorkerKeys

from redis_server import free_port
from test_resilience import Coordinator, WorkerSink, clean_env, wait_until

SECRET = "cluster-test-secret"
# What must never reach a caller or a log: a cluster error redisq should have handled.
CLUSTER_ERROR_RE = re.compile(r"CROSSSLOT|MOVED|\bASK\b|TRYAGAIN|ClusterError|CLUSTERDOWN|Traceback|internal error")


def start_cluster(processes: list[Any], replicas: int = 0) -> RedisCluster:
    try:
        cluster = RedisCluster(masters=3, replicas=replicas)
        processes.append(cluster)
        return cluster.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def cluster_config(path: Path, cluster: RedisCluster, port: int, workers: dict[str, str], *,
                   secret: str | None = SECRET, timeout_s: float = 2.0, extra: str = "") -> Path:
    lines = [f'redis_url = "{cluster.url}"', f'public_url = "http://127.0.0.1:{port}"', f"port = {port}",
             "shutdown_grace = 2"]
    if secret is not None:
        lines.append(f'secret = "{secret}"')
    for name, url in workers.items():
        lines += ["", f"[workers.{name}]", f'url = "{url}"', f"timeout = {timeout_s}", "max_attempts = 20",
                  extra, "", f"[workers.{name}.backoff]", "initial = 0.1", "max = 0.5"]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_coordinators(processes: list[Any], client: httpx.Client, tmp_path: Path, cluster: RedisCluster,
                       workers: dict[str, str], count: int, **config: Any) -> list[Coordinator]:
    started = []
    for n in range(count):
        port = free_port()
        path = cluster_config(tmp_path / f"redisq-{n}.toml", cluster, port, workers, **config)
        coordinator = Coordinator(path, port, tmp_path / f"coordinator-{n}.log")
        processes.append(coordinator)
        started.append(coordinator)
    for coordinator in started:
        coordinator.wait_healthy(client, within_s=30)
    return started


def worker_counts(client: httpx.Client, base_url: str) -> dict[str, dict[str, int]]:
    resp = client.get(f"{base_url}/workers")
    assert resp.status_code == 200, resp.text
    return {w["name"]: w["jobs"] for w in resp.json()["workers"]}


def cluster_errors_in(coordinators: list[Coordinator]) -> list[str]:
    return [line for c in coordinators for line in c.log().splitlines() if CLUSTER_ERROR_RE.search(line)]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


# -- serve against a cluster ------------------------------------------------------------------

def test_serve_pointed_at_one_node_serves_every_worker_and_lists_every_master(tmp_path, client, processes):
    cluster = start_cluster(processes)
    names = cluster.names_on_distinct_masters(3)
    (coordinator,) = start_coordinators(processes, client, tmp_path, cluster,
                                        {name: "http://127.0.0.1:9/never" for name in names}, 1)
    health = client.get(f"{coordinator.base_url}/health")
    assert health.status_code == 200, health.text
    assert health.json()["store"] == "cluster"
    assert health.json()["masters"] == {f"127.0.0.1:{port}": "up" for port in cluster.master_ports()}

    for name in names:  # each worker on its own master: enqueue, read back, cancel
        created = client.post(f"{coordinator.base_url}/job", json={"worker": name, "id": "a", "delay": 60})
        assert created.status_code == 201, created.text
        assert client.get(f"{coordinator.base_url}/job/{name}:a").json()["state"] == "scheduled"
    counts = worker_counts(client, coordinator.base_url)
    assert {name: counts[name]["scheduled"] for name in names} == dict.fromkeys(names, 1)

    log = coordinator.log()
    summary = next(line for line in log.splitlines() if "serving on" in line)
    assert "redis cluster" in summary and "3 masters" in summary
    for name in names:
        owner = cluster.node_for_slot(cluster.slot_of(f"redisq:{{{name}}}")).port
        assert f"127.0.0.1:{owner}: {name}" in summary, summary
    assert not cluster_errors_in([coordinator])


def test_serve_on_a_cluster_without_a_secret_refuses_to_start_in_one_line(tmp_path, processes):
    cluster = start_cluster(processes)
    port = free_port()
    config = cluster_config(tmp_path / "redisq.toml", cluster, port, {"w": "http://127.0.0.1:9/w"}, secret=None)
    done = subprocess.run([sys.executable, "-m", "redisq.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"redisq: redis at {cluster.url} is a Redis Cluster: set `secret`"), done.stderr
    assert "Traceback" not in done.stderr and "serving on" not in done.stderr


# -- what a caller gets when a master refuses ---------------------------------------------------

@contextlib.asynccontextmanager
async def in_process_api(cluster: RedisCluster, names: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(secret=SECRET, shutdown_grace_s=0.2,
                    workers={name: WorkerConfig(name=name, url="http://127.0.0.1:9/never") for name in names})
    async with serving(InProcessCoordinator(config, redis=connect_cluster(cluster.url))) as api:
        yield api


async def test_a_batch_across_workers_that_fails_part_way_says_which_jobs_it_wrote(processes):
    cluster = start_cluster(processes)
    first, second = cluster.names_on_distinct_masters(2)
    full_master = cluster.node_for_slot(cluster.slot_of(WorkerKeys(second).tag))
    async with in_process_api(cluster, [first, second]) as api:
        cluster.cli(full_master.port, "CONFIG", "SET", "maxmemory", "1")  # the second worker's master is full
        try:
            jobs = [{"worker": first, "id": "a"}, {"worker": first, "id": "b"}, {"worker": second, "id": "c"}]
            answer = await api.post("/jobs", json={"jobs": jobs})
        finally:
            cluster.cli(full_master.port, "CONFIG", "SET", "maxmemory", "0")
        assert answer.status_code == 503, answer.text
        assert answer.json()["enqueued"] == [f"{first}:a", f"{first}:b"]
        assert "2 of 3 jobs were enqueued before it failed" in answer.json()["error"]
        assert (await api.get(f"/job/{first}:a")).status_code == 200
        assert (await api.get(f"/job/{second}:c")).status_code == 404
        again = await api.post("/jobs", json={"jobs": jobs})  # with ids, the retry is idempotent
        assert again.status_code == 201, again.text
        assert again.json()["created"] == 1


async def test_a_master_short_of_replicas_for_min_replicas_to_write_answers_503(processes):
    """README, Failover: ``min-replicas-to-write`` makes a master refuse writes while too few
    replicas are in reach; its worker's enqueues are 503 naming it (NOREPLICAS), not 500."""
    cluster = start_cluster(processes)
    (name,) = cluster.names_on_distinct_masters(1)
    master = cluster.node_for_slot(cluster.slot_of(WorkerKeys(name).tag))
    async with in_process_api(cluster, [name]) as api:
        cluster.cli(master.port, "CONFIG", "SET", "min-replicas-to-write", "1")
        try:
            answer = await api.post("/job", json={"worker": name, "id": "a"})
        finally:
            cluster.cli(master.port, "CONFIG", "SET", "min-replicas-to-write", "0")
        assert answer.status_code == 503, answer.text
        assert "min-replicas-to-write" in answer.json()["error"]
        assert (await api.post("/job", json={"worker": name, "id": "a"})).status_code == 201


async def test_an_enqueue_while_its_slot_stays_migrating_is_a_503_naming_the_cause(processes):
    """A slot marked MIGRATING with none of its keys moved yet: a script that declares a key
    missing there (a new job's) is refused with TRYAGAIN until the keys move. The caller gets
    503 with the cause after redisq sent it again for a second, never a 500."""
    cluster = start_cluster(processes)
    (name,) = cluster.names_on_distinct_masters(1)
    slot = cluster.slot_of(WorkerKeys(name).tag)
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.nodes if node.port in cluster.master_ports() and node is not source)
    async with in_process_api(cluster, [name]) as api:
        assert (await api.post("/job", json={"worker": name, "id": "before", "delay": 60})).status_code == 201
        cluster.cli(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", cluster.node_id(source.port))
        cluster.cli(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", cluster.node_id(target.port))
        try:
            started = time.monotonic()
            answer = await api.post("/job", json={"worker": name, "id": "during"})
            elapsed_s = time.monotonic() - started
        finally:
            for node in (source, target):
                cluster.cli(node.port, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        assert answer.status_code == 503, answer.text
        assert "cluster" in answer.json()["error"] and "retry" in answer.json()["error"]
        assert elapsed_s >= 1.0
        assert (await api.get(f"/job/{name}:before")).json()["state"] == "scheduled"
        assert (await api.post("/job", json={"worker": name, "id": "after"})).status_code == 201


# -- load over three masters -------------------------------------------------------------------

JOBS = 30_000
BATCH = 500


def test_30000_jobs_over_three_masters_and_two_coordinators_all_succeed(tmp_path, client, processes):
    cluster = start_cluster(processes)
    names = cluster.names_on_distinct_masters(3)
    with WorkerSink(lambda: 0.0) as sink:
        coordinators = start_coordinators(processes, client, tmp_path, cluster,
                                          dict.fromkeys(names, sink.url), 2, timeout_s=30.0)
        answers: list[int] = []
        refusals: list[str] = []
        for start in range(0, JOBS, BATCH):  # every batch spans the three workers
            jobs = [{"worker": names[n % 3], "id": f"j{n}"} for n in range(start, start + BATCH)]
            for attempt in range(10):  # a 503 is posted again with the same ids, as a caller would
                base_url = coordinators[(start // BATCH + attempt) % 2].base_url
                resp = client.post(f"{base_url}/jobs", json={"jobs": jobs})
                answers.append(resp.status_code)
                if resp.status_code != 503:
                    break
                refusals.append(resp.json()["error"])
            assert resp.status_code == 201, resp.text

        def all_succeeded() -> bool:
            counts = worker_counts(client, coordinators[0].base_url)
            return sum(counts[name]["succeeded"] for name in names) == JOBS

        wait_until(all_succeeded, 300, f"{JOBS} jobs succeeded")
        assert len(sink.delivered_ids()) == JOBS
        counts = worker_counts(client, coordinators[1].base_url)
        assert {name: counts[name]["succeeded"] for name in names} == dict.fromkeys(names, JOBS // 3)
        assert all(counts[name]["dead"] == 0 and counts[name]["running"] == 0 for name in names)
        # A busy machine may time a Redis call out (503, posted again); no cluster error reaches a caller.
        assert set(answers) <= {201, 503}
        assert [error for error in refusals if CLUSTER_ERROR_RE.search(error)] == []
        assert cluster_errors_in(coordinators) == []


# -- failover --------------------------------------------------------------------------------------

class Enqueuer:
    """Posts batches over the three workers from a thread until stopped, alternating between
    coordinators, and keeps what each answer acknowledged (a 201's jobs, a 503's
    ``enqueued``) with the time it came."""

    def __init__(self, coordinators: list[Coordinator], names: list[str], batch: int = 60):
        self.coordinators = coordinators
        self.names = names
        self.batch = batch
        self.acknowledged: dict[str, float] = {}  # job id -> time.monotonic() of its acknowledgement
        self.statuses: list[int] = []
        self.bodies: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enqueuer", daemon=True)

    def __enter__(self) -> Enqueuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self._stop.is_set():
                jobs = [{"worker": self.names[i % len(self.names)], "id": f"f{i}"} for i in range(n, n + self.batch)]
                base_url = self.coordinators[(n // self.batch) % len(self.coordinators)].base_url
                try:
                    resp = client.post(f"{base_url}/jobs", json={"jobs": jobs})
                except httpx.TransportError:
                    continue
                now = time.monotonic()
                self.statuses.append(resp.status_code)
                if resp.status_code == 201:
                    written = [job["id"] for job in resp.json()["jobs"]]
                else:
                    self.bodies.append(resp.text)
                    written = resp.json().get("enqueued", []) if resp.status_code == 503 else []
                for job_id in written:
                    self.acknowledged.setdefault(job_id, now)
                n += self.batch
                time.sleep(0.02)


def test_a_master_killed_while_jobs_flow_fails_over_and_the_coordinators_carry_on(tmp_path, client, processes):
    cluster = start_cluster(processes, replicas=1)
    names = cluster.names_on_distinct_masters(3)
    with WorkerSink(lambda: 0.005) as sink:
        coordinators = start_coordinators(processes, client, tmp_path, cluster,
                                          dict.fromkeys(names, sink.url), 2, timeout_s=2.0)
        with Enqueuer(coordinators, names) as enqueuer:
            wait_until(lambda: sink.completed_count() >= 1500, 60, "1500 jobs delivered")
            killed = cluster.kill_master_of(WorkerKeys(names[0]).tag)
            killed_at = time.monotonic()
            cluster.wait_until_replaced(killed.port, timeout_s=30)  # its replica took over
            promoted_at = time.monotonic()
            try:
                wait_until(lambda: len([t for t in enqueuer.acknowledged.values() if t > promoted_at + 2]) >= 600,
                           60, "jobs of every worker acknowledged after the failover")
            except AssertionError as e:
                raise AssertionError(f"{e}: answers {enqueuer.statuses[-20:]}, last errors {enqueuer.bodies[-3:]}\n"
                                     f"{coordinators[0].log()[-5000:]}") from None
        acknowledged = dict(enqueuer.acknowledged)

        def settled() -> bool:
            counts = worker_counts(client, coordinators[0].base_url)
            return all(counts[n]["scheduled"] + counts[n]["retrying"] + counts[n]["running"] == 0 for n in names)

        wait_until(settled, 90, "every acknowledged job finished (leases of the killed master's jobs expired)")
        states: dict[str, str] = {}
        for n, job_id in enumerate(acknowledged):
            resp = client.get(f"{coordinators[n % 2].base_url}/job/{job_id}")
            states[job_id] = "lost" if resp.status_code == 404 else resp.json()["state"]
        lost = sorted(job_id for job_id, state in states.items() if state == "lost")
        print(f"\nfailover: {len(acknowledged)} jobs acknowledged, {len(lost)} lost by Redis "
              f"(master {killed.port} killed; replica promoted after {promoted_at - killed_at:.1f} s); "
              f"answers: {sorted(set(enqueuer.statuses))}")
        assert {state for state in states.values()} <= {"succeeded", "lost"}, {
            job_id: state for job_id, state in states.items() if state not in ("succeeded", "lost")}
        # Only what the killed master had acknowledged and not yet replicated can be lost.
        assert all(job_id.startswith(f"{names[0]}:") and acknowledged[job_id] <= killed_at for job_id in lost), lost
        assert len(lost) <= 200, len(lost)
        assert set(enqueuer.statuses) <= {201, 503}, enqueuer.bodies[:3]
        assert all(c.alive() for c in coordinators)
        unexpected = [line for c in coordinators for line in c.log().splitlines()
                      if re.search(r" ERROR |Traceback|internal error", line)]
        assert unexpected == [], unexpected[:5]
        health = client.get(f"{coordinators[1].base_url}/health")
        assert health.status_code == 200 and killed.port not in {
            int(name.rsplit(":", 1)[1]) for name in health.json()["masters"]}, health.text
