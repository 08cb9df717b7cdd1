"""``redisq serve --processes N`` as an operator runs it: a subprocess on a real Redis, jobs
posted to its one port, its children seen in ``/proc``; a child killed with SIGKILL is
started again and the jobs still all succeed; SIGTERM to the parent drains every child
(the calls in flight finish) and it exits 0.

Every wait is bounded, and every process started here is ended in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from redisq.config import Config, WorkerConfig
from redisq.engine import Engine

from redis_server import free_port
from stand_ins import Answer, _Served
from test_cli import ServeProcess, clean_env  # noqa: F401  (a fixture)

FINISHED = ("succeeded", "dead", "cancelled")


class SlowWorker(_Served):
    """Answers 200 after ``delay_s``; counts each job's calls as they arrive."""

    def __init__(self, delay_s: float):
        super().__init__(self._dispatched)
        self._server.socket.listen(1024)  # http.server's backlog of 5 would hold back hundreds of calls
        # the calls of a child killed mid-call end in broken pipes here, as they should: not printed
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.delay_s = delay_s
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.url = f"{self.base_url}/work"

    def _dispatched(self, method: str, path: str, body: Any) -> Answer:
        with self._lock:
            self.calls[(body or {}).get("jobId", "?")] += 1
        time.sleep(self.delay_s)
        return 200, {"ok": True}

    def arrived(self) -> int:
        with self._lock:
            return sum(self.calls.values())


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listed:
        return [int(child) for child in listed.read().split()]


def two_children(pid: int) -> list[int] | None:
    children = children_of(pid)
    return children if len(children) == 2 else None


def wait_until(check: Any, what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.05)


def config_text(redis_url: str, port: int, worker: SlowWorker, timeout_s: float = 5.0) -> str:
    return (f'redis_url = "{redis_url}"\nport = {port}\nsecret = "supervisor-test"\nshutdown_grace = 10\n'
            f'[workers.work]\nurl = "{worker.url}"\ntimeout = {timeout_s}\nmax_attempts = 5\n'
            "backoff = { initial = 0.05, factor = 1.0, jitter = false }\n")


def enqueue(port: int, count: int, prefix: str) -> list[str]:
    jobs = [{"worker": "work", "id": f"{prefix}-{n}"} for n in range(count)]
    resp = httpx.post(f"http://127.0.0.1:{port}/jobs", json={"jobs": jobs}, timeout=10.0)
    assert resp.status_code == 201, resp.text
    return [job["id"] for job in resp.json()["jobs"]]


def states(redis_url: str, ids: list[str]) -> list[tuple[str, int]]:
    """(state, attempts) of each job, read from Redis as any coordinator would."""
    async def read() -> list[tuple[str, int]]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            engine = Engine(client, Config(workers={"work": WorkerConfig(name="work", url="http://unused/")}))
            jobs = [await engine.get(job_id) for job_id in ids]
            return [(job.state.value, job.attempts) for job in jobs]
        finally:
            await client.aclose()
    return asyncio.run(read())


def all_finished(redis_url: str, ids: list[str]) -> list[tuple[str, int]] | None:
    seen = states(redis_url, ids)
    return seen if all(state in FINISHED for state, _ in seen) else None


@pytest.fixture
def flushed_redis(redis_url: str) -> str:
    client = sync_redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture
def two_processes(tmp_path: Path, clean_env: dict[str, str], flushed_redis: str) -> Iterator[tuple[ServeProcess, int,
                                                                                                      SlowWorker]]:
    port = free_port()
    with SlowWorker(delay_s=0.2) as worker:
        (tmp_path / "redisq.toml").write_text(config_text(flushed_redis, port, worker))
        serve = ServeProcess(["--config", str(tmp_path / "redisq.toml"), "--processes", "2"], clean_env, tmp_path)
        try:
            wait_until(lambda: len([line for line in serve.lines if "serving on" in line]) == 2,
                       "two coordinator processes serving")
            yield serve, port, worker
        finally:
            serve.stop()


def test_two_processes_serve_one_port_and_every_job_succeeds(two_processes, flushed_redis):
    serve, port, worker = two_processes
    children = children_of(serve.process.pid)
    assert len(children) == 2, children
    ids = enqueue(port, 300, "two")
    done = wait_until(lambda: all_finished(flushed_redis, ids), "all 300 jobs finished", 30.0)
    assert done == [("succeeded", 1)] * 300
    assert sorted(worker.calls) == sorted(ids) and set(worker.calls.values()) == {1}


def test_a_child_killed_with_sigkill_is_started_again_and_the_jobs_still_all_succeed(two_processes, flushed_redis):
    serve, port, worker = two_processes
    victim, survivor = children_of(serve.process.pid)
    ids = enqueue(port, 300, "killed")
    wait_until(lambda: worker.arrived() >= 20, "calls in flight")
    os.kill(victim, signal.SIGKILL)  # with calls of its own in flight: their leases expire, they are retried
    line = serve.wait_for_line(f"coordinator process {victim} was killed by SIGKILL")
    assert "starting another" in line
    serve.wait_for_line(f"started in place of {victim}")
    children = wait_until(lambda: two_children(serve.process.pid), "a second child again")
    assert survivor in children and victim not in children
    ids += enqueue(port, 100, "after")
    done = wait_until(lambda: all_finished(flushed_redis, ids), "all 400 jobs finished", 40.0)
    assert {state for state, _ in done} == {"succeeded"}
    assert sorted(worker.calls) == sorted(ids)


def test_sigterm_to_the_parent_drains_every_child_and_exits_0(tmp_path, clean_env, flushed_redis):
    port = free_port()
    with SlowWorker(delay_s=1.5) as worker:
        (tmp_path / "redisq.toml").write_text(config_text(flushed_redis, port, worker, timeout_s=10.0))
        serve = ServeProcess(["--config", str(tmp_path / "redisq.toml"), "--processes", "2"], clean_env, tmp_path)
        try:
            wait_until(lambda: len([line for line in serve.lines if "serving on" in line]) == 2,
                       "two coordinator processes serving")
            children = children_of(serve.process.pid)
            ids = enqueue(port, 40, "drained")
            wait_until(lambda: worker.arrived() == 40, "all 40 calls in flight")
            serve.process.send_signal(signal.SIGTERM)
            assert serve.process.wait(20) == 0, serve.lines
            assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")], "a child outlived its parent"
        finally:
            serve.stop()
    assert states(flushed_redis, ids) == [("succeeded", 1)] * 40  # the calls in flight finished, and were settled
    assert not [line for line in serve.lines if "Traceback" in line or "did not finish" in line], serve.lines


def test_a_child_that_cannot_start_stops_the_others_and_serve_exits_1(tmp_path, clean_env):
    config = tmp_path / "redisq.toml"
    config.write_text(f'redis_url = "redis://127.0.0.1:{free_port()}/0"\nport = {free_port()}\n'
                      '[workers.work]\nurl = "http://127.0.0.1:9/work"\n')
    serve = ServeProcess(["--config", str(config), "--processes", "2"], clean_env, tmp_path)
    try:
        assert serve.process.wait(40) == 1, serve.lines
    finally:
        serve.stop()
    assert [line for line in serve.lines if line.startswith("redisq: cannot reach redis")], serve.lines
    assert [line for line in serve.lines if "could not start; stopping the others" in line], serve.lines
