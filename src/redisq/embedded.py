"""The embedded store: an in-memory Redis (fakeredis) running the same Lua scripts.

Used when no Redis URL is configured, for trying redisq out and for tests. Jobs live in
this process's memory only and do not survive a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import fakeredis

EMBEDDED_WARNING = (
    "no redis_url configured: using the embedded in-memory store; jobs do not survive a "
    "restart (set redis_url or REDISQ_REDIS_URL for a real Redis)"
)


def embedded_redis() -> fakeredis.aioredis.FakeRedis:
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis runs Lua scripts through lupa)
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise RuntimeError(f"the embedded store needs fakeredis with Lua: pip install 'fakeredis[lua]' ({e})") from e
    from .connection import EMBEDDED_MAX_CONNECTIONS

    return fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), max_connections=EMBEDDED_MAX_CONNECTIONS)
