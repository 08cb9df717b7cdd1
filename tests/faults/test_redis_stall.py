"""A Redis that stops answering (SIGSTOP) for longer than the client's 1 s timeout and the
jobs' leases, under a real ``redisq serve`` and a real worker.

What a user checks: no job whose worker answered 200 ends dead (``maxAttempts: 1``), no
job is sent twice or charged an attempt for a call that never left, and while Redis is
frozen every route answers 503 within about a second instead of hanging.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from redisq.job_fields import JOB_FIELDS
from redisq.keys import job_key

from redis_server import RedisServer, free_port
from test_resilience import (
    WORKER,
    WorkerSink,
    client,  # noqa: F401 (fixture)
    enqueue,
    job_states,
    start_coordinator,
    start_redis,
    wait_until,
    write_config,
)

JOBS = 3000
STALL_S = 4.0  # > the client's 1 s timeout, > the 2 s leases
# (at most 200 calls at once: the stand-in worker, a thread of this process, keeps up on a
# busy machine, so a call's 2 s timeout measures Redis's stall, not the worker's backlog)


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def final_states(server: RedisServer, ids: list[str], within_s: float) -> dict[str, tuple[str, int]]:
    """(state, attempts) of every job once none is waiting or running any more."""
    deadline = time.monotonic() + within_s
    while True:
        states = job_states(server, ids)
        unfinished = [j for j, (state, _) in states.items() if state not in ("succeeded", "dead")]
        if not unfinished:
            return states
        assert time.monotonic() < deadline, f"{len(unfinished)} jobs unfinished, e.g. {states[unfinished[0]]}"
        time.sleep(0.2)


def last_errors(server: RedisServer, ids: list[str]) -> dict[str, int]:
    """How many of the jobs died of each error."""
    r = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return dict(Counter(r.hget(job_key(job_id), JOB_FIELDS["last_error"]) for job_id in ids))
    finally:
        r.close()


def test_a_stall_past_the_timeout_and_the_leases_makes_no_answered_job_dead(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    with WorkerSink(lambda: 0.05) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              timeout_s=2.0, max_attempts=1, concurrency=200)
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url
        # due a second later, once all are in: the fault meets the dispatch, not the enqueue
        ids = [job_id for start in range(0, JOBS, 1000)
               for job_id in enqueue(client, base, [f"job-{n:04d}" for n in range(start, start + 1000)], delay=1)]
        wait_until(lambda: sink.completed_count() >= JOBS // 6, 30, "a sixth of the jobs answered")
        with frozen(server):
            time.sleep(STALL_S)
        states = final_states(server, ids, within_s=60)

    deliveries = sink.deliveries()
    dead = {j: s for j, s in states.items() if s[0] == "dead"}
    answered_and_dead = [j for j in dead if j in deliveries]
    assert not answered_and_dead, (f"{len(answered_and_dead)} jobs the worker answered 200 are dead: "
                                   f"{last_errors(server, answered_and_dead)}\n{coordinator.log()[-3000:]}")
    assert not dead, f"{len(dead)} jobs dead without ever being sent: {last_errors(server, list(dead))}"
    assert set(deliveries) == set(ids)
    sent_twice = {j: a for j, a in deliveries.items() if len(a) > 1}
    assert not sent_twice, f"{len(sent_twice)} jobs were sent more than once, e.g. {next(iter(sent_twice.items()))}"
    assert {attempts for _, attempts in states.values()} == {1}


def test_while_redis_is_frozen_every_route_answers_503_within_a_second(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    with WorkerSink(lambda: 0.01) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url)
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url
        (known,) = enqueue(client, base, ["before"])
        requests = [
            ("GET", "/health", None), ("GET", f"/job/{known}", None), ("GET", "/workers", None),
            ("GET", f"/workers/{WORKER}", None), ("GET", "/schedules", None),
            ("POST", "/job", {"worker": WORKER, "id": "during", "args": {}}),
            ("POST", "/jobs", {"jobs": [{"worker": WORKER, "id": "during-2", "args": {}}]}),
            ("DELETE", f"/job/{known}", None),
        ]
        answers = []
        with frozen(server):
            time.sleep(0.2)
            for method, path, body in requests:
                started = time.monotonic()
                resp = client.request(method, f"{base}{path}", json=body, timeout=10)
                answers.append((method, path, resp.status_code, resp.json(), time.monotonic() - started))
        for method, path, status, body, took_s in answers:
            assert status == 503, (method, path, status, body)
            assert body["error"].startswith("redis unavailable: "), (method, path, body)
            assert took_s < 2.0, f"{method} {path} took {took_s:.1f} s"  # the client's timeout is 1 s
        posted = [body for method, path, _, body, _ in answers if method == "POST"]
        assert all("may or may not have been written" in body["error"] for body in posted), posted

        # it recovers by itself; a job posted during the freeze was written or not, and a
        # repeat of the post tells which (its id is answered with the job either way)
        wait_until(lambda: client.get(f"{base}/health").status_code == 200, 10, "health again")
        resp = client.post(f"{base}/job", json={"worker": WORKER, "id": "during", "args": {}})
        assert resp.status_code in (200, 201), resp.text
        wait_until(lambda: client.get(f"{base}/job/{WORKER}:during").json()["state"] == "succeeded", 10,
                   "the job posted during the freeze to succeed")
        assert f"{WORKER}:during" in sink.deliveries()
