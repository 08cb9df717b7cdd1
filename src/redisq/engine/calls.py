"""The one choke point between the engine and Redis: every script call and every read of
the engine goes through ``redis_errors_mapped``, which maps the Redis client's exceptions
to redisq's own by one table (as httpx maps the layer below once, at its transport seam).

    redis-py exception                         redisq error (status)
    OutOfMemoryError                           UnavailableError (503): Redis is at maxmemory
    ReadOnlyError                              UnavailableError (503): Redis refuses writes
    ConnectionError, TimeoutError, OSError     UnavailableError (503): Redis is unreachable or does
                                                 not answer within 1 s
    cluster errors (MOVED, ASK, TRYAGAIN,      UnavailableError (503): the cluster is
      CLUSTERDOWN, ...)                          reconfiguring; retry
    any other ResponseError or RedisError      RedisqError (500): Redis answered an error

The first row that matches wins. The original exception is the mapped one's ``__cause__``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import exceptions as redis_errors

from ..connection import REDIS_OUTAGE_ERRORS, is_outage
from ..errors import RedisqError, UnavailableError

__all__ = ["ERROR_TABLE", "REDIS_OUTAGE_ERRORS", "OutageClock", "is_outage", "mapped_error", "redis_errors_mapped"]

_CLUSTER_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ClusterError, redis_errors.AskError, redis_errors.TryAgainError, redis_errors.ClusterDownError,
    redis_errors.MasterDownError, redis_errors.SlotNotCoveredError, redis_errors.RedisClusterException,
)

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
