"""The one choke point between the engine and Redis: every script call and every read of
the engine goes through ``redis_errors_mapped``, which maps the Redis client's exceptions
to redisq's own by one table (as httpx maps the layer below once, at its transport seam).

    redis-py exception                         redisq error (status)
    OutOfMemoryError                           UnavailableError (503): Redis is at maxmemory
    ReadOnlyError                              UnavailableError (503): Redis refuses writes
    ConnectionError, TimeoutError, OSError     UnavailableError (503): Redis is unreachable or does
                                                 not answer within 1 s
    cluster refusals (MOVED and ASK after      UnavailableError (503): the cluster is
      redis-py's redirects, TRYAGAIN,            reconfiguring; retry
      CLUSTERDOWN, MASTERDOWN, an uncovered
      slot: ``connection.CLUSTER_REFUSALS``)
    other cluster client errors                UnavailableError (503)
    "non local key" (a script met a key        UnavailableError (503): the slot is migrating
      that left mid-script)
    NOREPLICAS (min-replicas-to-write)         UnavailableError (503): the master refuses writes
    any other ResponseError or RedisError      RedisqError (500): Redis answered an error

The first row that matches wins. The original exception is the mapped one's ``__cause__``.
A refusal ran nothing, so ``WorkerBase`` sends any call again after one, for up to
``REFUSAL_RETRY_S`` (a claim's too: it is not a repeat of a call that may have run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import exceptions as redis_errors

from ..connection import CLUSTER_REFUSALS, REDIS_OUTAGE_ERRORS, is_outage
from ..errors import RedisqError, UnavailableError

__all__ = ["CLUSTER_REFUSALS", "ERROR_TABLE", "REDIS_OUTAGE_ERRORS", "REFUSAL_RETRY_S", "OutageClock", "is_outage",
           "mapped_error", "redis_errors_mapped"]

_CLUSTER_ERRORS: tuple[type[BaseException], ...] = (*CLUSTER_REFUSALS, redis_errors.RedisClusterException)
# How long a call refused by a cluster (a slot migrating, a master failing over) is sent
# again before the caller gets 503: redis-py has followed its redirects for about 0.5 s by then.
REFUSAL_RETRY_S = 1.0
# Redis's reply when a script reads or writes a key that has left a migrating slot mid-script.
NON_LOCAL_KEY_TEXT = "non local key"
# A master with min-replicas-to-write refuses writes while too few replicas are in reach.
NO_REPLICAS_TEXT = "NOREPLICAS"

ERROR_TABLE: tuple[tuple[tuple[type[BaseException], ...], type[RedisqError], str], ...] = (
    ((redis_errors.OutOfMemoryError,), UnavailableError,
     "redis is full (maxmemory): it refuses new jobs until finished ones are purged or maxmemory is raised: {error}"),
    ((redis_errors.ReadOnlyError,), UnavailableError, "redis refuses writes: {error}"),
    (REDIS_OUTAGE_ERRORS, UnavailableError, "redis unavailable: {error}"),
    (_CLUSTER_ERRORS, UnavailableError, "redis cluster is reconfiguring ({kind}: {error}); retry"),
    ((redis_errors.RedisError,), RedisqError, "redis answered an error ({kind}): {error}"),
)


def mapped_error(error: BaseException) -> RedisqError | None:
    """The redisq error for a Redis client's exception, by ``ERROR_TABLE``; None for others."""
    if isinstance(error, redis_errors.ResponseError) and NON_LOCAL_KEY_TEXT in str(error):
        return UnavailableError(f"redis cluster is migrating the worker's slot: {error}; retry")
    if isinstance(error, redis_errors.ResponseError) and str(error).startswith(NO_REPLICAS_TEXT):
        return UnavailableError(f"redis refuses writes: fewer replicas than its min-replicas-to-write: {error}")
    for kinds, mapped, message in ERROR_TABLE:
        if isinstance(error, kinds):
            return mapped(message.format(error=error, kind=type(error).__name__))
    return None


@contextmanager
def redis_errors_mapped() -> Iterator[None]:
    try:
        yield
    except RedisqError:
        raise
    except Exception as e:
        mapped = mapped_error(e)
        if mapped is None:
            raise
        raise mapped from e


class OutageClock:
    """Whether this process's script calls find Redis unreachable, and since when they
    succeed again. The poller waits ``RECOVERY_GRACE_S`` after an outage before it reaps:
    meanwhile the claim loops repeat the claims whose answers were lost and the settlers
    settle the answers they held, so leases that ran out during the outage end by those
    answers, not as timed out."""

    RECOVERY_GRACE_S = 3.0

    def __init__(self) -> None:
        self.failing = False
        self.recovered_at = -self.RECOVERY_GRACE_S  # time.monotonic() of the last recovery
        self.on_change: Callable[[bool], None] | None = None  # told False when calls start failing, True when back

    def failed(self) -> None:
        if not self.failing and self.on_change is not None:
            self.on_change(False)
        self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            self.recovered_at = time.monotonic()
            if self.on_change is not None:
                self.on_change(True)

    def grace_left_s(self) -> float:
        """How long reaping should still wait (0 = reap)."""
        if self.failing:
            return self.RECOVERY_GRACE_S
        return max(0.0, self.recovered_at + self.RECOVERY_GRACE_S - time.monotonic())
