"""Redis killed with -9 mid-dispatch and started again from its append-only file
(``appendfsync always``), under a real ``redisq serve`` and a real worker.

What a user checks: every job the API accepted is still there and finishes; none whose
worker answered ends dead (``maxAttempts: 1``); no job is sent twice.
"""

from __future__ import annotations

import signal
import time

from redis_server import free_port
from test_resilience import (
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


def test_redis_killed_mid_dispatch_loses_no_accepted_job_and_kills_none(tmp_path, client, processes):
    server = start_redis(processes, "--appendonly", "yes", "--appendfsync", "always")
    port = free_port()
    with WorkerSink(lambda: 0.02) as sink:
        config = write_config(tmp_path / "redisq.toml", redis_url=server.url, port=port, worker_url=sink.url,
                              timeout_s=5.0, max_attempts=1)
        coordinator = start_coordinator(processes, client, config, port, tmp_path / "serve.log")
        base = coordinator.base_url
        # due a second later, once all are in: the fault meets the dispatch, not the enqueue
        ids = [job_id for start in range(0, JOBS, 1000)
               for job_id in enqueue(client, base, [f"job-{n:04d}" for n in range(start, start + 1000)], delay=1)]
        wait_until(lambda: sink.completed_count() >= JOBS // 6, 30, "a sixth of the jobs answered")
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        time.sleep(1.0)
        server.start()  # the same port and directory: it loads its append-only file

        deadline = time.monotonic() + 60
        while True:
            states = job_states(server, ids)
            unfinished = [j for j, (state, _) in states.items() if state not in ("succeeded", "dead")]
            if not unfinished:
                break
            assert time.monotonic() < deadline, (f"{len(unfinished)} jobs unfinished, e.g. "
                                                 f"{states[unfinished[0]]}\n{coordinator.log()[-3000:]}")
            time.sleep(0.2)
        assert coordinator.alive(), coordinator.log()

    lost = [j for j, (state, _) in states.items() if state is None]
    assert not lost, f"{len(lost)} accepted jobs are gone"
    dead = [j for j, (state, _) in states.items() if state == "dead"]
    assert not dead, f"{len(dead)} jobs dead, e.g. {dead[:5]}\n{coordinator.log()[-3000:]}"
    deliveries = sink.deliveries()
    assert set(deliveries) == set(ids)
    sent_twice = {j: a for j, a in deliveries.items() if len(a) > 1}
    assert not sent_twice, f"{len(sent_twice)} jobs were sent more than once, e.g. {next(iter(sent_twice.items()))}"
