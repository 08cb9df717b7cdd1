"""The one seam to Redis: settings in, a client out.

``connect(url)`` builds the client the engine runs on: a single Redis from a
``redis://``, ``rediss://`` or ``unix://`` URL, with short timeouts so that an outage
fails fast (the API answers 503, the loops back off), and hiredis packing commands where it
can; ``client_for`` picks it, or the embedded in-memory store (``embedded.py``) that runs
the same scripts when no URL is set. Everything above this module is typed against
``RedisClient``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Union

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT

if TYPE_CHECKING:
    import fakeredis

try:  # hiredis before 2.2 has no pack_command
    from hiredis import pack_command as hiredis_pack_command
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    HIREDIS_PACKS = False
else:
    HIREDIS_PACKS = True

# The engine needs commands, scripts and pub/sub: a redis-py asyncio client, or fakeredis's.
RedisClient = Union[aioredis.Redis, "fakeredis.aioredis.FakeRedis"]

# Redis cannot be reached (as opposed to an error reply, which it sends when it can).
REDIS_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (redis_errors.ConnectionError, redis_errors.TimeoutError,
                                                         OSError)

# An outage is an answer within about a second: the API answers 503, the loops back off.
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 1.0
HEALTH_CHECK_INTERVAL_S = 30
# Connections one client opens at most; more calls at once wait for one of them (every
# worker's loops wake together, so a coordinator of a few hundred workers sends a thousand
# calls at once). redis-py's own pools fail beyond 100 ("Too many connections").
MAX_CONNECTIONS = 256
EMBEDDED_MAX_CONNECTIONS = 1_000_000  # in-process: a connection costs nothing


class HiredisPackedConnection(aioredis.Connection):
    """A connection that packs commands with hiredis (C) instead of redis-py's Python packer,
    which was most of the client's CPU time in ``python -m bench`` (a settle of 500 jobs is
    one command of ~4,000 arguments)."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:  # "CONFIG GET" -> two words
            args = (*args[0].split(), *args[1:])
        # hiredis's stub declares a 1-tuple (Tuple[X]) where it takes the whole command
        packed: bytes = hiredis_pack_command(args)  # type: ignore[arg-type]
        return [packed]


class _PoolOptions(TypedDict, total=False):
    connection_class: type[aioredis.Connection]  # else the URL's scheme chooses


def connect(redis_url: str) -> aioredis.Redis:
    """A client that fails fast during an outage (the API answers 503, loops back off), and
    never sends a command again by itself: a command whose answer was lost may have run, and
    only the engine knows whether running it twice is safe (``WorkerBase.run``)."""
    extra: _PoolOptions = {}
    if redis_url.startswith("redis://") and HIREDIS_PACKS:
        extra["connection_class"] = HiredisPackedConnection
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT_S,  # waiting for a free connection counts like waiting for Redis
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 0),
        **extra,
    )
    return aioredis.Redis.from_pool(pool)


def client_for(redis_url: str | None) -> RedisClient:
    """``connect(redis_url)``, or the embedded store without a URL."""
    if redis_url:
        return connect(redis_url)
    from .embedded import embedded_redis

    return embedded_redis()


def is_outage(error: BaseException) -> bool:
    """Redis could not be reached (the error, or the one it was mapped from)."""
    return isinstance(error, REDIS_OUTAGE_ERRORS) or isinstance(error.__cause__, REDIS_OUTAGE_ERRORS)
