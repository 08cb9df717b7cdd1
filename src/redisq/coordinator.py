"""The coordinator: one process's engine, dispatcher, poller and ticker, started and stopped together.

``redisq serve`` runs one inside the HTTP API's lifespan; tests and the demo build one
directly, with the embedded store and a ``MockTransport`` where they need to.

At start it asks the node of ``redis_url`` whether it is a Redis Cluster (``INFO cluster``)
unless ``redis_cluster`` says, and on a cluster rebuilds its engine on the cluster client
(connection.py). On a cluster the secret must be configured: a shared one kept in Redis
would live on one master, and a coordinator could not start (nor verify a receipt) while
that master is down, whatever masters its workers live on.
"""

from __future__ import annotations

import asyncio
import logging
import re

from redis import exceptions as redis_errors

from .config import Config
from .connection import (
    CLUSTER_REFUSALS,
    RedisClient,
    client_for,
    cluster_enabled,
    connect_cluster,
    is_cluster,
    masters,
    node_of,
)
from .connection import connect as connect  # noqa: PLC0414 - kept where bench and tests import it
from .dead_letters import DeadLetters
from .dispatch import Dispatcher, Observer
from .embedded import EMBEDDED_WARNING
from .engine import REDIS_OUTAGE_ERRORS, Engine, Reaped
from .errors import RedisqError, UnavailableError
from .events import EventFeed
from .keys import WorkerKeys
from .limits import Limits
from .migrate import migrate
from .operations import Operations
from .poller import Poller
from .presence import PresenceLoop
from .security import shared_secret
from .signals import Signals
from .ticker import Ticker
from .transport import Transport, make_transport
from .wakeups import Event, Wakeups

log = logging.getLogger("redisq")

MIGRATION_RETRY_S = 1.0  # while Redis is down at start, the look for old job hashes is tried this often
SECRET_WAIT_S = 10.0  # how long start waits for Redis when it must read from it (the secret, whether a cluster)
# reading a cluster's map
MAP_ERRORS: tuple[type[BaseException], ...] = (*REDIS_OUTAGE_ERRORS, *CLUSTER_REFUSALS, redis_errors.RedisError,
                                               redis_errors.RedisClusterException)
CLUSTER_NEEDS_SECRET = (
    "redis at {url} is a Redis Cluster: set `secret` (or REDISQ_SECRET), the same on every coordinator; on a "
    "cluster redisq does not keep a shared secret in Redis (it would live on one master, and no coordinator "
    "could start or verify receipts while that master is down)")


class StartupFailed(Exception):
    """The coordinator cannot start; the message is one line for the operator (``redisq
    serve`` prints it and exits 1)."""


def redacted_url(url: str | None) -> str:
    """A Redis URL fit for a message: its password replaced by ``***``."""
    return re.sub(r"//([^/@]*?):[^/@]*@", r"//\1:***@", url) if url else "redis"


async def warn_about_eviction(redis: RedisClient) -> str | None:
    """Warn when Redis may evict keys (it would lose jobs): each master of a cluster; returns
    the policy seen (the first that is not noeviction, on a cluster)."""
    try:
        nodes = await masters(redis) if is_cluster(redis) else [None]
    except Exception as e:  # the cluster cannot be reached yet: its loops will say so
        log.debug("could not list the cluster's masters to read maxmemory-policy: %s", e)
        return None
    seen = None
    for node in nodes:
        where = "" if node is None else f" on master {node.name}"
        try:
            if node is None:
                reply = await redis.config_get("maxmemory-policy")
            else:
                reply = await redis.config_get("maxmemory-policy", target_nodes=node)
            policy = reply.get("maxmemory-policy")
        except Exception as e:  # CONFIG may be disabled on managed Redis
            log.debug("could not read maxmemory-policy%s: %s", where, e)
            continue
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy and policy != "noeviction":
            log.warning(
                "redis maxmemory-policy is %r%s: Redis may evict job keys and lose jobs; set "
                "maxmemory-policy noeviction (and appendonly yes)", policy, where)
            return policy
        seen = seen or policy
    return seen


def unreachable_at_start(url: str, error: BaseException) -> StartupFailed:
    return StartupFailed(f"cannot reach redis at {url}: {error} (tried for {SECRET_WAIT_S:g} s; without `secret` "
                         "configured, the shared one is read from Redis at start: start Redis, or set `secret` "
                         "or REDISQ_SECRET)")


class Coordinator:
    def __init__(self, config: Config, redis: RedisClient | None = None, transport: Transport | None = None,
                 observer: Observer | None = None):
        self.config = config
        self.embedded = redis is None and not config.redis_url
        # Whether start() asks the node if it is a cluster: only of a client built here from
        # the URL when the config does not say.
        self._detect_cluster = redis is None and not self.embedded and config.redis_cluster is None
        if redis is None:
            if self.embedded:
                log.warning(EMBEDDED_WARNING)
            redis = client_for(config.redis_url, cluster=bool(config.redis_cluster))
        self.signals = Signals(config)  # this process's log lines and metrics
        self._bind(redis)
        self.transport = transport
        self.observer = observer
        self.secret: bytes = (config.secret or "").encode()
        self.dispatcher: Dispatcher | None = None
        self.poller: Poller | None = None
        self.ticker: Ticker | None = None
        self.dead_letters: DeadLetters | None = None
        self._deferred_dispatch: asyncio.Task[None] | None = None  # started once Redis answers (start)
        self._migration_waiting = False

    def _bind(self, redis: RedisClient) -> None:
        """The parts that talk to Redis, on ``redis`` (again at start, once it turned out
        to be a cluster)."""
        self.redis = redis
        self.engine = Engine(redis, self.config, notify=self)  # its writes tell this coordinator's wake-ups
        self.operations = Operations(self.engine)  # bulk retries and deletes
        self.engine.outages.on_change = self.signals.redis_changed
        self.wakeups = Wakeups(redis, self.config.workers, self.config.worker_slots)
        # GET /events: one reader for every client
        self.events = EventFeed(redis, self.config.workers, self.config.worker_slots)
        self.presence = PresenceLoop(self.engine)  # GET /coordinators lists it while it runs

    @property
    def cluster(self) -> bool:
        return is_cluster(self.redis)

    async def start(self, dispatch: bool = True) -> None:
        if self._detect_cluster:
            self._detect_cluster = False
            if await self._is_cluster():
                await self.redis.aclose()
                self._bind(self._cluster_client())
        if self.cluster and not self.config.secret:
            raise StartupFailed(CLUSTER_NEEDS_SECRET.format(url=redacted_url(self.config.redis_url)))
        if not self.embedded:
            await warn_about_eviction(self.redis)
        self.secret = await self._secret()
        await self._seed_limits()
        await self.presence.start()
        if not dispatch:
            return
        if await self._job_hashes_migrated():
            await self._start_dispatch()
        else:  # Redis is down: dispatch starts once the walk could run (the API serves meanwhile)
            self._deferred_dispatch = asyncio.create_task(self._start_dispatch_after_migration())

    async def _job_hashes_migrated(self) -> bool:
        """Job hashes of the earlier layout renamed (migrate.py); False when Redis could not
        be reached (said once)."""
        try:
            await migrate(self.engine)
            return True
        except REDIS_OUTAGE_ERRORS + (UnavailableError,) as e:
            if not self._migration_waiting:
                log.warning("cannot look for job hashes of the earlier layout yet (%s); dispatching waits for "
                            "redis", e)
                self._migration_waiting = True
            return False

    async def _start_dispatch_after_migration(self) -> None:
        while not await self._job_hashes_migrated():
            await asyncio.sleep(MIGRATION_RETRY_S)
        log.info("redis is reachable: job hashes checked, dispatching starts")
        await self._start_dispatch()

    async def _start_dispatch(self) -> None:
        transport = self.transport or make_transport(self.config.http_client, self.config.max_in_flight)
        self.dispatcher = Dispatcher(self.engine, self.config, transport, self.secret, observer=self.observer,
                                     signing_key=self.signing_key, wakeups=self.wakeups, signals=self.signals)
        self.poller = Poller(self.engine, self.config, on_reaped=self._reaped,
                             before_reap=self.dispatcher.settler.flush)
        self.wakeups.subscribe(Event.LEASE_STARTED, self.poller.lease_started)
        await self.poller.start()
        await self.dispatcher.start()
        self.ticker = Ticker(self.engine, self.config)
        self.wakeups.subscribe(Event.SCHEDULE_CHANGED, self.ticker.wake)
        await self.ticker.start()
        self.dead_letters = DeadLetters(self.engine, self.config, self.signing_key, self.signals)
        await self.dead_letters.start()  # on_dead callbacks: their own tasks and HTTP client

    def _cluster_client(self) -> RedisClient:
        try:
            return connect_cluster(self.config.redis_url or "")
        except ValueError as e:
            raise StartupFailed(str(e)) from e

    async def _is_cluster(self) -> bool:
        """Whether the node of ``redis_url`` is part of a cluster. Without a secret, start
        waits up to ``SECRET_WAIT_S`` for Redis (it must read the shared one next); with one
        configured, an unreachable Redis is taken for a single one (set ``redis_cluster`` to
        say), as a coordinator with a secret starts without Redis."""
        deadline = asyncio.get_running_loop().time() + SECRET_WAIT_S
        url = redacted_url(self.config.redis_url)
        while True:
            try:
                return await cluster_enabled(self.redis)
            except REDIS_OUTAGE_ERRORS as e:
                if self.config.secret:
                    log.warning("cannot reach redis at %s to tell whether it is a Redis Cluster (%s): taking it "
                                "for a single Redis; set redis_cluster = true (or REDISQ_REDIS_CLUSTER) on a "
                                "cluster", url, e)
                    return False
                if asyncio.get_running_loop().time() > deadline:
                    raise unreachable_at_start(url, e) from e
                await asyncio.sleep(0.5)
            except redis_errors.RedisError as e:  # INFO refused (a managed Redis): say which with redis_cluster
                log.warning("redis at %s did not say whether it is a Redis Cluster (%s): taking it for a single "
                            "Redis; set redis_cluster = true|false to say", url, e)
                return False

    async def workers_by_master(self) -> dict[str, list[str]]:
        """On a cluster, each master's address -> the workers whose slot it owns (every
        master listed, with none too); {} on a single Redis or when the map cannot be read."""
        if not is_cluster(self.redis):
            return {}
        try:
            placed: dict[str, list[str]] = {node.name: [] for node in await masters(self.redis)}
            for name, worker in sorted(self.config.workers.items()):
                placed.setdefault((await node_of(self.redis, WorkerKeys(name, worker.slot).tag)).name, []).append(name)
        except MAP_ERRORS as e:
            log.debug("could not read the cluster's map: %s", e)
            return {}
        return placed

    async def announce(self, listen: str) -> None:
        """The start-up summary (``Signals.started``), with each worker's live limits as Redis
        has them, or the file's when Redis cannot be read."""
        limits: dict[str, Limits] = {}
        readable = True
        for name, worker in self.config.workers.items():
            if readable:
                try:
                    limits[name] = await self.engine.worker(name).limits()
                    continue
                except RedisqError:
                    readable = False
            limits[name] = Limits.from_config(worker)
        self.signals.started(listen, self.embedded, limits, await self.workers_by_master())

    async def _seed_limits(self) -> None:
        """The config file's limits into Redis (limits.py says when a live change wins)."""
        for worker in self.config.workers.values():
            try:
                await self.engine.worker(worker.name).seed_limits()
            except (redis_errors.RedisError, OSError) as e:  # seeded on first use instead
                log.warning("could not seed the limits of %s yet: %s", worker.name, e)

    @property
    def signing_key(self) -> bytes:
        """The key that signs dispatches: the first of ``signing_keys``, else the secret."""
        if self.config.signing_keys:
            return self.config.signing_keys[0].encode()
        return self.secret

    async def _secret(self) -> bytes:
        if self.config.secret:
            return self.config.secret.encode()
        deadline = asyncio.get_running_loop().time() + SECRET_WAIT_S
        url = redacted_url(self.config.redis_url)
        while True:
            try:
                return await shared_secret(self.redis, None)
            except REDIS_OUTAGE_ERRORS as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise unreachable_at_start(url, e) from e
                await asyncio.sleep(0.5)
            except redis_errors.RedisError as e:  # an error reply, e.g. READONLY from a replica
                raise StartupFailed(f"redis at {url} refused to give the shared secret: {e}") from e

    async def stop(self) -> None:
        if self._deferred_dispatch is not None and not self._deferred_dispatch.done():
            self._deferred_dispatch.cancel()
            await asyncio.gather(self._deferred_dispatch, return_exceptions=True)
        await self.events.stop()  # open event streams end first: none holds the stop up
        await self.operations.stop()
        if self.ticker is not None:
            await self.ticker.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop(self.config.shutdown_grace_s)
        if self.poller is not None:
            await self.poller.stop()
        if self.dead_letters is not None:
            await self.dead_letters.stop()
        await self.presence.stop()
        await self.redis.aclose()

    # -- wake-ups (wakeups.py): what the API and the loops tell the dispatcher and the ticker --
    def wake(self, worker: str) -> None:
        """Jobs of the worker may be due: this dispatcher looks now."""
        self.wakeups.deliver(Event.JOBS_DUE, worker)

    async def enqueued(self, workers: set[str]) -> None:
        """New jobs due earlier than anything before: wake this dispatcher and the others."""
        for worker in workers:
            await self.wakeups.publish_and_wait(Event.JOBS_DUE, worker)

    def schedules_changed(self, worker: str) -> None:
        """A schedule was saved or resumed: its next fire time may be sooner than the ticker planned."""
        self.wakeups.publish(Event.SCHEDULE_CHANGED, worker)

    def settled(self, worker: str, words: list[str]) -> None:
        """Attempts were settled (``words``: settle's answers) or a job cancelled."""
        if self.dispatcher is not None:
            self.dispatcher.after_settle(worker, words)

    def _reaped(self, worker: str, reaped: Reaped) -> None:
        """The poller failed attempts whose lease ended: retries are due, slots are free."""
        self.signals.leases_reaped(worker, reaped)
        if self.dispatcher is not None:
            self.dispatcher.attempts_ended(worker, retries_due=True)
