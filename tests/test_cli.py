"""The ``redisq`` command as a user runs it: a subprocess, its exit code, what it prints.

Every wait is bounded, and every process started here is ended (and waited for) in a
``finally``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redisq import __version__
from redisq.config import WorkerConfig
from redisq.embedded import EMBEDDED_WARNING

from redis_server import RedisServer, free_port
from stand_ins import Answers, ScriptedApi, StandInWorker
from test_client import running_coordinator

REDISQ = shutil.which("redisq", path=str(Path(sys.executable).parent)) or "redisq"


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any REDISQ_* setting that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REDISQ_")}


def run(args: list[str], env: dict[str, str], timeout_s: float = 30.0,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REDISQ, *args], capture_output=True, text=True, env=env, timeout=timeout_s, cwd=cwd)


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class ServeProcess:
    """`redisq serve` as a subprocess; a thread collects its stderr lines so that a test can
    wait for one with a bound. ``stop()`` ends it (SIGTERM) and answers its exit code."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, lines: list[str] | None = None):
        self.process = subprocess.Popen([REDISQ, "serve", *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.lines: list[str] = [] if lines is None else lines  # its log, as it comes
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            assert self.process.poll() is None, f"serve exited with {self.process.returncode}: {self.lines}"
            assert time.monotonic() < deadline, f"no line with {text!r} within {timeout_s:g} s: {self.lines}"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.reader.join(5)
        if self.process.stderr is not None and not self.reader.is_alive():
            self.process.stderr.close()
        return self.process.returncode


def test_version(clean_env):
    done = run(["--version"], clean_env)
    assert done.returncode == 0
    assert done.stdout.strip() == f"redisq {__version__}"


def test_no_command_is_a_usage_error(clean_env):
    done = run([], clean_env)
    assert done.returncode == 2
    assert "usage: redisq" in done.stderr


@pytest.mark.parametrize("toml, key", [
    ('[workers.send-email]\nurl = "http://127.0.0.1:9/send"\nrate = -1\n', "workers.send-email.rate"),
    ('[workers.send-email]\nrate = 2\n', "workers.send-email.url"),
    ('[workers.send-email]\nurl = "ftp://example.com/send"\n', "workers.send-email.url"),
    ('[workers.send-email]\nurl = "http://127.0.0.1:9/send"\nburst = 5\n', "workers.send-email.burst"),
    ('[workers.send-email]\nurl = "http://127.0.0.1:9/send"\n[workers.send-email.backoff]\nfactor = "x"\n',
     "workers.send-email.backoff.factor"),
    ('[workers.Send_Email]\nurl = "http://127.0.0.1:9/send"\n', "workers.Send_Email"),
    ('port = "eighty"\n', "port"),
    ('colour = "red"\n', "colour"),
    ('http_client = "curl"\n', "http_client"),
    ('processes = 2\n', "processes"),  # without a redis_url: the embedded store lives in one process
    ('port = 70000\n', "port"),
])
def test_serve_with_a_config_error_prints_one_line_naming_file_and_key_and_exits_2(tmp_path, clean_env, toml, key):
    path = tmp_path / "redisq.toml"
    path.write_text(toml)
    started = time.monotonic()
    done = run(["serve", "--config", str(path)], clean_env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and f"{key}:" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 15  # it does not start serving


def test_serve_with_a_config_named_by_the_environment_reports_that_file(tmp_path, clean_env):
    path = tmp_path / "from-env.toml"
    path.write_text('max_in_flight = 0\n')
    done = run(["serve"], {**clean_env, "REDISQ_CONFIG": str(path)}, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert str(path) in line and "max_in_flight:" in line


@pytest.mark.parametrize("content", [None, "this is = = not toml\n"])
def test_serve_with_a_missing_or_unreadable_config_file_exits_2_naming_it(tmp_path, clean_env, content):
    path = tmp_path / "redisq.toml"
    if content is not None:
        path.write_text(content)
    done = run(["serve", "--config", str(path)], clean_env, cwd=tmp_path)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert str(path) in line
    assert ("file not found" if content is None else "not valid TOML") in line


def test_demo_runs_to_completion(tmp_path, clean_env):
    done = run(["demo"], clean_env, timeout_s=60.0, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "all jobs succeeded" in done.stdout


@pytest.fixture
def serve_process(tmp_path, clean_env) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen([REDISQ, "serve", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=clean_env, cwd=tmp_path)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=5)
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()


def test_serve_without_redis_url_uses_the_embedded_store_and_says_so(serve_process):
    process, port = serve_process
    deadline = time.monotonic() + 20.0
    health = None
    while health is None:
        assert process.poll() is None, \
            f"redisq serve exited with {process.returncode}: {process.communicate(timeout=5)}"
        assert time.monotonic() < deadline, "redisq serve did not answer /health within 20 s"
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5)
        except httpx.TransportError:
            time.sleep(0.05)
    assert health.status_code == 200
    assert health.json() == {"redis": "up", "store": "embedded"}

    process.terminate()
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert EMBEDDED_WARNING in err
    assert "Traceback" not in err
    assert "public_url" not in err  # receipts go to the port it listens on


@pytest.mark.parametrize("name", ["redisq.toml", "docker.toml"])
def test_the_example_configs_the_readme_and_compose_use_are_valid(name):
    from redisq.config import load_config

    config = load_config(str(Path(__file__).resolve().parents[1] / "examples" / name), environ={})
    assert set(config.workers) == {"send-email", "render-report", "sync-shopify-orders"}
    assert config.workers["send-email"].rate == 2.0 and config.workers["send-email"].bucket_size == 40


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str], workers_toml: str, redis_url: str | None = None,
            log_lines: list[str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """`redisq serve` with these workers (on the embedded store, or ``redis_url``); yields its
    URL and an env naming it. Its log lines go to ``log_lines`` as they come."""
    port = free_port()
    config = tmp_path / "redisq.toml"
    store = "" if redis_url is None else f'redis_url = "{redis_url}"\n'
    config.write_text(f'port = {port}\nsecret = "cli-test"\n{store}\n{workers_toml}')
    serve = ServeProcess(["--config", str(config)], env, tmp_path, log_lines)
    url = f"http://127.0.0.1:{port}"
    try:
        serve.wait_for_line("serving on")  # it answers from that line on
        yield url, {**env, "REDISQ_URL": url}
    finally:
        serve.stop()


@pytest.fixture
def coordinator_with_a_worker(tmp_path, clean_env) -> Iterator[tuple[str, dict[str, str]]]:
    """`redisq serve` (embedded store) with one throttled worker; yields its URL and an env."""
    shopify = '[workers.shopify]\nurl = "http://127.0.0.1:9/x"\nrate = 2\nburst = 40\n'
    with serving(tmp_path, clean_env, shopify) as served:
        yield served


def test_workers_lists_and_sets_live_limits(coordinator_with_a_worker):
    url, env = coordinator_with_a_worker
    listed = run(["workers"], env)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "RATE", "BURST"] and row.split()[:3] == ["shopify", "2", "40"]

    changed = run(["workers", "set", "shopify", "rate=10", "concurrency=5", "--json"], env)
    assert changed.returncode == 0, changed.stderr
    assert '"rate": 10.0' in changed.stdout and '"concurrency": 5' in changed.stdout
    assert httpx.get(f"{url}/workers/shopify").json()["limits"]["rate"] == 10.0

    assert run(["workers", "pause", "shopify"], env).returncode == 0
    assert httpx.get(f"{url}/workers/shopify").json()["limits"]["paused"] is True
    resumed = run(["workers", "resume", "shopify"], env)
    assert resumed.returncode == 0 and "active" in resumed.stdout


@pytest.mark.parametrize("args, code, message", [
    (["workers", "set", "shopify", "rate=fast"], 2, "rate: 'fast' is not a number"),
    (["workers", "set", "shopify", "rate=nan"], 2, "rate: 'nan' is not a finite number"),
    (["workers", "set", "shopify", "timeout=none"], 1, "answered 422: timeout: must be a number of seconds"),
    (["workers", "set", "shopify", "speed=3"], 2, "expected NAME=VALUE with NAME one of"),
    (["workers", "set", "shopify"], 2, "give at least one NAME=VALUE"),
    (["workers", "set", "shopify", "rate=0"], 1, "answered 422: rate: must be a number > 0"),
    (["workers", "set", "shopify", "burst=0.5"], 1, "answered 422: burst: must be a number >= 1"),
    (["workers", "set", "nobody", "rate=1"], 1, "answered 404: unknown worker 'nobody'"),
    (["workers", "pause", "nobody"], 1, "answered 404"),
])
def test_workers_set_refuses_bad_input_and_changes_nothing(coordinator_with_a_worker, args, code, message):
    url, env = coordinator_with_a_worker
    before = httpx.get(f"{url}/workers").json()
    done = run(args, env)
    assert done.returncode == code and message in done.stderr, (done.returncode, done.stderr)
    assert httpx.get(f"{url}/workers").json() == before


def test_workers_says_so_when_no_coordinator_answers(clean_env):
    done = run(["workers", "--url", f"http://127.0.0.1:{free_port()}"], clean_env)
    assert done.returncode == 1 and "cannot reach" in done.stderr


# -- start-up: one line for each failure, `serving on` only once it answers ----------------------

ONE_WORKER = '[workers.send-email]\nurl = "http://127.0.0.1:9/send"\n'


def test_serve_with_its_port_taken_says_so_in_one_line_and_exits_1(tmp_path, clean_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = run(["serve", "--port", str(port)], clean_env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    (line,) = nonblank_lines(done.stderr)
    assert line.startswith(f"redisq: cannot listen on 127.0.0.1:{port}: ") and "in use" in line, line
    assert time.monotonic() - started < 15


def test_serve_without_a_secret_and_with_redis_unreachable_exits_1_with_one_line(tmp_path, clean_env):
    port = free_port()  # nothing listens there
    config = tmp_path / "redisq.toml"
    config.write_text(f'redis_url = "redis://:hunter2@127.0.0.1:{port}/0"\nport = {free_port()}\n{ONE_WORKER}')
    done = run(["serve", "--config", str(config)], clean_env, timeout_s=40.0, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    (line,) = nonblank_lines(done.stderr)  # no traceback, no `serving on`
    assert line.startswith(f"redisq: cannot reach redis at redis://:***@127.0.0.1:{port}/0: "), line
    assert "Connection refused" in line and "secret" in line
    assert "hunter2" not in done.stderr


def test_serve_says_serving_on_only_once_it_answers(tmp_path, clean_env):
    """Without a secret, serve waits (up to 10 s) for Redis to read the shared one; it
    says `serving on` only after that, when the API answers at once."""
    redis = RedisServer()  # its port, not started yet
    config = tmp_path / "redisq.toml"
    port = free_port()
    config.write_text(f'redis_url = "{redis.url}"\nport = {port}\n{ONE_WORKER}')
    serve = ServeProcess(["--config", str(config)], clean_env, tmp_path)
    try:
        time.sleep(1.0)
        assert serve.process.poll() is None, serve.lines
        assert not [line for line in serve.lines if "serving on" in line], serve.lines
        redis.start()
        line = serve.wait_for_line("serving on")
        assert f"http://127.0.0.1:{port}" in line
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)  # no retry: it answers now
        assert health.status_code == 200 and health.json() == {"redis": "up", "store": "redis"}
        assert serve.stop() == 0, serve.lines
        assert not [line for line in serve.lines if "Traceback" in line or "ERROR" in line], serve.lines
    finally:
        serve.stop()
        redis.stop()


def test_serve_warns_when_it_listens_on_another_port_than_public_url_names(tmp_path, clean_env):
    config = tmp_path / "redisq.toml"
    config.write_text(f'public_url = "http://127.0.0.1:7575"\nsecret = "s"\n{ONE_WORKER}')
    port = free_port()
    serve = ServeProcess(["--config", str(config), "--port", str(port)], clean_env, tmp_path)
    try:
        serve.wait_for_line("serving on")
        warning = serve.wait_for_line("public_url")
        assert "WARNING" in warning and "7575" in warning and str(port) in warning, warning
        assert "receipt" in warning
    finally:
        assert serve.stop() == 0, serve.lines


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_serve_with_a_port_flag_out_of_range_is_a_usage_error(tmp_path, clean_env, port):
    done = run(["serve", "--port", port], clean_env, cwd=tmp_path)
    assert done.returncode == 2
    assert "--port" in done.stderr and "Traceback" not in done.stderr


# -- a reader that stops early (`redisq workers | head -2`) --------------------------------------


@pytest.fixture
def coordinator_with_many_workers(tmp_path, clean_env) -> Iterator[dict[str, str]]:
    """`redisq serve` with 60 workers: `workers --json` prints about 33 KB."""
    with serving(tmp_path, clean_env, "".join(f'[workers.w{i:02d}]\nurl = "http://127.0.0.1:9/x"\n'
                                              for i in range(60))) as (_, env):
        yield env


def run_into_a_closed_pipe(args: list[str], env: dict[str, str], lines_read: int) -> tuple[int, str]:
    """The command with its stdout into a pipe of one page, whose reader reads ``lines_read``
    lines and goes (as `| head -2`; 0: gone before anything is written, as `| true`). With
    more output than the pipe, the reader's one read and the command's buffer hold, the
    command is still writing when the reader goes. Its exit code and stderr."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    try:
        process = subprocess.Popen([REDISQ, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        os.close(write_end)
    assert process.stderr is not None
    try:
        seen = b""
        while seen.count(b"\n") < lines_read:
            chunk = os.read(read_end, 4096)
            assert chunk, f"the command ended after {seen!r}"
            seen += chunk
        os.close(read_end)
        read_end = -1
        err = process.stderr.read()
        return process.wait(30), err
    finally:
        if read_end >= 0:
            os.close(read_end)
        if process.poll() is None:
            process.kill()
            process.wait(5)
        process.stderr.close()


@pytest.mark.parametrize("args, lines_read", [
    (["workers", "--json"], 2),  # cut while it prints
    (["workers"], 0),  # cut at its last flush
    (["schedules"], 0),
])
def test_a_command_whose_reader_stops_early_exits_141_without_a_word(coordinator_with_many_workers, args,
                                                                    lines_read):
    assert run_into_a_closed_pipe(args, coordinator_with_many_workers, lines_read) == (141, "")


def test_the_demo_into_a_closed_pipe_exits_141_without_a_word(clean_env):
    assert run_into_a_closed_pipe(["demo"], clean_env, 0) == (141, "")


# -- jobs, enqueue, schedules: an operator's commands against a running coordinator ---------------


@pytest.fixture
def coordinator_and_worker(tmp_path, clean_env) -> Iterator[tuple[str, dict[str, str], StandInWorker]]:
    """`redisq serve` (embedded store) whose worker `send` is a stand-in answering 200; yields
    the coordinator's URL, an env naming it, and the stand-in (set its status to break it)."""
    with StandInWorker(200) as worker, serving(tmp_path, clean_env, stand_in_config("send", worker)) as (url, env):
        yield url, env, worker


def stand_in_config(name: str, worker: StandInWorker) -> str:
    """A worker on the stand-in: 2 attempts, 50 ms apart, so that a broken worker's jobs die at once."""
    return (f'[workers.{name}]\nurl = "{worker.url}"\nmax_attempts = 2\n'
            "backoff = { initial = 0.05, factor = 1.0, jitter = false }\n")


def test_enqueue_prints_the_job_and_json_for_scripts(coordinator_and_worker):
    url, env, _ = coordinator_and_worker
    done = run(["enqueue", "send", '{"args": {"to": "ada"}, "maxAttempts": 3}', "--id", "a1", "--delay", "3600",
                "--key", "shop-1"], env)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "ATTEMPTS"]
    assert row.split()[:3] == ["send:a1", "scheduled", "0/3"] and "shop-1" in row
    job = httpx.get(f"{url}/job/send:a1").json()
    assert (job["args"], job["throttleKey"], job["maxAttempts"]) == ({"to": "ada"}, "shop-1", 3)

    again = run(["enqueue", "send", "--id", "a1", "--json"], env)  # the same id: the job it made
    assert again.returncode == 0 and json.loads(again.stdout)["args"] == {"to": "ada"}

    ran = run(["enqueue", "send", '{"args": [1, 2]}', "--json"], env)  # no delay: the stand-in runs it
    assert ran.returncode == 0, ran.stderr
    job_id = json.loads(ran.stdout)["id"]
    assert job_id.startswith("send:")
    waited = run(["jobs", "show", job_id, "--json"], env)
    assert waited.returncode == 0 and json.loads(waited.stdout)["worker"] == "send"


def test_enqueue_of_a_cron_prints_the_schedule(coordinator_and_worker):
    _, env, _ = coordinator_and_worker
    done = run(["enqueue", "send", '{"cron": "0 9 * * *", "timezone": "Europe/Paris"}', "--id", "daily"], env)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:2] == ["ID", "CRON"] and row.split()[0] == "send:daily" and "Europe/Paris" in row


@pytest.mark.parametrize("args, code, message", [
    (["enqueue", "send", "{not json"], 2, "enqueue: the job's fields are not JSON"),
    (["enqueue", "send", "[1]"], 2, "must be a JSON object"),
    (["enqueue", "send", '{"worker": "other"}'], 2, "the fields name worker 'other'"),
    (["enqueue", "send", "--delay", "soon"], 2, "--delay: must be a number of seconds"),
    (["enqueue", "nobody"], 1, "POST /job answered 422: worker: unknown worker 'nobody'"),
    (["enqueue", "send", '{"colour": "red"}'], 1, "answered 422: colour: unknown field"),
    (["enqueue", "send", "--delay", "5", "--run-at", "2030-01-01T00:00:00Z"], 1, "answered 422: runAt"),
    (["jobs", "show", "send:nope"], 1, "GET /job/send:nope answered 404"),
    (["jobs", "cancel", "send:nope"], 1, "DELETE /job/send:nope answered 404"),
    (["jobs", "retry"], 2, "jobs retry: give job ids, or --all"),
    (["jobs", "retry", "send:x", "--all"], 2, "give job ids or --all, not both"),
    (["jobs", "retry", "send:x", "--limit", "5"], 2, "--limit goes with --all"),
    (["jobs", "retry", "--all", "--delay", "5", "--run-at", "1"], 2, "give --delay or --run-at, not both"),
    (["jobs", "retry", "send:x", "--args", "{nope"], 2, "--args is not JSON"),
    (["jobs", "retry", "--all", "--state", "succeeded"], 2, "invalid choice: 'succeeded'"),
    (["jobs", "delete"], 2, "jobs delete: give job ids, or --all"),
    (["jobs", "delete", "--all", "--worker", "send"], 2, "jobs delete --all: give --state"),
    (["jobs", "list", "--worker", "send"], 2, "the following arguments are required: --state"),
    (["jobs", "list", "--state", "dead", "--limit", "0"], 2, "--limit: must be a whole number from 1 to 1000"),
    (["jobs", "list", "--state", "dead", "--limit", "1001"], 2, "--limit: must be a whole number from 1 to 1000"),
    (["jobs", "list", "--state", "asleep"], 2, "invalid choice: 'asleep'"),
    (["schedules", "pause", "send:nope"], 1, "POST /schedule/send:nope/pause answered 404"),
    (["schedules", "delete", "send:nope"], 1, "DELETE /schedule/send:nope answered 404"),
])
def test_a_mistake_is_one_line_with_the_apis_message_and_its_exit_code(coordinator_and_worker, args, code, message):
    url, env, _ = coordinator_and_worker
    done = run(args, env)
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    if code == 1:
        assert len(nonblank_lines(done.stderr)) == 1 and done.stderr.startswith("redisq: ")
    assert "Traceback" not in done.stderr
    assert httpx.get(f"{url}/workers/send").json()["jobs"]["scheduled"] == 0  # nothing was enqueued


def test_jobs_cancel_cancels_and_a_finished_job_is_a_conflict(coordinator_and_worker):
    url, env, _ = coordinator_and_worker
    for i in (1, 2):
        assert run(["enqueue", "send", "--id", f"c{i}", "--delay", "3600"], env).returncode == 0
    done = run(["jobs", "cancel", "send:c1", "send:c2"], env)
    assert done.returncode == 0, done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()[1:]] == [["send:c1", "cancelled"],
                                                                          ["send:c2", "cancelled"]]
    assert httpx.get(f"{url}/job/send:c1").json()["state"] == "cancelled"
    again = run(["jobs", "cancel", "send:c1"], env)
    assert again.returncode == 1 and "DELETE /job/send:c1 answered 409" in again.stderr


def test_schedules_pause_resume_and_delete(coordinator_and_worker):
    url, env, _ = coordinator_and_worker
    assert run(["enqueue", "send", '{"cron": "0 9 * * *"}', "--id", "daily"], env).returncode == 0
    paused = run(["schedules", "pause", "send:daily"], env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.splitlines()[1].split()[:7] == ["send:daily", "0", "9", "*", "*", "*", "UTC"]
    assert "paused" in paused.stdout and httpx.get(f"{url}/schedule/send:daily").json()["paused"] is True
    resumed = run(["schedules", "resume", "send:daily", "--json"], env)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    listed = run(["schedules"], env)
    assert listed.returncode == 0 and "send:daily" in listed.stdout and "active" in listed.stdout
    deleted = run(["schedules", "delete", "send:daily"], env)
    assert deleted.returncode == 0 and deleted.stdout.strip() == "deleted send:daily (the jobs it created stay)"
    assert httpx.get(f"{url}/schedule/send:daily").status_code == 404
    assert json.loads(run(["schedules", "--json"], env).stdout) == []


def a_retry_in_the_background(error: str | None = None) -> Answers:
    progress = {"operation": "op-1", "kind": "retry", "worker": "send", "state": "dead", "total": 1500,
                "error": None}
    return {
        ("GET", "/workers"): [(200, {"workers": [{"name": "send"}]})],
        ("POST", "/jobs/retry"): [(202, {"retried": 500, "done": False, "operation": "op-1"})],
        ("GET", "/operations/op-1"): [(200, {**progress, "retried": 1000, "done": False}),
                                      (200, {**progress, "retried": 1500 if error is None else 1000, "done": True,
                                             "error": error})],
    }


def run_with_stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """The command with its stderr on a pseudo-terminal (as an operator runs it): its exit
    code, stdout, and what the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    try:
        process = subprocess.Popen([REDISQ, *args], stdout=subprocess.PIPE, stderr=terminal, text=True, env=env)
    finally:
        os.close(terminal)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the command closed the terminal's last descriptor
                break
            if not chunk:
                break
            shown += chunk
        out, _ = process.communicate(timeout=30)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait(5)
    return process.returncode, out, shown.decode(errors="replace")


def test_a_bulk_retry_that_goes_on_in_the_background_shows_a_progress_bar_until_done(clean_env):
    with ScriptedApi(a_retry_in_the_background()) as api:
        code, out, terminal = run_with_stderr_on_a_terminal(["jobs", "retry", "--all", "--url", api.url], clean_env)
        assert code == 0, terminal
        assert out == "retried 1500 dead jobs of send\n"
        assert "retried (send, dead)" in terminal and "1500/1500" in terminal and "100%" in terminal, terminal
        assert [(m, p) for m, p, _ in api.requests] == [
            ("GET", "/workers"), ("POST", "/jobs/retry"), ("GET", "/operations/op-1"), ("GET", "/operations/op-1")]
        assert api.requests[1][2] == {"worker": "send", "state": "dead", "all": True}

    with ScriptedApi(a_retry_in_the_background()) as api:  # not a terminal: no bar; --json: the last answer
        done = run(["jobs", "retry", "--all", "--worker", "send", "--limit", "1500", "--json", "--url", api.url],
                   clean_env)
        assert done.returncode == 0 and done.stderr == ""
        assert json.loads(done.stdout)["retried"] == 1500 and json.loads(done.stdout)["done"] is True
        assert api.requests[0][2] == {"worker": "send", "state": "dead", "all": True, "limit": 1500}


def test_a_bulk_operation_that_stops_with_an_error_says_so_and_exits_1(clean_env):
    with ScriptedApi(a_retry_in_the_background(error="redis unavailable: refused")) as api:
        done = run(["jobs", "retry", "--all", "--worker", "send", "--url", api.url], clean_env)
    assert done.returncode == 1
    assert done.stderr == "redisq: retry of send's dead jobs stopped after 1000: redis unavailable: refused\n"


def enqueue_dead(url: str, worker: StandInWorker, ids_and_keys: list[tuple[str, str | None]]) -> None:
    """Jobs of `send` that die: the stand-in answers 404 until they are dead."""
    worker.status = 404
    jobs = [{"worker": "send", "id": job_id, **({"throttleKey": key} if key else {})} for job_id, key in ids_and_keys]
    assert httpx.post(f"{url}/jobs", json={"jobs": jobs}).status_code == 201
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/workers/send").json()["jobs"]["dead"] < len(jobs):
        assert time.monotonic() < deadline, httpx.get(f"{url}/workers/send").json()
        time.sleep(0.05)


def listed_ids(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [line.split()[0] for line in done.stdout.splitlines()[1:]]


def test_jobs_list_pages_by_cursor_filters_by_key_and_prints_json(coordinator_and_worker):
    url, env, worker = coordinator_and_worker
    enqueue_dead(url, worker, [(f"d{i}", "shop-a" if i < 3 else "shop-b") for i in range(5)])
    first = run(["jobs", "list", "--worker", "send", "--state", "dead", "--limit", "2"], env)
    assert len(listed_ids(first)) == 2
    hint = first.stderr.strip()
    assert hint.startswith("redisq: send has 5 dead jobs; --all lists every one, --cursor "), hint
    cursor = hint.split("--cursor ")[1].split()[0]
    second = run(["jobs", "list", "--worker", "send", "--state", "dead", "--limit", "2", "--cursor", cursor], env)
    assert len(listed_ids(second)) == 2 and not set(listed_ids(first)) & set(listed_ids(second))
    every = run(["jobs", "list", "--worker", "send", "--state", "dead", "--limit", "2", "--all"], env)
    assert sorted(listed_ids(every)) == [f"send:d{i}" for i in range(5)] and every.stderr == ""

    by_key = json.loads(run(["jobs", "list", "--worker", "send", "--state", "dead", "--key", "shop-b", "--json"],
                            env).stdout)
    assert sorted(j["id"] for j in by_key["jobs"]) == ["send:d3", "send:d4"]
    assert by_key["next"] is None and by_key["counts"]["dead"] == 5
    keyed = json.loads(run(["jobs", "list", "--state", "dead", "--limit", "2", "--all", "--json"], env).stdout)
    assert list(keyed) == ["send"] and len(keyed["send"]["jobs"]) == 5 and keyed["send"]["next"] is None
    assert run(["jobs", "list", "--state", "succeeded"], env).stdout == "no succeeded jobs\n"


def test_jobs_retry_runs_dead_jobs_again_and_says_which_could_not(coordinator_and_worker):
    url, env, worker = coordinator_and_worker
    enqueue_dead(url, worker, [("r1", None), ("r2", None)])
    assert run(["enqueue", "send", "--id", "later", "--delay", "3600"], env).returncode == 0
    done = run(["jobs", "retry", "send:r1", "send:later", "send:r2", "--args", '{"n": 99}', "--delay", "3600"], env)
    assert done.returncode == 1
    (error,) = nonblank_lines(done.stderr)
    assert error.startswith("redisq: POST /job/send:later/retry answered 409: "), error
    assert [line.split()[:3] for line in done.stdout.splitlines()[1:]] == [["send:r1", "scheduled", "0/2"],
                                                                          ["send:r2", "scheduled", "0/2"]]
    job = httpx.get(f"{url}/job/send:r2").json()
    assert job["args"] == {"n": 99} and job["state"] == "scheduled" and job["attempts"] == 0
    worker.status = 200
    now = run(["jobs", "retry", "send:r1", "--json"], env)  # dead or cancelled only: r1 is scheduled now
    assert now.returncode == 1 and "answered 409" in now.stderr
    assert run(["jobs", "cancel", "send:r1"], env).returncode == 0
    again = run(["jobs", "retry", "send:r1", "--json"], env)  # a cancelled job runs again, now
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == "send:r1"
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/job/send:r1").json()["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_jobs_delete_deletes_finished_jobs_by_id_or_all(coordinator_and_worker):
    url, env, worker = coordinator_and_worker
    enqueue_dead(url, worker, [("x1", None), ("x2", None), ("x3", None)])
    assert run(["enqueue", "send", "--id", "later", "--delay", "3600"], env).returncode == 0
    done = run(["jobs", "delete", "send:x1", "send:later"], env)
    assert done.returncode == 1
    assert nonblank_lines(done.stderr) == ["redisq: send:later has not finished (scheduled): `redisq jobs cancel` "
                                           "it first"]
    assert listed_ids(subprocess.CompletedProcess([], 0, done.stdout, "")) == ["send:x1"]
    assert httpx.get(f"{url}/job/send:x1").status_code == 404
    assert httpx.get(f"{url}/job/send:later").json()["state"] == "scheduled"
    gone = run(["jobs", "delete", "send:x1"], env)
    assert gone.returncode == 1 and "GET /job/send:x1 answered 404" in gone.stderr
    every = run(["jobs", "delete", "--all", "--worker", "send", "--state", "dead", "--json"], env)
    assert every.returncode == 0, every.stderr
    assert json.loads(every.stdout)["deleted"] == 2
    assert httpx.get(f"{url}/workers/send").json()["jobs"]["dead"] == 0
    assert run(["jobs", "delete", "--all", "--state", "succeeded"], env).stdout == "deleted 0 succeeded jobs of send\n"


def test_a_real_bulk_retry_in_the_background_is_followed_to_its_end(real_redis, redis_url, clean_env, monkeypatch):
    """A coordinator in this process, made to answer every bulk operation 202 at once and to
    work in slices of 2 jobs: the command follows GET /operations/{op} to the end."""
    monkeypatch.setattr("redisq.operations.WAIT_S", 0.0)
    monkeypatch.setattr("redisq.operations.SLICE_JOBS", 2)
    with (
        StandInWorker(404) as worker,
        running_coordinator(redis_url, WorkerConfig(name="send", url=worker.url, max_attempts=1)) as url,
    ):
        enqueue_dead(url, worker, [(f"b{i}", None) for i in range(9)])
        worker.status = 200
        code, out, terminal = run_with_stderr_on_a_terminal(["jobs", "retry", "--all", "--url", url], clean_env)
        assert code == 0, terminal
        assert out == "retried 9 dead jobs of send\n"
        assert "retried (send, dead)" in terminal and "9/9" in terminal, terminal


def test_jobs_show_prints_the_job_and_its_attempts(coordinator_and_worker):
    url, env, worker = coordinator_and_worker
    enqueue_dead(url, worker, [("s1", "shop-a")])
    done = run(["jobs", "show", "send:s1"], env)
    assert done.returncode == 0, done.stderr
    fields, attempts = done.stdout.split("\n\n")
    lines = dict(line.split(":", 1) for line in fields.splitlines())
    assert [name for name in lines] == ["id", "worker", "state", "attempts", "run at", "created at", "finished at",
                                        "throttle key", "args", "last error", "result"]
    assert lines["id"].strip() == "send:s1" and lines["state"].strip() == "dead"
    assert lines["attempts"].strip() == "2 of 2" and lines["throttle key"].strip() == "shop-a"
    assert lines["last error"].strip().startswith("HTTP 404")
    header, *rows = attempts.splitlines()
    assert header.split()[:2] == ["ATTEMPT", "STARTED"] and header.split()[-1] == "COORDINATOR"
    assert [row.split()[0] for row in rows] == ["1", "2"]
    assert all(" failed " in row and " 404 " in row and " ms " in row for row in rows), rows
    history = json.loads(run(["jobs", "show", "send:s1", "--json"], env).stdout)["history"]
    assert [(a["attempt"], a["outcome"], a["status"]) for a in history] == [(1, "failed", 404), (2, "failed", 404)]

    assert run(["enqueue", "send", "--id", "later", "--delay", "3600"], env).returncode == 0
    later = run(["jobs", "show", "send:later"], env)
    assert later.returncode == 0 and later.stdout.endswith("\n\nno attempts yet\n")


def test_ctrl_c_while_following_a_bulk_operation_says_it_goes_on_and_exits_130(clean_env):
    answers = a_retry_in_the_background()
    answers[("GET", "/operations/op-1")] = [(200, {"operation": "op-1", "retried": 1000, "total": 1500,
                                                   "done": False, "error": None})]  # never done
    with ScriptedApi(answers) as api:
        process = subprocess.Popen([REDISQ, "jobs", "retry", "--all", "--worker", "send", "--url", api.url],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env)
        try:
            deadline = time.monotonic() + 20
            while sum(path == "/operations/op-1" for _, path, _ in api.requests) < 2:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=5)
    assert process.returncode == 130, err
    assert out == ""
    assert err == "redisq: stopped following; operation op-1 goes on in the coordinator (GET /operations/op-1)\n"


def test_limits_lists_sets_and_pauses_a_shared_limit_or_one_key(tmp_path, clean_env):
    shared = ('[limits.shopify]\nrate = 2\nburst = 39\n\n'
              '[workers.sync-orders]\nurl = "http://127.0.0.1:9/x"\nlimits = ["shopify"]\n')
    with serving(tmp_path, clean_env, shared) as (url, env):
        listed = run(["limits"], env)
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split()[:3] == ["NAME", "RATE", "BURST"]
        assert row.split() == ["shopify", "2", "39", "-", "-", "active", "0", "0", "sync-orders"]
        changed = run(["limits", "set", "shopify", "rate=4", "--json"], env)
        assert changed.returncode == 0 and '"rate": 4.0' in changed.stdout, changed.stderr
        assert httpx.get(f"{url}/workers/sync-orders").json()["sharedLimits"][0]["rate"] == 4.0
        assert run(["limits", "pause", "shopify", "--key", "gone.myshopify.com"], env).returncode == 0
        assert httpx.get(f"{url}/limits/shopify").json()["pausedKeys"] == ["gone.myshopify.com"]
        paused = run(["limits", "pause", "shopify"], env)
        assert paused.returncode == 0 and "paused" in paused.stdout
        refused = run(["limits", "set", "shopify", "timeout=3"], env)
        assert refused.returncode == 2 and "give NAME=VALUE of rate" in refused.stderr
        missing = run(["limits", "resume", "nobody"], env)
        assert missing.returncode == 1 and "answered 404: unknown limit 'nobody'" in missing.stderr
