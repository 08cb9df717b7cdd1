"""The ``redisq`` command as a user runs it: a subprocess, its exit code, what it prints.

Every wait is bounded, and every process started here is ended (and waited for) in a
``finally``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redisq import __version__
from redisq.embedded import EMBEDDED_WARNING

from redis_server import free_port

REDISQ = shutil.which("redisq", path=str(Path(sys.executable).parent)) or "redisq"


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without any REDISQ_* setting that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REDISQ_")}


def run(args: list[str], env: dict[str, str], timeout_s: float = 30.0,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REDISQ, *args], capture_output=True, text=True, env=env, timeout=timeout_s, cwd=cwd)


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


@pytest.mark.parametrize("name", ["redisq.toml", "docker.toml"])
def test_the_example_configs_the_readme_and_compose_use_are_valid(name):
    from redisq.config import load_config

    config = load_config(str(Path(__file__).resolve().parents[1] / "examples" / name), environ={})
    assert set(config.workers) == {"send-email", "render-report", "sync-shopify-orders"}
    assert config.workers["send-email"].rate == 2.0 and config.workers["send-email"].bucket_size == 40


@pytest.fixture
def coordinator_with_a_worker(tmp_path, clean_env) -> Iterator[tuple[str, dict[str, str]]]:
    """`redisq serve` (embedded store) with one throttled worker; yields its URL and an env."""
    port = free_port()
    config = tmp_path / "redisq.toml"
    config.write_text(f'port = {port}\nsecret = "cli-test"\n\n[workers.shopify]\nurl = "http://127.0.0.1:9/x"\n'
                      "rate = 2\nburst = 40\n")
    process = subprocess.Popen([REDISQ, "serve", "--config", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=clean_env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20.0
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "redisq serve did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, {**clean_env, "REDISQ_URL": url}
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


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
