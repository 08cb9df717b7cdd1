"""One worker's live limits (``redisq.limits`` says when the config file wins over a live
change) and its state as ``GET /workers`` shows it."""

from __future__ import annotations

from ..limits import Limits
from .base import WorkerBase
from .calls import redis_errors_mapped
from .records import (
    SharedKeyState,
    ThrottleKeys,
    ThrottleKeyState,
    WorkerState,
    fields_of,
    integer,
    optional_number,
    replies,
    text,
)

THROTTLE_KEYS_LOOKED_AT = 1000  # GET /workers/{name}/keys looks at the keys that wait longest, this many


class LiveLimits(WorkerBase):
    async def ensure_limits(self) -> None:
        if not self._seeded:
            await self.seed_limits()

    async def seed_limits(self) -> Limits:
        """Give the worker's live limits the config file's values where the file changed
        them since it last did (see limits.py: a live change wins until then)."""
        out = await self.run("set_limits", [self.keys.limits, self.keys.throttle_keys],
                             ["seed", *Limits.from_config(self.config).redis_pairs()])
        for limit, keys in zip(self.config.shared_limits, self.shared_keys, strict=True):
            await self.run("set_limits", [keys.limits, self.keys.throttle_keys],
                           ["seed", *Limits.from_limit_config(limit).shared_pairs()])
        self._seeded = True
        return Limits.from_fields(fields_of(out))

    async def limits(self) -> Limits:
        await self.ensure_limits()
        with redis_errors_mapped():
            return Limits.from_fields(await self.redis.hgetall(self.keys.limits))

    async def set_limits(self, limits: Limits, fields: set[str] | None = None) -> Limits:
        """Set the live limits (``paused`` with them); given ``fields`` (Redis field names,
        see ``Limits.pairs_of``), only those are written. Unless it only pauses, a change may
        let jobs go now (a higher rate or cap, a resume): the dispatchers are told."""
        await self.ensure_limits()
        if fields is None:
            pairs = [*limits.redis_pairs(), "paused", "1" if limits.paused else ""]
        else:
            pairs = limits.pairs_of(fields)
        out = await self.run("set_limits", [self.keys.limits, self.keys.throttle_keys], ["set", *pairs])
        if not (fields == {"paused"} and limits.paused):
            await self.notify.enqueued({self.name})
        return Limits.from_fields(fields_of(out))

    async def state(self) -> WorkerState:
        k = self.keys
        await self.ensure_limits()
        out = replies(await self.run("worker_state",
                                     [*k.queue_keys, k.running, k.bucket, k.key_bucket(""), k.dispatched],
                                     k.queue_args))
        stats = {name: int(value) for name, value in fields_of(out[2]).items()}
        queued, retrying = stats.get("queued", 0), stats.get("retrying", 0)
        return WorkerState(
            name=self.name, url=self.config.url, limits=Limits.from_fields(fields_of(out[1])),
            scheduled=queued - retrying, retrying=retrying, running=integer(out[3]),
            succeeded=stats.get("succeeded", 0), dead=stats.get("dead", 0), cancelled=stats.get("cancelled", 0),
            throttle_keys=integer(out[4]),
            tokens=optional_number(out[5]), total_tokens=optional_number(out[6]),
            back_pressure_s=integer(out[7]) / 1000, dispatched_last_minute=integer(out[8]),
            throttled=stats.get("throttled", 0),
            dispatch_bucket_s=integer(out[9]), dispatched_per_bucket=tuple(integer(n) for n in replies(out[10])),
        )

    async def throttle_keys(self, most: int) -> ThrottleKeys:
        """The worker's throttle keys with jobs waiting that are paused (in a shared limit
        first, then by back-pressure, longest first), then the busiest (most jobs waiting),
        ``most`` of them; among the ``THROTTLE_KEYS_LOOKED_AT`` that wait longest, when more
        keys have jobs waiting. Each with its bucket in every shared limit the worker names."""
        k = self.keys
        out = replies(await self.run("throttle_keys", [k.throttle_keys, k.limits, *self.shared_limit_keys],
                                     [k.queue_prefix, k.key_bucket_prefix, k.state_prefix, k.job_prefix,
                                      THROTTLE_KEYS_LOOKED_AT, *self.shared_limit_args]))
        names = [s.name for s in self.shared_keys]
        stride = 6 + 3 * len(names)
        keys = []
        for i in range(2, len(out), stride):
            ready_ms = int(float(text(out[i + 1])))
            shared = tuple(SharedKeyState(limit=name, tokens=optional_number(out[j]), paused=integer(out[j + 1]) == 1,
                                          paused_s=integer(out[j + 2]) / 1000)
                           for name, j in zip(names, range(i + 6, i + stride, 3), strict=True))
            keys.append(ThrottleKeyState(key=text(out[i]), ready_ms=None if ready_ms < 0 else ready_ms,
                                         waiting=integer(out[i + 2]), running=integer(out[i + 3]),
                                         tokens=optional_number(out[i + 4]), paused_s=integer(out[i + 5]) / 1000,
                                         limits=shared))
        keys.sort(key=lambda state: (state.ready_ms is not None, -state.held_s, -state.waiting, -state.running,
                                     state.key))
        return ThrottleKeys(integer(out[0]), integer(out[1]), keys[:most])

