"""The one seam to Redis (``redisq.connection``): the client the coordinator runs on."""

from __future__ import annotations

import asyncio

from redisq.connection import MAX_CONNECTIONS, client_for

from redis_server import RedisServer

CONCURRENT_CALLS = 1000  # about what 250 workers' loops send at once when they wake together


async def test_many_calls_at_once_wait_for_a_connection_instead_of_failing():
    # Each worker has a claim loop, a poller, a ticker and a settler: a coordinator with a
    # few hundred workers sends many calls at once. They share a bounded pool and wait.
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
