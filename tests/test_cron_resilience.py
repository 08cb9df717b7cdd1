"""Cron schedules end to end: real ``redisq serve`` processes on a real redis-server, a
real worker (the counting sink of ``test_resilience.py``).

- 3 coordinators on one Redis, a ``* * * * * *`` schedule for 10 s: exactly one job per
  second, each delivered to the worker once.
- A coordinator killed (-9) and started again 3 s later: no tick lost, none twice.
- ``redisq schedules`` lists what the API holds.

What is asserted is what a user would look at: the jobs (``GET /job/{id}``), the
schedule (``GET /schedule/{id}``), what the worker received, the CLI's output.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import redis

from redisq.keys import WorkerKeys

from redis_server import free_port
from test_resilience import (  # noqa: F401 (fixtures)
    WORKER,
    WorkerSink,
    clean_env,
    client,
    start_coordinator,
    start_redis,
    wait_all_succeeded,
    write_config,
)

SCHEDULE_ID = f"{WORKER}:every-second"


def create_every_second(client: httpx.Client, base_url: str) -> dict[str, Any]:
    resp = client.post(f"{base_url}/job", json={"worker": WORKER, "cron": "* * * * * *", "id": "every-second",
                                                  "args": {"report": "tick"}})
    assert resp.status_code == 201, resp.text
    return resp.json()


def tick_job_ids(server_url: str) -> list[str]:
    """Every job the schedule's ticks created, oldest tick first (read from Redis)."""
    keys = WorkerKeys(WORKER)
    r = redis.Redis.from_url(server_url)
    try:
        ids = [f"{WORKER}:{key.decode()[len(keys.job_prefix):]}"
               for key in r.scan_iter(match=keys.job_prefix + "every-second@*")]
    finally:
        r.close()
    return sorted(ids, key=fire_ms)


def fire_ms(job_id: str) -> int:
    return int(job_id.rsplit("@", 1)[1])


def assert_one_job_per_second(job_ids: list[str], at_least: int) -> None:
    ticks = [fire_ms(j) for j in job_ids]
    assert len(ticks) >= at_least, ticks
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1000] * (len(ticks) - 1), ticks


def test_three_coordinators_fire_exactly_one_job_per_second(tmp_path, client, processes):
    server = start_redis(processes)
    ports = [free_port() for _ in range(3)]
    with WorkerSink(lambda: 0.01) as sink:
        coordinators = []
        for n, port in enumerate(ports):
            config = write_config(tmp_path / f"redisq-{n}.toml", redis_url=server.url, port=port, worker_url=sink.url)
            coordinators.append(start_coordinator(processes, client, config, port, tmp_path / f"c{n}.log"))
        schedule = create_every_second(client, coordinators[0].base_url)
        time.sleep(10.2)
        # stop ticking through another coordinator than the one that created it
        assert client.delete(f"{coordinators[2].base_url}/schedule/{SCHEDULE_ID}").status_code == 200
        job_ids = tick_job_ids(server.url)
        assert fire_ms(job_ids[0]) == int(time_ms(schedule["nextRunAt"]))
        assert_one_job_per_second(job_ids, at_least=10)
        final = wait_all_succeeded(client, coordinators[1].base_url, job_ids, within_s=10)
        assert all(final[j]["args"] == {"report": "tick"} for j in job_ids)
        time.sleep(1.2)
        assert tick_job_ids(server.url) == job_ids, "no tick after the delete"
        deliveries = sink.deliveries()
        assert set(deliveries) == set(job_ids)
        assert all(attempts == [1] for attempts in deliveries.values()), deliveries
        for c in coordinators:
            assert "Traceback" not in c.log(), c.log()


def test_a_coordinator_restart_loses_no_tick_and_duplicates_none(tmp_path, client, processes):
    server = start_redis(processes)
    port = free_port()
    with WorkerSink(lambda: 0.01) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url)
        first = start_coordinator(processes, client, config, port, tmp_path / "first.log")
        create_every_second(client, first.base_url)
        time.sleep(3.2)
        first.process.send_signal(signal.SIGKILL)
        assert first.wait_exit(5) == -signal.SIGKILL
        before = tick_job_ids(server.url)
        time.sleep(3.0)  # nobody ticks
        assert tick_job_ids(server.url) == before
        second = start_coordinator(processes, client, config, port, tmp_path / "second.log")
        time.sleep(3.2)
        assert client.post(f"{second.base_url}/schedule/{SCHEDULE_ID}/pause").status_code == 200
        job_ids = tick_job_ids(server.url)
        assert job_ids[:len(before)] == before
        assert_one_job_per_second(job_ids, at_least=len(before) + 6)  # the missed ticks fired late, each once
        wait_all_succeeded(client, second.base_url, job_ids, within_s=15)
        assert set(sink.delivered_ids()) == set(job_ids)
        got = client.get(f"{second.base_url}/schedule/{SCHEDULE_ID}").json()
        assert got["paused"] is True and got["lastFireAt"] is not None
        assert [j["id"] for j in got["lastJobs"]] == job_ids[::-1][:10]
        assert all(j["state"] == "succeeded" for j in got["lastJobs"])

        # the CLI lists it, through the API
        done = subprocess.run([sys.executable, "-m", "redisq.cli", "schedules", "--url", second.base_url],
                              capture_output=True, text=True, env=clean_env(), timeout=30)
        assert done.returncode == 0, done.stderr
        header, row = done.stdout.splitlines()
        assert header.split() == ["ID", "CRON", "TIMEZONE", "STATE", "NEXT", "RUN", "LAST", "FIRE"]
        assert row.split()[:8] == [SCHEDULE_ID, "*", "*", "*", "*", "*", "*", "UTC"] and "paused" in row


def time_ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() * 1000
