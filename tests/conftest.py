"""Shared fixtures: a throwaway real Redis for the session, and the engine's two backends.

Every test that needs Redis talks to a real ``redis-server`` started here on a free port
(or to ``$REDISQ_TEST_REDIS_URL``). When neither can be had, those tests fail with a
message that says how to get one: they are never skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis.asyncio as aioredis

from redis_server import RedisServer, redis_url_from_env


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = redis_url_from_env()
    if url:
        yield url
        return
    try:
        server = RedisServer().start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def real_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "embedded"])
async def engine_redis(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """The engine's tests run twice: on a real Redis and on the embedded store."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client = aioredis.Redis.from_url(url)
        await client.flushdb()
    else:
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The names of the files in the project's wheel, built as pip builds it for an install
    (once per run: the console's and the docs' tests both look in it)."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(root), "-w", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("redisq-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())
