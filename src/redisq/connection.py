"""The one seam to Redis: settings in, a client out.

``connect(url)`` builds the client the engine runs on: a single Redis from a
``redis://``, ``rediss://`` or ``unix://`` URL, with short timeouts so that an outage
fails fast (the API answers 503, the loops back off), and hiredis packing commands where it
can; ``client_for`` picks it, or the embedded in-memory store (``embedded.py``) that runs
the same scripts when no URL is set. Everything above this module is typed against
``RedisClient``.

``connect(url, cluster=True)`` builds redis-py's ``RedisCluster`` instead
(``ClusterClient``), from any one node's ``redis://`` or ``rediss://`` URL (password and TLS
as for one node): the same timeouts, hiredis packing and cap on calls at once, no retry of
a command whose answer was lost, and its own map of which master owns which slot, which it
refreshes after a connection error, a MOVED or a CLUSTERDOWN (so a failover needs no
restart). ``cluster_enabled`` asks a node whether it is one (``INFO cluster``): the
coordinator does at start unless ``redis_cluster`` is set. On a cluster, the helpers here
send a command to one worker's master (``node_of``), or to every master (``masters``,
``ping_masters``).
"""

from __future__ import annotations

import asyncio
import os
import traceback
from typing import TYPE_CHECKING, Any, TypedDict, TypeGuard, Union, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
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

# The engine needs commands, scripts and pub/sub: a redis-py asyncio client (one Redis or
# a cluster), or fakeredis's.
RedisClient = Union[aioredis.Redis, RedisCluster, "fakeredis.aioredis.FakeRedis"]

# Redis cannot be reached (as opposed to an error reply, which it sends when it can).
REDIS_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (redis_errors.ConnectionError, redis_errors.TimeoutError,
                                                         OSError)
# A cluster refused a command before running it: its slot is moving (TRYAGAIN; MOVED and ASK
# that redis-py followed until its redirects ran out: "TTL exhausted"), or the cluster or
# the slot's master is down (CLUSTERDOWN, MASTERDOWN, a slot no master owns in the client's
# map). Nothing ran, so any command may be sent again, a claim's too (calls.py).
CLUSTER_REFUSALS: tuple[type[BaseException], ...] = (
    redis_errors.TryAgainError, redis_errors.AskError, redis_errors.ClusterDownError, redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
)

# An outage is an answer within about a second: the API answers 503, the loops back off.
CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 1.0
HEALTH_CHECK_INTERVAL_S = 30
# Connections one client opens at most; more calls at once wait for one of them (every
# worker's loops wake together, so a coordinator of a few hundred workers sends a thousand
# calls at once). redis-py's own pools fail beyond 100 ("Too many connections").
MAX_CONNECTIONS = 256
EMBEDDED_MAX_CONNECTIONS = 1_000_000  # in-process: a connection costs nothing
# A cluster client opens connections per master; its calls at once are capped at
# MAX_CONNECTIONS over all masters (``ClusterClient``), and each master may take that many
# plus what pub/sub and pipelines hold.
NODE_MAX_CONNECTIONS = 2 * MAX_CONNECTIONS
# redis-py's connection module, where a connection closed under a call fails it
REDIS_CONNECTION_MODULE = os.path.join("redis", "asyncio", "connection.py")


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


class ClusterClient(RedisCluster):
    """redis-py's cluster client with three changes for redisq:

    - its calls wait for one of ``MAX_CONNECTIONS`` (as the single client's blocking pool
      makes them wait, up to ``COMMAND_TIMEOUT_S``), where redis-py's own per-node cap fails
      at once ("Too many connections");
    - its first start (the slot map, the command table) is made once, by the first call,
      while the others wait: redis-py lets every call of a burst start it at once, and a
      few of them then fail with "Connection closed by server";
    - after its first start, a refresh of its map (after a connection error, a MOVED, a
      CLUSTERDOWN) only asks a node for the slots (CLUSTER SLOTS, trying the nodes in turn),
      as redis-py does, but does not fetch the command table again from the first master,
      which may be the one that just died: that made every refresh fail, and close every
      connection of every master, until the failover was over;
    - a call on a connection that redis-py closed under it (it closes every connection of
      every master on CLUSTERDOWN, calls in flight included) fails as a ``ConnectionError``,
      an outage, instead of the ``RuntimeError`` or ``AttributeError`` that redis-py's
      connection code raises then ("handler is closed", a writer that is None).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.calls_at_once = asyncio.Semaphore(MAX_CONNECTIONS)
        self.started = False  # whether a first initialize() succeeded (the command table is known)
        self._first_start = asyncio.Lock()

    async def initialize(self, additional_startup_nodes_info: list[tuple[str, int]] | None = None,
                         last_failed_node_name: str | None = None) -> ClusterClient:
        if not self.started:
            await super().initialize(additional_startup_nodes_info, last_failed_node_name)
            self.started = True
            return self
        if self._initialize:
            if not self._lock:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._initialize:
                    await self.nodes_manager.initialize(additional_startup_nodes_info=additional_startup_nodes_info,
                                                        last_failed_node_name=last_failed_node_name)
                    self._initialize = False
                    if last_failed_node_name is not None and self.get_default_node().name == last_failed_node_name:
                        self.replace_default_node()
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if not self.started:  # before the wait for a free call, which its time must not count
            try:
                async with self._first_start:
                    await self.initialize()
            except redis_errors.RedisClusterException as e:
                raise unreachable_as_outage(e) from e
        try:
            await asyncio.wait_for(self.calls_at_once.acquire(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise redis_errors.ConnectionError(
                f"no connection to the cluster free within {COMMAND_TIMEOUT_S:g} s "
                f"({MAX_CONNECTIONS} calls at once)") from None
        try:
            return await super().execute_command(*args, **kwargs)
        except redis_errors.RedisClusterException as e:
            raise unreachable_as_outage(e) from e
        except (RuntimeError, AttributeError) as e:
            if not closed_under_the_call(e):
                raise
            raise redis_errors.ConnectionError(f"connection closed by the cluster client: {e}") from e
        finally:
            self.calls_at_once.release()


def unreachable_as_outage(error: redis_errors.RedisClusterException) -> BaseException:
    """redis-py's "Redis Cluster cannot be connected" (no node reachable to read the slot map
    from) as the outage it is, a ``ConnectionError``; any other cluster client error as it is."""
    if isinstance(error.__cause__, REDIS_OUTAGE_ERRORS):
        return redis_errors.ConnectionError(f"no node of the redis cluster reachable: {error.__cause__}")
    return error


async def ready(redis: RedisCluster) -> None:
    """The cluster client's slot map read (again, after an error made it stale)."""
    try:
        await redis.initialize()
    except redis_errors.RedisClusterException as e:
        mapped = unreachable_as_outage(e)
        if mapped is e:
            raise
        raise mapped from e


def closed_under_the_call(error: BaseException) -> bool:
    """Whether an error other than redis-py's own came from its connection code (or asyncio's
    transport below it): the connection was closed while the call used it."""
    if isinstance(error, RuntimeError) and "handler is closed" in str(error):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.endswith(REDIS_CONNECTION_MODULE)


def connect(redis_url: str, cluster: bool = False) -> aioredis.Redis | ClusterClient:
    """A client that fails fast during an outage (the API answers 503, loops back off), and
    never sends a command again by itself: a command whose answer was lost may have run, and
    only the engine knows whether running it twice is safe (``WorkerBase.run``). With
    ``cluster``, redis-py's cluster client (``connect_cluster``)."""
    if cluster:
        return connect_cluster(redis_url)
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


def connect_cluster(redis_url: str) -> ClusterClient:
    """The cluster client, from any node's URL. It finds the other nodes at its first call;
    ``require_full_coverage=False`` keeps the workers of healthy masters served while
    another master fails over. ``retry`` 0: no command is sent again after a lost answer
    (redis-py still follows MOVED and ASK, and waits out TRYAGAIN, a few times: none of those
    ran the command)."""
    if redis_url.startswith("unix://"):
        raise ValueError(f"a Redis Cluster is reached over TCP: {redis_url.split('?')[0]!r} is a unix socket "
                         "(give a node's redis:// or rediss:// URL)")
    client = cast(ClusterClient, ClusterClient.from_url(
        redis_url,
        max_connections=NODE_MAX_CONNECTIONS,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=False,
    ))
    if redis_url.startswith("redis://") and HIREDIS_PACKS:
        # the nodes it discovers are built from these arguments
        client.connection_kwargs["connection_class"] = HiredisPackedConnection
    return client


async def cluster_enabled(redis: RedisClient) -> bool:
    """Whether the node the client reaches is part of a Redis Cluster (``INFO cluster``)."""
    if is_cluster(redis):
        return True
    info = await redis.info("cluster")
    return str(info.get("cluster_enabled", 0)) == "1"


def is_cluster(redis: RedisClient) -> TypeGuard[RedisCluster]:
    return isinstance(redis, RedisCluster)


async def node_of(redis: RedisCluster, key: str) -> ClusterNode:
    """The master that owns ``key``'s slot, in the client's map (refreshed first when an
    error made it stale)."""
    await ready(redis)
    node = redis.get_node_from_key(key)
    if node is None:  # pragma: no cover - only asked for a replica
        raise redis_errors.SlotNotCoveredError(f"no master owns the slot of {key!r}")
    return node


async def masters(redis: RedisCluster) -> list[ClusterNode]:
    """Every master of the cluster, by address."""
    await ready(redis)
    return sorted(redis.get_primaries(), key=lambda node: node.name)


async def ping_masters(redis: RedisCluster) -> dict[str, str | None]:
    """Each master's address -> None when it answered PING, else why not."""
    nodes = await masters(redis)

    async def ping(node: ClusterNode) -> str | None:
        try:
            await redis.ping(target_nodes=node)
        except Exception as e:  # each master's answer on its own
            return f"{type(e).__name__}: {e}"
        return None

    answers = await asyncio.gather(*(ping(node) for node in nodes))
    return {node.name: answer for node, answer in zip(nodes, answers, strict=True)}


async def server_time_ms(redis: RedisClient, key: str) -> int:
    """The clock of the server that holds ``key`` (on a cluster, its slot's master)."""
    if is_cluster(redis):
        seconds, micros = await redis.time(target_nodes=await node_of(redis, key))
    else:
        seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def client_for(redis_url: str | None, cluster: bool = False) -> RedisClient:
    """``connect(redis_url, cluster)``, or the embedded store without a URL."""
    if redis_url:
        return connect(redis_url, cluster)
    from .embedded import embedded_redis

    return embedded_redis()


def is_outage(error: BaseException) -> bool:
    """Redis could not be reached (the error, or the one it was mapped from)."""
    return isinstance(error, REDIS_OUTAGE_ERRORS) or isinstance(error.__cause__, REDIS_OUTAGE_ERRORS)


def is_refusal(error: BaseException) -> bool:
    """A cluster refused the command without running it (the error, or the one it was mapped from)."""
    return isinstance(error, CLUSTER_REFUSALS) or isinstance(error.__cause__, CLUSTER_REFUSALS)
