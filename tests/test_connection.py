"""The one seam to Redis (``redisq.connection``): the client the coordinator runs on."""

from __future__ import annotations

import asyncio

from redisq import connection
from redisq.connection import MAX_CONNECTIONS, client_for, cluster_enabled, is_cluster
from redisq.keys import WorkerKeys

from redis_server import RedisServer

CONCURRENT_CALLS = 1000  # about what 250 workers' loops send at once when they wake together


async def test_many_calls_at_once_wait_for_a_connection_instead_of_failing(monkeypatch):
    # Each worker has a claim loop, a poller, a ticker and a settler: a coordinator with a
    # few hundred workers sends many calls at once. They share a bounded pool and wait.
    # (What is asserted is the pool's waiting; opening its 256 connections at once took
    # over the 1 s connect timeout in CI on a busy machine, so the test gives them longer.)
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT_S", 10.0)
    server = RedisServer().start()
    client = client_for(server.url)
    try:
        answers = await asyncio.gather(*(client.ping() for _ in range(CONCURRENT_CALLS)))
        assert answers == [True] * CONCURRENT_CALLS
        connected = int((await client.info("clients"))["connected_clients"])
        assert connected <= MAX_CONNECTIONS
    finally:
        await client.aclose()
        server.stop()


async def test_the_embedded_store_takes_many_calls_at_once():
    client = client_for(None)
    answers = await asyncio.gather(*(client.ping() for _ in range(CONCURRENT_CALLS)))
    assert answers == [True] * CONCURRENT_CALLS


async def test_on_a_cluster_many_calls_at_once_wait_for_a_connection_too(redis_cluster):
    """The cluster client caps calls at once as the single one does (redis-py's own cap per
    node would fail them with "Too many connections"), and a burst as its very first calls
    waits for one of them to read the cluster's map (redis-py lets each start it, and a few
    then failed with "Connection closed by server")."""
    client = client_for(redis_cluster.url, cluster=True)
    try:
        keys = [f"{WorkerKeys(f'w{n % 30}').tag}:x" for n in range(CONCURRENT_CALLS)]
        answers = await asyncio.gather(*(client.incr(key) for key in keys))
        assert sorted(answers)[-1] == CONCURRENT_CALLS // 30 + 1 and len(answers) == CONCURRENT_CALLS
        assert is_cluster(client) and await cluster_enabled(client)
        for node in client.get_primaries():
            connected = int((await client.info("clients", target_nodes=node))["connected_clients"])
            assert connected <= MAX_CONNECTIONS + 2  # and redis-cli's, and the session's own clients
    finally:
        await client.aclose()


async def test_a_node_says_whether_it_is_part_of_a_cluster(redis_cluster, redis_url):
    import redis.asyncio as aioredis

    for url, expected in ((redis_cluster.url, True), (redis_url, False)):
        single = aioredis.Redis.from_url(url)
        try:
            assert await cluster_enabled(single) is expected
        finally:
            await single.aclose()
