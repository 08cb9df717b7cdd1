"""What tests need of the engine's stores beyond the ``engine_redis`` fixture (conftest.py):
another client of the same store, on connections of its own."""

from __future__ import annotations

from typing import Any

import fakeredis
import redis.asyncio as aioredis

from redisq.connection import connect_cluster, is_cluster


def sibling_client(client: Any) -> Any:
    """Another client, on a connection of its own, to the same Redis, cluster or embedded server."""
    if is_cluster(client):
        node = next(iter(client.nodes_manager.startup_nodes.values()))
        return connect_cluster(f"redis://{node.host}:{node.port}")
    kwargs = client.connection_pool.connection_kwargs
    if isinstance(client, fakeredis.aioredis.FakeRedis):
        return fakeredis.aioredis.FakeRedis(server=kwargs["server"])
    return aioredis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs["db"])
