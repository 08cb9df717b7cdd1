"""A worker's live limits: what the claim script enforces, kept in Redis.

Every coordinator's claim reads them from ``redisq:{worker}:limits`` on each call, so a
change made through ``PATCH /workers/{name}`` (or ``redisq workers set``) holds on every
coordinator from its next claim, without a restart.

Which wins, the file or a live change: the config file seeds each field at start, and
a field takes the file's value only when the file's value differs from the one it seeded
last time. So a live change survives restarts until someone edits that field in the file;
then the file wins.

A limit that several workers share (``[limits.shopify]``, ``limits = ["shopify"]`` on each)
has the same fields but ``timeout``, in ``redisq:{shopify}/limit/shopify:limits``, seeded
and changed the same way (``PATCH /limits/{name}``): its per-key buckets are drawn on by the
jobs of every worker naming it, on top of each worker's own limits.

Fields: ``rate`` (tokens per second per throttle key; jobs without a key share the key
``""``), ``burst`` (bucket size, default ``max(1, rate)``), ``concurrency`` (jobs of the
worker in flight at once), ``total_rate``/``total_burst`` (a worker-wide bucket over all
keys), ``timeout`` (seconds, for jobs that did not set their own) and ``paused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from .config import DEFAULT_TIMEOUT_S, LimitConfig, WorkerConfig
from .errors import ValidationError
from .inputs import MAX_AMOUNT, TIMEOUT_S, NumberRule
from .types import RedisHash


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def number_text(value: float) -> str:
    """A number as Lua's tonumber reads it, without a needless '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def cost_refusal_text(cost: float, bucket: str, size: float) -> str:
    """Why a job of this cost could never run: it is above ``bucket`` ("burst" or
    "total_burst"), whose size is ``size``. The enqueue script finds the bucket atomically
    with its writes (``cost_refusal`` in lua/includes/limits.lua) and says only which."""
    return f"is {number_text(cost)}, above the {bucket} of {number_text(size)} tokens"


@dataclass(frozen=True)
class Limits:
    rate: float | None = None
    burst: float | None = None  # None = max(1, rate)
    concurrency: int | None = None
    total_rate: float | None = None
    total_burst: float | None = None  # None = max(1, total_rate)
    timeout_s: float = DEFAULT_TIMEOUT_S
    paused: bool = False

    @classmethod
    def from_config(cls, worker: WorkerConfig) -> Limits:
        return cls(rate=worker.rate, burst=worker.burst, concurrency=worker.concurrency,
                   total_rate=worker.total_rate, total_burst=worker.total_burst, timeout_s=worker.timeout_s)

    @classmethod
    def from_limit_config(cls, limit: LimitConfig) -> Limits:
        return cls(rate=limit.rate, burst=limit.burst, concurrency=limit.concurrency,
                   total_rate=limit.total_rate, total_burst=limit.total_burst)

    def shared_pairs(self) -> list[str]:
        """``redis_pairs`` of a shared limit: no timeout (a job's lease is its worker's)."""
        pairs = self.redis_pairs()
        return [x for i in range(0, len(pairs), 2) if pairs[i] != "timeout_ms" for x in pairs[i:i + 2]]

    def shared_json(self) -> dict[str, Any]:
        """``to_json`` of a shared limit (GET /limits): no timeout."""
        return {k: v for k, v in self.to_json().items() if k != "timeout"}

    @classmethod
    def from_fields(cls, fields: RedisHash) -> Limits:
        f = {_text(k): _text(v) for k, v in fields.items()}

        def number(name: str) -> float | None:
            return float(f[name]) if f.get(name) else None

        concurrency = number("concurrency")
        timeout_ms = number("timeout_ms")
        rate, total_rate = number("rate"), number("total_rate")
        # A burst without its rate means nothing (claim ignores it too).
        return cls(rate=rate, burst=number("burst") if rate is not None else None,
                   concurrency=None if concurrency is None else int(concurrency),
                   total_rate=total_rate, total_burst=number("total_burst") if total_rate is not None else None,
                   timeout_s=DEFAULT_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000,
                   paused=f.get("paused") == "1")

    @property
    def bucket_size(self) -> float | None:
        if self.rate is None:
            return None
        return self.burst if self.burst is not None else max(1.0, self.rate)

    @property
    def total_bucket_size(self) -> float | None:
        if self.total_rate is None:
            return None
        return self.total_burst if self.total_burst is not None else max(1.0, self.total_rate)

    def cost_refusal(self, cost: float) -> str | None:
        """Why a job of this cost could never run under these limits; None when it can.
        The check before a write that no script guards (a batch across workers, a
        schedule): the enqueue script makes the same one, under the limits of its call."""
        for size, bucket in ((self.bucket_size, "burst"), (self.total_bucket_size, "total_burst")):
            if size is not None and cost > size:
                return cost_refusal_text(cost, bucket, size)
        return None

    def pairs_of(self, fields: set[str]) -> list[str]:
        """The pairs of ``redis_pairs`` (and ``paused``) for these Redis fields only, so that a
        change writes what it names and keeps what another coordinator changed meanwhile."""
        every = [*self.redis_pairs(), "paused", "1" if self.paused else ""]
        return [x for i in range(0, len(every), 2) if every[i] in fields for x in every[i:i + 2]]

    def redis_pairs(self) -> list[str]:
        """Field/value pairs for ``lua/set_limits.lua`` ('' = no limit); ``paused`` is not among them."""
        def opt(value: float | None) -> str:
            return "" if value is None else number_text(value)

        return ["rate", opt(self.rate), "burst", opt(self.burst), "concurrency", opt(self.concurrency),
                "total_rate", opt(self.total_rate), "total_burst", opt(self.total_burst),
                "timeout_ms", number_text(max(1, round(self.timeout_s * 1000)))]

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "burst": self.bucket_size, "concurrency": self.concurrency,
                "totalRate": self.total_rate, "totalBurst": self.total_bucket_size,
                "timeout": self.timeout_s, "paused": self.paused}


RATE = NumberRule(0, MAX_AMOUNT, above_low=True, nullable=True)  # rate, totalRate: per second
BURST = NumberRule(1, MAX_AMOUNT, nullable=True)  # burst, totalBurst: tokens
CONCURRENCY = NumberRule(1, MAX_AMOUNT, whole=True, nullable=True)
# Each field of a PATCH body and its rule: what parse_limits_patch reads, and what the
# OpenAPI document (api/openapi.py) says of it.
PATCH_RULES = {"rate": RATE, "burst": BURST, "concurrency": CONCURRENCY, "timeout": TIMEOUT_S,
               "totalRate": RATE, "totalBurst": BURST}
PATCH_FIELDS = tuple(PATCH_RULES)
SHARED_PATCH_FIELDS = tuple(name for name in PATCH_FIELDS if name != "timeout")  # PATCH /limits/{name}

PATCH_REDIS_FIELDS = {"rate": "rate", "burst": "burst", "concurrency": "concurrency", "timeout": "timeout_ms",
                      "totalRate": "total_rate", "totalBurst": "total_burst"}


def patched_fields(body: Mapping[str, Any]) -> set[str]:
    """The Redis fields a valid PATCH body writes: those it names, and a rate's burst with it
    (so a burst left behind without its rate is replaced, not revived)."""
    fields = {PATCH_REDIS_FIELDS[name] for name in body}
    if "rate" in fields:
        fields.add("burst")
    if "total_rate" in fields:
        fields.add("total_burst")
    return fields


class _LimitChanges(TypedDict, total=False):
    """What a PATCH changes: ``Limits`` fields by name, for ``replace``."""

    rate: float | None
    burst: float | None
    concurrency: int | None
    total_rate: float | None
    total_burst: float | None
    timeout_s: float


def parse_limits_patch(body: Any, current: Limits) -> Limits:
    """A ``PATCH /workers/{name}`` body applied to ``current``; ValidationError names the field.

    ``null`` removes a limit (``rate: null`` = unlimited; ``burst: null`` = the default)."""
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object")
    if not body:
        raise ValidationError(f"body: give at least one of {', '.join(PATCH_FIELDS)}")
    unknown = [k for k in body if k not in PATCH_FIELDS]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown field (expected {', '.join(PATCH_FIELDS)})", field=unknown[0])

    def number(name: str) -> float | None:
        rule = PATCH_RULES[name]
        return None if body[name] is None and rule.nullable else rule.read(body[name], name)

    changes: _LimitChanges = {}
    if "rate" in body:
        changes["rate"] = number("rate")
    if "burst" in body:
        changes["burst"] = number("burst")
    if "totalRate" in body:
        changes["total_rate"] = number("totalRate")
    if "totalBurst" in body:
        changes["total_burst"] = number("totalBurst")
    if "concurrency" in body:
        concurrency = number("concurrency")
        changes["concurrency"] = None if concurrency is None else int(concurrency)
    if "timeout" in body:
        timeout_s = number("timeout")  # not nullable: a worker always has a timeout
        assert timeout_s is not None
        changes["timeout_s"] = timeout_s
    # Removing a rate removes its burst too, unless the same PATCH gives one (then refused).
    if "rate" in changes and changes["rate"] is None and "burst" not in changes:
        changes["burst"] = None
    if "total_rate" in changes and changes["total_rate"] is None and "total_burst" not in changes:
        changes["total_burst"] = None
    limits = replace(current, **changes)
    if limits.burst is not None and limits.rate is None:
        raise ValidationError("burst: needs a rate (the worker has none)", field="burst")
    if limits.total_burst is not None and limits.total_rate is None:
        raise ValidationError("totalBurst: needs a totalRate (the worker has none)", field="totalBurst")
    return limits
