"""The coordinator's log as an operator reads it: a real ``redisq serve`` on a real Redis, a
real worker over HTTP, and the lines it writes, in text and in JSON (every JSON line parsed).

- a job that fails (500) and then dies (404): the retried INFO line and the dead WARNING line,
  with worker, id, attempt(s), last error, next run;
- a 429 with Retry-After: the paused line (a throttle key INFO, the whole worker WARNING);
- PATCH /workers/NAME by a named API token: the line names the token and the changes;
- Redis stopped and started: "redis lost" and "redis back", once each;
- the start-up summary; access lines only with access_log.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from redisq.config import ConfigError, load_config, parse_config

from redis_server import RedisServer, free_port
from test_resilience import Coordinator, client, start_coordinator, start_redis  # noqa: F401 (fixtures)

SECRET = "logs-test-secret"
WORKER = "sink"

# (job id, attempt) -> (status, headers, body)
Answer = tuple[int, dict[str, str], str]
Script = Callable[[str, int], Answer]


class ScriptedWorker:
    """A worker URL (aiohttp, in a thread) that answers each attempt as ``script`` says."""

    def __init__(self, script: Script):
        self.script = script
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/work"
        self.calls: dict[str, list[int]] = defaultdict(list)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-worker", daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls[body["jobId"]].append(body["attempt"])
        status, headers, text = self.script(body["jobId"], body["attempt"])
        return web.Response(status=status, headers=headers, text=text)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/work", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> ScriptedWorker:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def serve(processes: list[Any], client: httpx.Client, tmp_path: Path, redis_url: str, worker_url: str,
          *top: str, max_attempts: int = 2) -> Coordinator:
    port = free_port()
    config = tmp_path / "redisq.toml"
    config.write_text("\n".join([
        f'redis_url = "{redis_url}"', f'public_url = "http://127.0.0.1:{port}"', f"port = {port}",
        f'secret = "{SECRET}"', "shutdown_grace = 1", *top, "",
        f"[workers.{WORKER}]", f'url = "{worker_url}"', "timeout = 5", f"max_attempts = {max_attempts}",
        "", f"[workers.{WORKER}.backoff]", "initial = 0.2", "jitter = false",
    ]) + "\n")
    return start_coordinator(processes, client, config, port, tmp_path / "serve.log")


def json_lines(coordinator: Coordinator) -> list[dict[str, Any]]:
    """Every line of the log as JSON: each must parse, and be one object."""
    lines = []
    for line in coordinator.log().splitlines():
        if line.strip():
            parsed = json.loads(line)
            assert isinstance(parsed, dict), line
            lines.append(parsed)
    return lines


def events(coordinator: Coordinator, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(coordinator) if e["event"] == name]


def wait_for(what: str, found: Callable[[], Any], within_s: float = 15.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {within_s} s: {what}")


def enqueue(client: httpx.Client, coordinator: Coordinator, suffix: str, headers: dict[str, str] | None = None,
            **fields: Any) -> str:
    resp = client.post(f"{coordinator.base_url}/job", json={"worker": WORKER, "id": suffix, **fields},
                       headers=headers or {})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def wait_state(client: httpx.Client, coordinator: Coordinator, job_id: str, state: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = client.get(f"{coordinator.base_url}/job/{job_id}").json()
        return job if job["state"] == state else None
    return wait_for(f"{job_id} {state}", reached)


def fails_then_404(job_id: str, attempt: int) -> Answer:
    return (500, {}, "boom") if attempt == 1 else (404, {}, "no such job here")


def iso_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


# -- a job retried, then dead --------------------------------------------------------------

def test_json_lines_say_a_job_was_retried_then_died(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url, 'log_format = "json"')
        job_id = enqueue(client, serving, "doomed")
        dead = wait_state(client, serving, job_id, "dead")
        wait_for("the dead line", lambda: [e for e in json_lines(serving) if e["event"] == "job_dead"])
    lines = json_lines(serving)

    (retried,) = [e for e in lines if e["event"] == "attempt_retried"]
    assert retried["level"] == "INFO" and retried["logger"] == "redisq.signals"
    assert (retried["worker"], retried["job"], retried["attempt"]) == (WORKER, job_id, 1)
    assert retried["error"] == "HTTP 500: boom" and retried["status"] == 500
    # the next run is the retry's real time: 0.2 s backoff after the failure
    assert 0 < iso_ms(dead["finishedAt"]) - iso_ms(retried["next_run_at"]) < 2000
    assert retried["at"].endswith("Z") and job_id in retried["message"]

    (died,) = [e for e in lines if e["event"] == "job_dead"]
    assert died["level"] == "WARNING"
    assert (died["worker"], died["job"], died["attempts"], died["status"]) == (WORKER, job_id, 2, 404)
    assert died["error"] == dead["lastError"] == "HTTP 404: no such job here"

    (started,) = [e for e in lines if e["event"] == "started"]
    assert started["store"] == "redis" and started["public_url"] == serving.base_url
    assert started["workers"][WORKER]["url"] == worker.url and started["workers"][WORKER]["rate"] is None
    assert "serving on" in started["message"]
    assert not [e for e in lines if e["event"] == "access"]  # access_log is off by default


def test_text_lines_say_the_same_in_words(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url)
        job_id = enqueue(client, serving, "doomed")
        wait_state(client, serving, job_id, "dead")
        dead_line = wait_for("the dead line", lambda: [ln for ln in serving.log().splitlines() if "dead after" in ln])
    log = serving.log()
    (retried,) = [line for line in log.splitlines() if "attempt 1 failed" in line]
    assert f" INFO redisq.signals: {job_id}: attempt 1 failed (HTTP 500: boom); retried at 20" in retried
    assert dead_line == [line for line in log.splitlines() if " WARNING redisq.signals: " in line and job_id in line]
    assert dead_line[0].endswith(f"{job_id}: dead after 2 attempts; last error: HTTP 404: no such job here")
    (started,) = [line for line in log.splitlines() if "serving on" in line]
    assert f"redis {redis.url}" in started and f"{WORKER} (rate unlimited, concurrency unlimited, timeout 5 s)" \
        in started
    assert not json_like(log)


def json_like(log: str) -> bool:
    return any(line.startswith("{") for line in log.splitlines())


# -- back-pressure -----------------------------------------------------------------------------

def test_a_429_with_retry_after_logs_the_pause_of_its_key_or_of_the_worker(tmp_path, client, processes):
    redis = start_redis(processes)

    def push_back_once(job_id: str, attempt: int) -> Answer:
        return (429, {"Retry-After": "1"}, "slow down") if attempt == 1 else (200, {}, "{}")

    with ScriptedWorker(push_back_once) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url, 'log_format = "json"')
        keyed = enqueue(client, serving, "keyed", throttleKey="shop-a.myshopify.com")
        wait_state(client, serving, keyed, "succeeded")
        unkeyed = enqueue(client, serving, "unkeyed")
        wait_state(client, serving, unkeyed, "succeeded")
    pauses = [e for e in json_lines(serving) if e["event"] == "paused"]
    assert [(p["level"], p["key"], p["job"]) for p in pauses] == [
        ("INFO", "shop-a.myshopify.com", keyed), ("WARNING", "", unkeyed)]
    for pause in pauses:
        assert pause["worker"] == WORKER and pause["status"] == 429 and pause["error"] == "HTTP 429: slow down"
        assert 500 < iso_ms(pause["until"]) - iso_ms(pause["at"]) < 1500  # Retry-After: 1
    assert "throttle key 'shop-a.myshopify.com' of sink paused until" in pauses[0]["message"]
    assert "worker sink (all its jobs) paused until" in pauses[1]["message"]
    assert not [e for e in json_lines(serving) if e["event"] == "attempt_retried"]  # not a failure


# -- operators' changes -------------------------------------------------------------------------

def test_a_limit_changed_by_a_named_token_names_it(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url, 'log_format = "json"', "",
                        "[api_tokens]", 'ops = "ops-secret"', 'ci = "ci-secret"')
        url = f"{serving.base_url}/workers/{WORKER}"
        assert client.patch(url, json={"rate": 5}).status_code == 401
        resp = client.patch(url, json={"rate": 5, "concurrency": 3}, headers={"Authorization": "Bearer ops-secret"})
        assert resp.status_code == 200, resp.text
        resp = client.post(f"{url}/pause", headers={"Authorization": "Bearer ci-secret"})
        assert resp.status_code == 200, resp.text
        wait_for("two changes", lambda: len(events(serving, "limits_changed")) == 2)
    changes = events(serving, "limits_changed")
    patched, paused = changes
    assert (patched["level"], patched["worker"], patched["by"], patched["client"]) == ("INFO", WORKER, "ops",
                                                                                       "127.0.0.1")
    assert patched["changes"] == {"rate": [None, 5.0], "burst": [None, 5.0], "concurrency": [None, 3]}
    assert "changed by token 'ops' from 127.0.0.1: rate none -> 5, burst none -> 5, concurrency none -> 3" \
        in patched["message"]
    assert paused["by"] == "ci" and paused["changes"] == {"paused": [False, True]}


def test_a_limit_changed_through_the_open_api_says_so(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url)
        assert client.patch(f"{serving.base_url}/workers/{WORKER}", json={"timeout": 2}).status_code == 200
        line = wait_for("the change", lambda: [ln for ln in serving.log().splitlines() if "live limits" in ln])
    assert line[0].endswith(f"{WORKER}: live limits changed by the open API (no api_tokens) from 127.0.0.1: "
                            "timeout 5 -> 2")


# -- Redis lost and back --------------------------------------------------------------------------

def test_redis_stopped_and_started_is_logged_lost_and_back_once_each(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url, 'log_format = "json"')
        redis.stop()
        wait_for("redis lost", lambda: [e for e in json_lines(serving) if e["event"] == "redis_lost"])
        time.sleep(1.5)  # every loop fails meanwhile, and backs off
        assert client.get(f"{serving.base_url}/health").status_code == 503
        restarted = RedisServer(redis.port)  # the same port, empty (the secret is in the config)
        processes.append(restarted)
        restarted.start()
        wait_for("redis back", lambda: [e for e in json_lines(serving) if e["event"] == "redis_back"])
        assert client.get(f"{serving.base_url}/health").status_code == 200
        job_id = enqueue(client, serving, "after")  # and it works again: the job is tried
        wait_for("the job tried", lambda: worker.calls.get(job_id))
        time.sleep(1.0)  # time for a second 'lost' to show, were there one
    events = [e["event"] for e in json_lines(serving) if e["event"] in ("redis_lost", "redis_back")]
    assert events == ["redis_lost", "redis_back"], events
    lost, back = (e for e in json_lines(serving) if e["event"] in ("redis_lost", "redis_back"))
    assert lost["level"] == "WARNING" and lost["redis"] == redis.url
    assert back["level"] == "INFO" and back["down_s"] > 1.0


# -- access log -------------------------------------------------------------------------------------

def test_access_log_is_on_by_the_setting(tmp_path, client, processes):
    redis = start_redis(processes)
    with ScriptedWorker(fails_then_404) as worker:
        serving = serve(processes, client, tmp_path, redis.url, worker.url, 'log_format = "json"',
                        "access_log = true")
        assert client.get(f"{serving.base_url}/workers").status_code == 200
        access = wait_for("the access line", lambda: [e for e in json_lines(serving)
                                                     if e["event"] == "access" and e["path"] == "/workers"])
    assert (access[0]["method"], access[0]["status"], access[0]["logger"]) == ("GET", 200, "uvicorn.access")


# -- settings ------------------------------------------------------------------------------------------

def test_log_settings_come_from_the_file_and_the_environment():
    config = parse_config({"log_format": "json", "log_level": "warning", "access_log": True}, "redisq.toml")
    assert (config.log_format, config.log_level, config.access_log) == ("json", "WARNING", True)
    default = parse_config({})
    assert (default.log_format, default.log_level, default.access_log, default.metrics_public) == (
        "text", "INFO", False, False)
    env = {"REDISQ_LOG_FORMAT": "JSON", "REDISQ_LOG_LEVEL": "debug", "REDISQ_ACCESS_LOG": "yes",
           "REDISQ_METRICS_PUBLIC": "true"}
    from_env = load_config(None, environ=env)
    assert (from_env.log_format, from_env.log_level, from_env.access_log, from_env.metrics_public) == (
        "json", "DEBUG", True, True)


@pytest.mark.parametrize("data, message", [
    ({"log_format": "xml"}, "redisq.toml: log_format: must be 'text' or 'json', got 'xml'"),
    ({"log_level": "loud"}, "redisq.toml: log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
    ({"access_log": "yes"}, "redisq.toml: access_log: must be true or false, got 'yes'"),
    ({"metrics_public": 1}, "redisq.toml: metrics_public: must be true or false, got 1"),
])
def test_bad_log_settings_are_config_errors(data, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "redisq.toml")
    assert str(caught.value) == message


@pytest.mark.parametrize("env, message", [
    ({"REDISQ_LOG_FORMAT": "xml"}, "environment: REDISQ_LOG_FORMAT: must be 'text' or 'json', got 'xml'"),
    ({"REDISQ_LOG_LEVEL": "loud"}, "environment: REDISQ_LOG_LEVEL: must be one of DEBUG"),
    ({"REDISQ_ACCESS_LOG": "maybe"}, "environment: REDISQ_ACCESS_LOG: must be true or false"),
])
def test_bad_log_settings_in_the_environment_are_config_errors(env, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ=env)
    assert str(caught.value).startswith(message)
