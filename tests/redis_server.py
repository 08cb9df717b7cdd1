"""Throwaway redis-server processes for the tests, each on a free port of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

NO_REDIS_MESSAGE = (
    "the tests need a real Redis and no `redis-server` was found on PATH: install it "
    "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or point "
    "REDISQ_TEST_REDIS_URL at a Redis the tests may flush"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server on 127.0.0.1:<port>; stop() and start() again keep the same port."""

    def __init__(self, port: int | None = None, *extra_args: str):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(NO_REDIS_MESSAGE)
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="redisq-test-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def redis_url_from_env() -> str | None:
    return os.environ.get("REDISQ_TEST_REDIS_URL") or None
