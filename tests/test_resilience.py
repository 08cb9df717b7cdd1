"""End-to-end resilience: a real ``redisq serve`` process, a real redis-server, a real worker.

Every test starts its own redis-server (so it can stop or kill it), runs ``redisq serve
--config <file>`` as a subprocess, and points the config's workers at a small aiohttp
server in this process that counts every delivery per job id. What is asserted is what a
user would look at: ``GET /job/{id}``, ``GET /health``, exit codes and the log.

- kill -9 mid-run loses nothing: a new coordinator on the same Redis finishes every job
  (leases of the dead one expire and are retried; some jobs are delivered twice).
- SIGTERM drains: in-flight calls finish and are settled, nothing new is claimed, the
  process exits 0 within the grace period; a grace shorter than the worker's latency
  still exits on time and the abandoned attempts are retried by the lease rule.
- A Redis outage answers 503 (never 500, never a hang), the process stays up, and it
  recovers by itself when Redis is back, with nothing accepted before lost.
- A Redis that may evict keys gets a warning naming noeviction at startup.
- A config mistake exits non-zero with one line naming the file, the key and the problem.

Every wait is bounded by a deadline, and every process is ended in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import web

from redisq.job_fields import stored
from redisq.keys import job_key

from redis_server import RedisServer, free_port

SECRET = "resilience-test-secret"
WORKER = "sink"


# -- the worker: an HTTP endpoint that counts deliveries ---------------------------------

class WorkerSink:
    """An aiohttp server on 127.0.0.1 in a background thread, standing in for a worker URL.

    Every POST is one delivery: it is recorded (job id, attempt) on arrival, answered 200
    after ``latency_s()`` seconds, and recorded again as completed when it answers."""

    def __init__(self, latency_s: Callable[[], float]):
        self.latency_s = latency_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/work"
        self._lock = threading.Lock()
        self._deliveries: dict[str, list[int]] = defaultdict(list)
        self._completed: dict[str, int] = defaultdict(int)
        self._in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="worker-sink", daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        job_id, attempt = body["jobId"], body["attempt"]
        with self._lock:
            self._deliveries[job_id].append(attempt)
            self._in_flight += 1
        try:
            await asyncio.sleep(self.latency_s())
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._completed[job_id] += 1
        return web.json_response({"ok": True, "jobId": job_id})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/work", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def __enter__(self) -> WorkerSink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    # what the test reads
    def deliveries(self) -> dict[str, list[int]]:
        with self._lock:
            return {job_id: list(attempts) for job_id, attempts in self._deliveries.items()}

    def delivered_ids(self) -> set[str]:
        with self._lock:
            return set(self._deliveries)

    def completed_count(self) -> int:
        with self._lock:
            return sum(self._completed.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight


# -- the coordinator: `redisq serve` as a subprocess --------------------------------------

def write_config(path: Path, *, redis_url: str, port: int, worker_url: str, shutdown_grace: float = 5.0,
                 timeout_s: float = 2.0, concurrency: int | None = None, max_attempts: int = 10,
                 worker_lines: tuple[str, ...] = ()) -> Path:
    lines = [
        f'redis_url = "{redis_url}"',
        f'public_url = "http://127.0.0.1:{port}"',
        f'port = {port}',
        f'secret = "{SECRET}"',
        f'shutdown_grace = {shutdown_grace}',
        "",
        f"[workers.{WORKER}]",
        f'url = "{worker_url}"',
        f"timeout = {timeout_s}",
        f"max_attempts = {max_attempts}",
    ]
    if concurrency is not None:
        lines.append(f"concurrency = {concurrency}")
    lines += worker_lines
    lines += ["", f"[workers.{WORKER}.backoff]", "initial = 0.1", "max = 0.5"]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env() -> dict[str, str]:
    """No REDISQ_* from the caller's shell: the config file alone decides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDISQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Coordinator:
    """One `redisq serve` process; its stdout and stderr go to a log file."""

    def __init__(self, config: Path, port: int, log_path: Path):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (the process writes to it until kill() closes it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "redisq.cli", "serve", "--config", str(config), "--port", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=clean_env(),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_healthy(self, client: httpx.Client, within_s: float = 20.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self.alive(), f"redisq serve exited with {self.process.returncode}:\n{self.log()}"
            try:
                if client.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"redisq serve was not healthy within {within_s} s:\n{self.log()}")

    def wait_exit(self, within_s: float) -> int:
        try:
            return self.process.wait(within_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"redisq serve did not exit within {within_s} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def start_redis(processes: list[Any], *extra_args: str) -> RedisServer:
    server = RedisServer(None, *extra_args)
    processes.append(server)
    try:
        return server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def start_coordinator(processes: list[Any], client: httpx.Client, config: Path, port: int,
                      log_path: Path) -> Coordinator:
    coordinator = Coordinator(config, port, log_path)
    processes.append(coordinator)
    coordinator.wait_healthy(client)
    return coordinator


def enqueue(client: httpx.Client, base_url: str, ids: list[str], **fields: Any) -> list[str]:
    resp = client.post(f"{base_url}/jobs",
                       json={"jobs": [{"worker": WORKER, "id": i, "args": {"n": i}, **fields} for i in ids]})
    assert resp.status_code == 201, resp.text
    assert resp.json()["created"] == len(ids)
    return [job["id"] for job in resp.json()["jobs"]]


def job(client: httpx.Client, base_url: str, job_id: str) -> dict[str, Any]:
    resp = client.get(f"{base_url}/job/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_all_succeeded(client: httpx.Client, base_url: str, job_ids: list[str], within_s: float,
                       coordinator: Coordinator | None = None) -> dict[str, dict[str, Any]]:
    """Poll GET /job until every job is 'succeeded'; fail on 'dead' or at the deadline."""
    deadline = time.monotonic() + within_s
    done: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for job_id in [j for j in job_ids if j not in done]:
            state = last[job_id] = job(client, base_url, job_id)
            assert state["state"] != "dead", state
            if state["state"] == "succeeded":
                done[job_id] = state
        if len(done) == len(job_ids):
            return done
        time.sleep(0.1)
    stuck = {j: (last[j]["state"], last[j]["attempts"], last[j]["lastError"]) for j in job_ids if j not in done}
    log = coordinator.log() if coordinator else ""
    raise AssertionError(f"{len(stuck)} of {len(job_ids)} jobs not succeeded within {within_s} s: "
                         f"{dict(list(stuck.items())[:10])}\n{log}")


def wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


# -- 1. at-least-once across kill -9 -------------------------------------------------------

def test_kill_9_mid_run_loses_no_job_and_a_new_coordinator_finishes_them(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    with WorkerSink(lambda: random.uniform(0.05, 0.1)) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port,
                              worker_url=sink.url, timeout_s=2.0, concurrency=25)
        first = start_coordinator(processes, client, config, port, tmp_path / "first.log")
        ids = enqueue(client, first.base_url, [f"job-{n:03d}" for n in range(300)])

        # kill -9 once some, but far from all, jobs have been answered: 25 are in flight
        wait_until(lambda: sink.completed_count() >= 60, 20, "60 deliveries answered")
        first.process.send_signal(signal.SIGKILL)
        assert first.wait_exit(5) == -signal.SIGKILL
        delivered_before_kill = len(sink.delivered_ids())
        assert 60 <= delivered_before_kill < 300, delivered_before_kill

        # mid-run: some jobs finished, some held by the dead process's leases, some not started
        states = job_states(server, ids)
        assert {"succeeded", "running", "scheduled"} <= {state for state, _ in states.values()}, states
        held_by_the_dead = {j for j, (state, _) in states.items() if state == "running"}
        second = start_coordinator(processes, client, config, port, tmp_path / "second.log")
        final = wait_all_succeeded(client, second.base_url, ids, within_s=30, coordinator=second)

    deliveries = sink.deliveries()
    assert set(deliveries) == set(ids), "every job reached the worker"
    for job_id in ids:
        delivered = deliveries[job_id]
        assert final[job_id]["state"] == "succeeded"
        # at-least-once: delivered one or more times, and never more often than attempted
        assert 1 <= len(delivered) <= final[job_id]["attempts"], (job_id, delivered, final[job_id])
    # exactly the jobs the dead process held were retried, once their 2 s lease ran out
    retried = {j for j in ids if final[j]["attempts"] > 1}
    assert retried == held_by_the_dead, (sorted(retried), sorted(held_by_the_dead))
    for job_id in retried:
        assert final[job_id]["attempts"] == 2 and final[job_id]["lastError"] == "timed out", final[job_id]
    delivered_twice = {j for j, attempts in deliveries.items() if len(attempts) > 1}
    assert delivered_twice <= held_by_the_dead


# -- 2. graceful shutdown -------------------------------------------------------------------

@dataclass
class Shutdown:
    """How a coordinator left after SIGTERM: its exit status (None = still running at the
    deadline, then killed) and the seconds it took."""

    code: int | None
    took_s: float
    log: str

    def assert_exited_0_within(self, limit_s: float) -> None:
        assert self.code is not None, f"redisq serve was still running {self.took_s:.1f} s after SIGTERM:\n{self.log}"
        assert self.took_s < limit_s, f"exited {self.took_s:.1f} s after SIGTERM; expected under {limit_s} s"
        assert self.code == 0, f"redisq serve exited with status {self.code} after SIGTERM:\n{self.log}"


def sigterm(coordinator: Coordinator, deadline_s: float) -> Shutdown:
    """SIGTERM, then wait; a process still running at the deadline is killed so that the
    test can go on to check what it left in Redis (and fail at the end)."""
    signalled_at = time.monotonic()
    coordinator.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = coordinator.process.wait(deadline_s)
    except subprocess.TimeoutExpired:
        code = None
    took_s = time.monotonic() - signalled_at
    coordinator.kill()
    return Shutdown(code, took_s, coordinator.log())


def job_states(server: RedisServer, ids: list[str]) -> dict[str, tuple[str, int]]:
    """(state, attempts) per job, read from Redis directly while no coordinator runs."""
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        out = {}
        for job_id in ids:
            state, attempts = r.hmget(job_key(job_id), *stored("state", "attempts"))
            out[job_id] = (state, int(attempts or 0))
        return out
    finally:
        r.close()


def test_sigterm_finishes_in_flight_calls_and_leaves_the_rest_scheduled(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    grace_s = 5.0
    with WorkerSink(lambda: 1.0) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              shutdown_grace=grace_s, timeout_s=3.0, concurrency=5)
        first = start_coordinator(processes, client, config, port, tmp_path / "first.log")
        ids = enqueue(client, first.base_url, [f"job-{n:02d}" for n in range(20)])

        wait_until(lambda: sink.in_flight == 5, 10, "5 calls in flight at the worker")
        shutdown = sigterm(first, deadline_s=grace_s + 5)
        assert sink.in_flight == 0, "the process left before its in-flight calls had finished"

        # nothing new was claimed after SIGTERM; what was in flight was settled
        started = sink.delivered_ids()
        assert len(started) == 5, f"{len(started)} jobs reached the worker; only the 5 in flight should have"
        states = job_states(server, ids)
        for job_id in ids:
            expected = ("succeeded", 1) if job_id in started else ("scheduled", 0)
            assert states[job_id] == expected, (job_id, states[job_id])

        second = start_coordinator(processes, client, config, port, tmp_path / "second.log")
        final = wait_all_succeeded(client, second.base_url, ids, within_s=20, coordinator=second)
    assert all(final[j]["attempts"] == 1 for j in ids), {j: final[j]["attempts"] for j in ids}
    assert all(len(attempts) == 1 for attempts in sink.deliveries().values()), "a job was delivered twice"
    shutdown.assert_exited_0_within(grace_s)


def test_grace_shorter_than_the_worker_exits_on_time_and_the_lease_rule_retries(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    grace_s, latency_s = 0.5, 2.5
    with WorkerSink(lambda: latency_s) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              shutdown_grace=grace_s, timeout_s=3.5, concurrency=4)
        first = start_coordinator(processes, client, config, port, tmp_path / "first.log")
        ids = enqueue(client, first.base_url, [f"job-{n:02d}" for n in range(10)])

        wait_until(lambda: sink.in_flight == 4, 10, "4 calls in flight at the worker")
        shutdown = sigterm(first, deadline_s=grace_s + 5)
        assert shutdown.took_s < latency_s, f"waited {shutdown.took_s:.1f} s for calls the grace period gave up on"
        assert sink.in_flight == 4, "the worker's calls should still be running when the process has left"
        abandoned = sink.delivered_ids()
        assert len(abandoned) == 4
        states = job_states(server, ids)
        for job_id in ids:
            # abandoned attempts keep their lease; the rest were never claimed
            expected = ("running", 1) if job_id in abandoned else ("scheduled", 0)
            assert states[job_id] == expected, (job_id, states[job_id])

        second = start_coordinator(processes, client, config, port, tmp_path / "second.log")
        final = wait_all_succeeded(client, second.base_url, ids, within_s=25, coordinator=second)
    for job_id in ids:
        if job_id in abandoned:
            # attempt 1 was abandoned at shutdown; its lease ran out and attempt 2 succeeded
            assert final[job_id]["attempts"] == 2, final[job_id]
            assert final[job_id]["lastError"] == "timed out", final[job_id]
        else:
            assert final[job_id]["attempts"] == 1, final[job_id]
    shutdown.assert_exited_0_within(grace_s + 1.0)


# -- 3. Redis outage --------------------------------------------------------------------------

def test_redis_outage_answers_503_and_recovers_without_losing_jobs(tmp_path, client, processes):
    server = start_redis(processes, "--appendonly", "yes", "--appendfsync", "always")
    port = free_port()
    with WorkerSink(lambda: 0.01) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url)
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url
        done_before = enqueue(client, base, [f"early-{n}" for n in range(10)])
        wait_all_succeeded(client, base, done_before, within_s=10, coordinator=coordinator)
        # accepted before the outage, due during it
        due_during = enqueue(client, base, [f"delayed-{n}" for n in range(10)], delay=1.5)

        server.stop()
        outage_started = time.monotonic()

        def timed(method: str, path: str, **kw: Any) -> httpx.Response:
            began = time.monotonic()
            resp = client.request(method, f"{base}{path}", **kw)
            took_s = time.monotonic() - began
            assert took_s < 5, f"{method} {path} took {took_s:.1f} s during the outage"
            return resp

        health = timed("GET", "/health")
        assert health.status_code == 503, health.text
        assert health.json()["error"], health.json()
        posted = timed("POST", "/job", json={"worker": WORKER, "args": {}})
        assert posted.status_code == 503, posted.text
        assert isinstance(posted.json().get("error"), str) and posted.json()["error"], posted.json()
        got = timed("GET", f"/job/{due_during[0]}")
        assert got.status_code == 503, got.text
        assert "error" in got.json()
        batch = timed("POST", "/jobs", json={"jobs": [{"worker": WORKER}]})
        assert batch.status_code == 503, batch.text

        # the delayed jobs fall due while Redis is down; the process rides it out
        while time.monotonic() - outage_started < 2.5:
            assert coordinator.alive(), coordinator.log()
            assert timed("GET", "/health").status_code == 503
            time.sleep(0.25)
        assert coordinator.alive(), coordinator.log()

        server.start()
        wait_until(lambda: client.get(f"{base}/health").status_code == 200, 15, "health 200 after redis came back")
        after = enqueue(client, base, [f"late-{n}" for n in range(10)])
        final = wait_all_succeeded(client, base, done_before + due_during + after, within_s=20, coordinator=coordinator)
        assert coordinator.alive()
    assert set(final) == set(done_before + due_during + after)
    assert set(done_before + due_during + after) <= sink.delivered_ids()
    assert "Traceback" not in coordinator.log(), coordinator.log()


# -- 4. startup warning ----------------------------------------------------------------------

def test_serve_warns_when_redis_may_evict_keys(tmp_path, client, processes):
    server = start_redis(processes)
    r = redis.Redis.from_url(server.url)
    try:
        r.config_set("maxmemory-policy", "allkeys-lru")
    finally:
        r.close()
    port = free_port()
    config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url="http://127.0.0.1:9/work")
    coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
    wait_until(lambda: "noeviction" in coordinator.log(), 10, "a warning that names noeviction")
    warning = next(line for line in coordinator.log().splitlines() if "noeviction" in line)
    assert "WARNING" in warning and "allkeys-lru" in warning, warning


def test_serve_does_not_warn_when_redis_is_noeviction(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url="http://127.0.0.1:9/work")
    coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
    assert "maxmemory-policy" not in coordinator.log(), coordinator.log()


# -- 5. config errors --------------------------------------------------------------------------

def test_a_config_error_exits_non_zero_with_one_line_naming_file_key_and_problem(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(f'redis_url = "redis://127.0.0.1:9/0"\n\n'
                      f'[workers.{WORKER}]\nurl = "http://127.0.0.1:9/work"\nrate = -1\n')
    done = subprocess.run([sys.executable, "-m", "redisq.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, env=clean_env())
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert str(config) in line, line
    assert f"workers.{WORKER}.rate" in line, line
    assert "> 0" in line and "-1" in line, line
