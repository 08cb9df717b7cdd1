"""Shared fixtures: a throwaway real Redis for the session, and the engine's three backends.

Every test that needs Redis talks to a real ``redis-server`` started here on a free port
(or to ``$REDISQ_TEST_REDIS_URL``). When neither can be had, those tests fail with a
message that says how to get one: they are never skipped. The engine's tests run on one
Redis, on the embedded store and on a Redis Cluster of 3 masters (``redis_cluster.py``,
one for the session), through the client redisq builds for each.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis_cluster import RedisCluster

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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster for the session (the engine suite's third store)."""
    try:
        cluster = RedisCluster(masters=3).start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


async def store_client(request: pytest.FixtureRequest, store: str) -> Any:
    """A flushed client of one of the engine's stores: "redis", "embedded" or "cluster"."""
    if store == "redis":
        client: Any = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        await client.flushdb()
    elif store == "cluster":
        from redisq.connection import connect_cluster

        client = connect_cluster(request.getfixturevalue("redis_cluster").url)
        await client.flushall(target_nodes=client.PRIMARIES)
    else:
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
    return client


@pytest.fixture(params=["redis", "embedded", "cluster"])
async def engine_redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The engine's tests run three times: on a real Redis, on the embedded store, and on a
    Redis Cluster through the cluster client redisq builds (``connect(url, cluster=True)``)."""
    client = await store_client(request, request.param)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(params=["redis", "embedded"])
async def engine_redis_not_cluster(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``engine_redis`` without the cluster, for a test of what a cluster does not have; the
    test says why it is not cluster-meaningful."""
    client = await store_client(request, request.param)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def cluster_redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The session's cluster, flushed, through redisq's cluster client: a test of what only a
    cluster has."""
    client = await store_client(request, "cluster")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """What a test started (a ``redisq serve`` with ``kill()``; a redis-server or a cluster
    with ``stop()``) is ended in its teardown, whatever the test did, last started first."""
    started: list[Any] = []
    try:
        yield started
    finally:
        for thing in reversed(started):
            with contextlib.suppress(Exception):
                thing.kill() if hasattr(thing, "kill") else thing.stop()


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
