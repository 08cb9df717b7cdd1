"""Throwaway subprocesses for the benchmarks: a redis-server, a Redis Cluster of them, the
Node sink, coordinators.

Each one listens on a free port on 127.0.0.1, is waited for with a time limit, and is
stopped (SIGTERM, then SIGKILL after a grace period) when the benchmark ends, also when it
fails. Use them as context managers::

    with RedisProc() as redis, Sink(latency_ms=0) as sink:
        ...
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_for(check: Any, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """Call ``check()`` until it returns True; raise if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if check():
                return
        except OSError as e:
            last_error = e
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready within {timeout_s:g} s ({last_error})")


class Proc:
    """A subprocess that is stopped on exit from the ``with`` block."""

    name = "process"
    proc: subprocess.Popen[bytes] | None = None
    log_path: str | None = None

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        with tempfile.NamedTemporaryFile(prefix=f"redisq-bench-{self.name}-", suffix=".log", delete=False) as log:
            self.log_path = log.name
            self.proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=str(cwd) if cwd else None,
            )

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path:
            return ""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.log_path:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Child(Proc):
    """Any command, its output kept in a log file for error messages."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None):
        self.name = name
        self._spawn(argv, env=env, cwd=REPO_DIR)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RedisProc(Proc):
    """redis-server on a free port, no persistence, its files in a temporary directory."""

    name = "redis"

    def __init__(self, port: int | None = None, *extra_args: str):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="redisq-bench-redis-")
        self._spawn([binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                     "--dir", self.dir, "--protected-mode", "yes", *extra_args])
        _wait_for(self._ping, self.proc, f"redis-server on port {self.port}", 10)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _ping(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def version(self) -> str:
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(b"INFO server\r\n")
            data = b""
            while b"redis_version:" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1]
        return "?"

    def stop(self, grace_s: float = 5.0) -> None:
        super().stop(grace_s)
        shutil.rmtree(self.dir, ignore_errors=True)


CLUSTER_BUS_PORT_OFFSET = 10000  # a cluster node also listens on port + 10000
SLOT_COUNT = 16384


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free and valid too."""
    for _ in range(1000):
        port = free_port()
        if port + CLUSTER_BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + CLUSTER_BUS_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterProc:
    """A Redis Cluster of ``masters`` redis-servers (no replicas), the slots split evenly in
    order (node 0 owns the lowest), so a key's master is known from its slot alone."""

    def __init__(self, masters: int):
        self.nodes: list[RedisProc] = []
        try:
            for _ in range(masters):
                self.nodes.append(RedisProc(free_cluster_port(), "--cluster-enabled", "yes",
                                            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"))
            for n, node in enumerate(self.nodes):
                first, last = self.slot_range(n)
                self.cli(node.port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
                if n:
                    self.cli(node.port, "CLUSTER", "MEET", HOST, str(self.nodes[0].port))
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in self.cli(node.port, "CLUSTER", "INFO") for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {masters}-master cluster was not ok within 30 s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def slot_range(self, n: int) -> tuple[int, int]:
        size = SLOT_COUNT // len(self.nodes)
        return n * size, SLOT_COUNT - 1 if n == len(self.nodes) - 1 else (n + 1) * size - 1

    def master_of_slot(self, slot: int) -> RedisProc:
        return next(node for n, node in enumerate(self.nodes) if self.slot_range(n)[0] <= slot <= self.slot_range(n)[1])

    @staticmethod
    def cli(port: int, *command: str) -> str:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not on PATH (it comes with redis-server)")
        return subprocess.run([binary, "-p", str(port), *command], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> ClusterProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_json(port: int, method: str, path: str, body: Any = None, timeout_s: float = 5.0,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One small blocking HTTP call to 127.0.0.1:port; returns (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        h = {"content-type": "application/json"} if data is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


class Sink(Proc):
    """``node bench/sink.js``: answers 200 {"ok":true} to every POST, after latency_ms."""

    name = "sink"

    def __init__(self, latency_ms: float = 0.0, port: int | None = None):
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH (the sink is a Node http server)")
        self.port = port or free_port()
        self._spawn([node, str(BENCH_DIR / "sink.js"), "--port", str(self.port), "--latency-ms", str(latency_ms)])
        _wait_for(lambda: self.get("/count")[0] == 200, self.proc, f"sink on port {self.port}", 10)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def get(self, path: str) -> tuple[int, Any]:
        return http_json(self.port, "GET", path, timeout_s=2)

    def count(self) -> int:
        return int(self.get("/count")[1]["count"])

    def lags(self) -> dict[str, Any]:
        return self.get("/lags")[1]

    def clock_offset_s(self, samples: int = 20) -> float:
        """The sink's arrival clock minus this process's ``time.time()``, NTP style: the
        sample with the shortest round trip, its midpoint as the moment of reading."""
        best: tuple[float, float] | None = None
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            for _ in range(samples):
                before = time.time()
                conn.request("GET", "/clock")
                sink_now = json.loads(conn.getresponse().read())["now"]
                after = time.time()
                if best is None or after - before < best[0]:
                    best = (after - before, sink_now - (before + after) / 2)
        finally:
            conn.close()
        return best[1] if best else 0.0

    def reset(self) -> None:
        http_json(self.port, "POST", "/reset", body={}, timeout_s=2)


def coordinator_argv() -> list[str]:
    """``$REDISQ_BENCH_COORDINATOR`` (e.g. ``python -m cProfile -o /tmp/serve.prof -m redisq.cli``
    to profile), else the ``redisq`` console script next to this Python, else ``python -m redisq.cli``."""
    override = os.environ.get("REDISQ_BENCH_COORDINATOR")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).with_name("redisq")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "redisq.cli"]


class Coordinator(Proc):
    """``redisq serve --config PATH --host 127.0.0.1 --port PORT [--processes N]``, ready when
    GET /health is 200 (with N > 1: once N processes have logged ``serving on``)."""

    name = "coordinator"

    def __init__(self, config_path: str, port: int | None = None, ready_timeout_s: float = 20.0,
                 env: dict[str, str] | None = None, processes: int = 1):
        self.port = port or free_port()
        self.processes = processes
        full_env = dict(os.environ)
        full_env.update(env or {})
        argv = [*coordinator_argv(), "serve", "--config", config_path, "--host", HOST, "--port", str(self.port)]
        self._spawn([*argv, "--processes", str(processes)] if processes > 1 else argv, env=full_env, cwd=REPO_DIR)
        try:
            _wait_for(self._answers, self.proc, f"redisq serve on port {self.port}", ready_timeout_s)  # type: ignore[arg-type]
        except RuntimeError as e:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{e}; its output ends: {tail[-600:]!r}" if tail else str(e)) from None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _answers(self) -> bool:
        status, _ = http_json(self.port, "GET", "/health", timeout_s=1)
        return status == 200 and (self.processes == 1 or self.log_text().count("serving on") >= self.processes)

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def pids(self) -> list[int]:
        """This coordinator's processes: ``serve`` and, with --processes N, its children."""
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as listed:
                return [pid, *(int(child) for child in listed.read().split())]
        except OSError:
            return [pid]

    def cpu_s(self) -> float:
        """CPU seconds its processes have used so far (user + system, all threads)."""
        return sum(process_cpu_s(pid) for pid in self.pids())


async def start_local_worker(handle: Any) -> tuple[str, Any]:
    """A worker URL in this process: an aiohttp server on a free port whose POST /work is
    ``handle(request)``. Returns the URL and the runner (``await runner.cleanup()`` ends it)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/work", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    return f"http://{HOST}:{port}/work", runner
