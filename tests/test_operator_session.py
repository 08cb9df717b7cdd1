"""Issue 11's operator's session, as an operator runs it from the shell: a worker that 404s
(a wrong path, say) kills its jobs, `redisq jobs list --state dead` shows them, the worker is
fixed, `redisq jobs retry --worker W --state dead --all` runs them again, and all succeed.

On the embedded store and on a real Redis: `redisq serve` and every command a subprocess."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis

from stand_ins import StandInWorker
from test_cli import clean_env, nonblank_lines, run, serving, stand_in_config  # noqa: F401 (clean_env: a fixture)

JOBS = 6


def wait_for_counts(url: str, worker: str, timeout_s: float = 20.0, **expected: int) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = httpx.get(f"{url}/workers/{worker}", timeout=5).json()["jobs"]
        if all(counts[state] == n for state, n in expected.items()):
            return
        assert time.monotonic() < deadline, f"not {expected} within {timeout_s:g} s: {counts}"
        time.sleep(0.1)


def json_of(args: list[str], env: dict[str, str]) -> Any:
    done = run(args, env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_worker_that_404s_kills_jobs_that_the_operator_finds_and_runs_again_once_fixed(
        request, tmp_path, clean_env, store):
    redis_url = None
    if store == "redis":
        redis_url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(redis_url).flushdb()
    log: list[str] = []
    with (
        StandInWorker(404) as worker,
        serving(tmp_path, clean_env, stand_in_config("send-email", worker), redis_url=redis_url,
                log_lines=log) as (url, env),
    ):
        ids = []
        for n in range(JOBS):
            enqueued = run(["enqueue", "send-email", json.dumps({"args": {"n": n}}), "--id", f"welcome-{n}"], env)
            assert enqueued.returncode == 0, enqueued.stderr
            ids.append(f"send-email:welcome-{n}")
        wait_for_counts(url, "send-email", dead=JOBS)
        # the log says so: one WARNING per dead job, with its attempts and last error
        for job_id in ids:
            (line,) = [line for line in log if f"{job_id}: dead after" in line]
            assert "WARNING" in line and "dead after 2 attempts; last error: HTTP 404" in line, line

        listed = run(["jobs", "list", "--state", "dead"], env)  # no --worker: every worker's
        assert listed.returncode == 0, listed.stderr
        header, *rows = nonblank_lines(listed.stdout)
        assert header.split() == ["ID", "STATE", "ATTEMPTS", "RUN", "AT", "(UTC)", "FINISHED", "AT", "KEY",
                                  "LAST", "ERROR"]
        assert sorted(row.split()[0] for row in rows) == sorted(ids)
        assert all(row.split()[1:3] == ["dead", "2/2"] and "404" in row for row in rows), rows

        shown = run(["jobs", "show", ids[0]], env)
        assert shown.returncode == 0, shown.stderr
        attempts = shown.stdout.split("ATTEMPT", 1)[1].splitlines()[1:]
        assert [line.split()[0] for line in attempts] == ["1", "2"], shown.stdout
        assert all("failed" in line and "404" in line for line in attempts), shown.stdout

        worker.status = 200  # the fix is deployed
        retried = run(["jobs", "retry", "--worker", "send-email", "--state", "dead", "--all"], env)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout == f"retried {JOBS} dead jobs of send-email\n"
        wait_for_counts(url, "send-email", succeeded=JOBS, dead=0)

        succeeded = json_of(["jobs", "list", "--worker", "send-email", "--state", "succeeded", "--json"], env)
        assert sorted(job["id"] for job in succeeded["jobs"]) == sorted(ids)
        assert all(job["state"] == "succeeded" and job["attempts"] == 1 for job in succeeded["jobs"])
        assert succeeded["counts"]["succeeded"] == JOBS and succeeded["counts"]["dead"] == 0
        assert run(["jobs", "list", "--state", "dead"], env).stdout == "no dead jobs\n"
        assert all(worker.calls[job_id] == 3 for job_id in ids), worker.calls  # 2 that 404ed, 1 that succeeded
