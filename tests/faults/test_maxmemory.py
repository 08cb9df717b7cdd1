"""A Redis at ``maxmemory`` (``noeviction``) under a real ``redisq serve`` and worker.

What a user checks: while Redis is full, enqueue answers 503 naming maxmemory; the jobs
accepted before are still dispatched and finished (claim and settle run at maxmemory),
purge frees them when their retention passes, and enqueue works again by itself.
"""

from __future__ import annotations

import redis

from redisq.keys import WorkerKeys

from redis_server import free_port
from test_resilience import (
    WORKER,
    WorkerSink,
    client,  # noqa: F401 (fixture)
    processes,  # noqa: F401 (fixture)
    start_coordinator,
    start_redis,
    wait_until,
    write_config,
)

PADDING = "x" * 300


def test_a_full_redis_still_dispatches_and_purges_and_enqueue_recovers_by_itself(tmp_path, client,  # noqa: F811
                                                                                   processes):  # noqa: F811
    server = start_redis(processes, "--maxmemory", "6mb", "--maxmemory-policy", "noeviction")
    port = free_port()
    with WorkerSink(lambda: 0.005) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              worker_lines=("retention = { succeeded = 1, dead = 1 }",))
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url

        # fill Redis with jobs due in 2 s, until it refuses them
        accepted: list[str] = []
        refusal = None
        for batch in range(100):
            jobs = [{"worker": WORKER, "id": f"j{batch}-{n}", "args": {"pad": PADDING}, "delay": 2}
                    for n in range(500)]
            resp = client.post(f"{base}/jobs", json={"jobs": jobs})
            if resp.status_code == 503:
                refusal = resp.json()
                break
            assert resp.status_code == 201, resp.text
            accepted += [job["id"] for job in resp.json()["jobs"]]
        assert refusal is not None, "Redis never filled up"
        assert "maxmemory" in refusal["error"], refusal
        assert len(accepted) >= 2000, len(accepted)

        # every job accepted is dispatched although Redis is full, and purge makes room
        wait_until(lambda: set(accepted) <= sink.delivered_ids(), 60,
                   f"the {len(accepted)} accepted jobs to reach the worker\n{coordinator.log()[-2000:]}")
        r = redis.Redis.from_url(server.url)
        try:
            wait_until(lambda: r.zcard(WorkerKeys(WORKER).finished) == 0, 30, "the finished jobs to be purged")
        finally:
            r.close()
        resp = client.post(f"{base}/job", json={"worker": WORKER, "id": "after", "args": {}})
        assert resp.status_code == 201, resp.text
        wait_until(lambda: f"{WORKER}:after" in sink.delivered_ids(), 10, "the job posted afterwards to run")
