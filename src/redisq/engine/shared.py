"""A limit that several workers share (``[limits.NAME]``): its live fields, its paused keys
and its state, through the engines of the workers that name it (its keys share their
slot, so any of them runs its scripts). The claim script takes its tokens (``claim.lua``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import LimitConfig
from ..keys import LimitKeys
from ..limits import Limits
from .records import fields_of, integer, replies, text
from .worker import WorkerEngine

PAUSED_KEYS_LISTED = 1000  # GET /limits/{name} lists at most this many paused keys


@dataclass(frozen=True)
class SharedLimitState:
    name: str
    slot: str
    workers: tuple[str, ...]
    limits: Limits
    in_flight: int
    total_tokens: float | None
    paused_keys: tuple[str, ...]
    key: str | None = None  # the throttle key asked about, and its bucket's level
    key_tokens: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "slot": self.slot, "workers": list(self.workers),
                               "limits": self.limits.shared_json(), "running": self.in_flight,
                               "totalTokens": self.total_tokens, "pausedKeys": list(self.paused_keys)}
        if self.key is not None:
            out["key"] = {"key": self.key, "tokens": self.key_tokens, "paused": self.key in self.paused_keys}
        return out


class SharedLimit:
    def __init__(self, config: LimitConfig, members: Sequence[WorkerEngine]):
        self.config = config
        self.name = config.name
        self.keys = LimitKeys(config.name, config.slot_tag)
        self.members = list(members)  # the engines of the workers naming it (none: it is unused)

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(member.name for member in self.members)

    def _runner(self) -> WorkerEngine | None:
        return self.members[0] if self.members else None

    async def state(self, key: str | None = None) -> SharedLimitState:
        runner = self._runner()
        if runner is None:  # named by no worker: nothing in Redis
            return SharedLimitState(self.name, self.keys.slot, (), Limits.from_limit_config(self.config), 0, None, (),
                                    key, None)
        await runner.ensure_limits()
        k = self.keys
        out = replies(await runner.run("limit_state", [k.limits, k.bucket, k.running, k.paused_keys,
                                                       k.key_bucket(key or "")], [PAUSED_KEYS_LISTED]))
        return SharedLimitState(
            name=self.name, slot=k.slot, workers=self.workers, limits=Limits.from_fields(fields_of(out[1])),
            key_tokens=float(text(out[2])) if text(out[2]) and key is not None else None,
            total_tokens=float(text(out[3])) if text(out[3]) else None, in_flight=integer(out[4]),
            paused_keys=tuple(sorted(text(v) for v in replies(out[5]))), key=key)

    async def set_limits(self, limits: Limits, fields: set[str]) -> None:
        """Write ``fields`` (Redis field names, ``paused`` among them) of the live limit; the
        keys its workers wait on are looked at again, and they are told (unless it pauses)."""
        runner = self._runner()
        if runner is None:
            return
        await runner.ensure_limits()
        await runner.run("set_limits", [self.keys.limits, runner.keys.throttle_keys],
                         ["set", *limits.pairs_of(fields - {"timeout_ms"})])
        for member in self.members[1:]:
            await member.run("set_limits", [self.keys.limits, member.keys.throttle_keys], ["rescore"])
        if not (fields == {"paused"} and limits.paused):
            await runner.notify.enqueued(set(self.workers))

    async def pause_key(self, key: str, paused: bool) -> bool:
        """Pause or resume one throttle key under this limit; True when that changed anything."""
        runner = self._runner()
        if runner is None:
            return False
        out = await runner.run("pause_limit_key", [self.keys.paused_keys,
                                                   *(member.keys.throttle_keys for member in self.members)],
                               [key, "pause" if paused else "resume"])
        if not paused:
            await runner.notify.enqueued(set(self.workers))
        return bool(integer(out))
