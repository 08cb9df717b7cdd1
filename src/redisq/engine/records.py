"""What the engine's calls answer: claimed jobs, receipts, hold-back reports, a worker's
state, schedules and tick rounds. Plain values; their JSON is the API's (``redisq.api``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..config import WorkerConfig
from ..cron import NEXT_RUN_TIMES, cron_spec
from ..keys import job_id
from ..limits import Limits
from ..model import Job
from ..types import RedisHash, ScriptArg, ScriptReply


def text(value: ScriptReply | str) -> str:
    """A value Redis answered (bytes, or a number from a script) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def integer(value: ScriptReply) -> int:
    """A number a script answered (an integer, or its text) as an int."""
    if isinstance(value, (bytes, int)):
        return int(value)
    raise TypeError(f"a script answered {value!r} where a number was expected")


def optional_number(value: ScriptReply) -> float | None:
    """A number a script answered as text, '' for none (a bucket's level where no rate is)."""
    shown = text(value)
    return float(shown) if shown else None


def replies(value: ScriptReply) -> list[ScriptReply]:
    """A script's table reply as the list of its entries."""
    if isinstance(value, list):
        return value
    raise TypeError(f"a script answered {value!r} where a table was expected")


def int_or_none(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


def fields_of(reply: ScriptReply) -> dict[str, str]:
    """A flat [field, value, ...] table (an HGETALL inside a script) as a dict."""
    flat = replies(reply)
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


@dataclass(frozen=True)
class ClaimedJob:
    worker: str
    suffix: str
    attempt: int
    timeout_ms: int
    args_json: str
    seq: int = 0  # the enqueue sequence: tells this job from a later one with the same id
    throttle_key: str = ""
    cost: float = 1.0
    key_slack_ms: float | None = None  # how long its key's bucket would have taken to fill at the claim; None = no rate
    run_at_ms: int = 0  # when it was due (unix ms, Redis's clock); 0 = not known
    # The same for each shared limit's bucket of its key: (limit, slack ms), limits with a rate only.
    shared_key_slack_ms: tuple[tuple[str, float], ...] = ()

    @property
    def id(self) -> str:
        return job_id(self.worker, self.suffix)


@dataclass(frozen=True)
class Claim:
    jobs: list[ClaimedJob]
    wait_ms: int  # 0 more due now, > 0 next due in ms, -1 nothing scheduled, -2 all slots taken, -3 paused
    capped: bool = False  # the worker has a concurrency cap: a settle frees a slot
    rated: bool = False  # the worker has a rate: its jobs must leave within send_window or be returned unsent
    total_slack_ms: float | None = None  # the same for the worker-wide bucket; None = no total_rate
    # The same for each shared limit's bucket over all keys: (limit, slack ms), limits with a total_rate only.
    shared_total_slack_ms: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class HoldBack:
    """One claim's jobs of a bucket were written ``late_ms`` after it (``lua/hold_back.lua``):
    ``bucket`` is "key" (the worker's bucket of ``throttle_key``), "worker" (the worker-wide
    one), "limit-key" (the shared limit ``limit``'s bucket of ``throttle_key``) or "limit"
    (that limit's bucket over all keys)."""

    bucket: str
    throttle_key: str
    slack_ms: float  # how long the bucket would have taken to fill up at the claim
    cost: float  # what the claim drew from it
    late_ms: int  # of the claim's first write on the bucket
    limit: str = ""  # the shared limit of a "limit-key" or "limit" bucket


@dataclass(frozen=True)
class WorkerState:
    """What ``GET /workers`` shows of one worker."""

    name: str
    url: str
    limits: Limits
    scheduled: int
    retrying: int
    running: int
    succeeded: int
    dead: int
    cancelled: int
    throttle_keys: int  # keys with jobs waiting
    tokens: float | None  # left in the bucket of jobs without a throttle key; None = no rate
    total_tokens: float | None  # left in the worker-wide bucket; None = no total_rate
    back_pressure_s: float  # the worker pauses this long after a Retry-After (0 = not paused)
    dispatched_last_minute: int
    throttled: int  # answers that pushed back (a 429; a 503 with Retry-After; a receipt's retryAfter), ever
    dispatch_bucket_s: int  # the span of each count in ``dispatched_per_bucket``
    dispatched_per_bucket: tuple[int, ...]  # jobs claimed per span of the last minutes, oldest first


@dataclass(frozen=True)
class SharedKeyState:
    """A throttle key's bucket in one shared limit the worker names (``[limits.NAME]``)."""

    limit: str
    tokens: float | None  # None = the limit has no rate
    paused: bool  # an operator paused the key in the limit (POST /limits/{name}/pause)
    paused_s: float  # the bucket stays paused this long after a Retry-After any worker met


@dataclass(frozen=True)
class ThrottleKeyState:
    """One throttle key with jobs waiting, as ``GET /workers/{name}/keys`` shows it."""

    key: str  # "" for the jobs without a throttle key
    ready_ms: int | None  # when it can next be served (Redis's clock); None = paused in a shared limit
    waiting: int
    running: int
    tokens: float | None  # None = the worker has no rate of its own
    paused_s: float  # it stays paused this long after a Retry-After (0 = not paused)
    limits: tuple[SharedKeyState, ...] = ()  # its bucket in each shared limit the worker names

    @property
    def held_s(self) -> float:
        """How long back-pressure holds it: its own bucket's or a shared limit's, the longest."""
        return max((self.paused_s, *(limit.paused_s for limit in self.limits)))


@dataclass(frozen=True)
class ThrottleKeys:
    now_ms: int
    waiting_keys: int  # every key with jobs waiting
    keys: list[ThrottleKeyState]  # those looked at: paused first (in a limit, then longest), then the busiest


@dataclass(frozen=True)
class Receipt:
    """The answer to one attempt: from the worker's HTTP response or a posted receipt."""

    suffix: str
    attempt: int
    outcome: str  # "success" | "failure" | "permanent" | "unsent" (never sent: see lua/settle.lua)
    error: str = ""
    result_json: str = ""
    retry_after_ms: int = -1
    seq: int = 0  # of the job it answers; 0 = not checked
    status: int = 0  # the worker's HTTP status, for the job's history; 0 = none (no answer, a posted receipt)
    # What the downstream told the worker (lua/report_cost.lua): the call's actual cost, and
    # the downstream's own level of the key's bucket; None = not reported. Not in the digest:
    # applied once per attempt whatever the receipt.
    actual_cost: float | None = None
    available: float | None = None
    bucket_size: float | None = None  # the downstream bucket's, which ``available`` is of

    @property
    def digest(self) -> str:
        text = "\x00".join((self.outcome, self.error, self.result_json, str(self.retry_after_ms)))
        return hashlib.sha1(text.encode()).hexdigest()


ACCEPTED = frozenset({"succeeded", "retrying", "dead"})


class ReapedAttempt(NamedTuple):
    """An attempt whose lease ran out: what became of its job (retrying | dead)."""

    job_id: str
    attempt: int
    outcome: str


class Reaped(NamedTuple):
    reaped: int  # leases looked at
    wait_ms: int  # until the next lease ends; -1 = none running
    ended: tuple[ReapedAttempt, ...] = ()


@dataclass(frozen=True)
class JobPage:
    """One page of a listing (``GET /jobs``): its jobs, the cursor of the next page (None:
    this is the last), and the worker's jobs per state."""

    jobs: list[Job]
    next_cursor: str | None
    counts: dict[str, int]


@dataclass(frozen=True)
class BulkSlice:
    """What one slice of a bulk retry or delete did: how many jobs it changed, and why it
    left the others (job id -> 'missing' or the state the job is in)."""

    changed: int
    looked_at: int
    skipped: dict[str, str]
    wake: bool = False


@dataclass(frozen=True)
class LastJob:
    id: str
    state: str  # a job state, or "purged" once its retention has passed
    run_at_ms: int | None


@dataclass(frozen=True)
class Schedule:
    id: str
    worker: str
    cron: str
    timezone: str
    args_json: str
    catch_up: bool
    max_attempts: int
    timeout_ms: int | None  # None = the worker's live timeout when the job is claimed
    paused: bool
    next_fire_ms: int
    last_fire_ms: int | None
    created_ms: int
    updated_ms: int
    last_jobs: tuple[LastJob, ...] = ()
    throttle_key: str | None = None
    cost: float = 1.0

    @classmethod
    def from_fields(cls, worker: WorkerConfig, suffix: str, fields: RedisHash,
                    last_jobs: Sequence[LastJob] = ()) -> Schedule:
        f = {text(k): text(v) for k, v in fields.items()}
        return cls(
            id=job_id(worker.name, suffix), worker=worker.name, cron=f["cron"], timezone=f["timezone"],
            args_json=f.get("args", "{}"), catch_up=f.get("catch_up") == "1",
            max_attempts=int_or_none(f.get("max_attempts")) or worker.max_attempts,
            timeout_ms=int_or_none(f.get("timeout_ms")),
            throttle_key=f.get("throttle_key") or None, cost=float(f["cost"]) if f.get("cost") else 1.0,
            paused=f.get("paused") == "1", next_fire_ms=int(float(f["next_fire_ms"])),
            last_fire_ms=int_or_none(f.get("last_fire_ms")),
            created_ms=int(float(f["created_ms"])), updated_ms=int(float(f["updated_ms"])),
            last_jobs=tuple(last_jobs),
        )

    def next_run_times(self, count: int = NEXT_RUN_TIMES) -> list[int]:
        if self.paused:
            return []
        return [self.next_fire_ms, *cron_spec(self.cron, self.timezone).fires_after(self.next_fire_ms, count - 1)]


@dataclass(frozen=True)
class TickRound:
    """What one ``Schedules.tick`` call did for a worker."""

    now_ms: int
    wait_ms: int  # until the earliest next fire time; 0 = look again now; -1 = no schedule
    fired: int  # jobs created
    refused: int  # schedules another coordinator (or an update) got to first
    wake: bool  # a new job is due before the queue's previous head
    early: bool = False  # the plan's due_ms had not come: nothing was written


@dataclass(frozen=True)
class TickPlan:
    """Due schedules and their computed ticks, to be fired at ``due_ms`` by ``Schedules.fire``."""

    worker: WorkerConfig
    now_ms: int
    due_ms: int
    wait_ms: int  # until the earliest next fire time; -1 = no schedule
    count: int  # schedules in the plan
    keys: list[str]
    args: list[ScriptArg]
