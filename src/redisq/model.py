"""Jobs, their states, and the parsing of enqueue requests.

States::

    scheduled --claim--> running --success--> succeeded
        ^                   |  \\--failure, last attempt or permanent--> dead
        |                   +--failure / timed out--> retrying --due--> running ...
    cancel: scheduled | running | retrying --> cancelled
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any

from .config import WorkerConfig
from .errors import ValidationError, shown
from .inputs import MAX_AMOUNT, TIMEOUT_S, NumberRule
from .job_fields import decode_job_hash, history_entry
from .json_text import compact_json
from .keys import CALLER_SUFFIX_RE, THROTTLE_KEY_MAX_CHARS, job_id
from .types import RedisHash


class JobState(str, Enum):  # noqa: UP042 (a StrEnum would change str() of a member, which callers see)
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


@lru_cache(maxsize=4096)  # the jobs of one batch share their createdAt and runAt
def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ms(ms: int | None) -> str | None:
    return None if ms is None else _iso(ms)


def _json_or_null(text: str | None) -> str:
    return "null" if text is None else json.dumps(text)


def json_number(value: float) -> int | float:
    """12.0 -> 12: a whole number of tokens shows without ".0" in JSON."""
    return int(value) if float(value).is_integer() else value


def _number_json(value: float) -> str:
    number = json_number(value)
    return str(number) if isinstance(number, int) else json.dumps(number)


@dataclass(frozen=True)
class Attempt:
    """One attempt in a job's history (kept by the scripts that end attempts, the last 25;
    a running attempt has no end yet)."""

    attempt: int
    started_ms: int | None
    ended_ms: int | None
    outcome: str  # succeeded | failed | timed out | throttled | unsent | running
    status: int | None = None  # the worker's HTTP status, when it answered
    error: str | None = None
    coordinator: str = ""  # the coordinator that sent it (host:pid)

    def to_json(self) -> dict[str, Any]:
        duration_ms = None
        if self.started_ms is not None and self.ended_ms is not None:
            duration_ms = self.ended_ms - self.started_ms
        return {"attempt": self.attempt, "startedAt": iso_from_ms(self.started_ms),
                "endedAt": iso_from_ms(self.ended_ms), "durationMs": duration_ms, "outcome": self.outcome,
                "status": self.status, "error": self.error, "coordinator": self.coordinator}


def history_of(fields: Mapping[str, str], entries: Sequence[str | bytes]) -> tuple[Attempt, ...]:
    """A job's attempts: the entries of its history list (``WorkerKeys.history``), then the
    last one from its hash when it succeeded (the scripts keep no entry for a success) or
    is running."""
    attempts = []
    for text in entries:
        entry: dict[str, Any] = history_entry(json.loads(text))
        started = entry.get("started_ms")
        attempts.append(Attempt(
            attempt=int(entry["attempt"]), started_ms=None if started is None else int(started),
            ended_ms=int(entry["ended_ms"]), outcome=str(entry["outcome"]),
            status=int(entry["status"]) if entry.get("status") else None, error=entry.get("error"),
            coordinator=str(entry.get("sent_by") or "")))
    if fields.get("state") == "succeeded" and fields.get("started_ms") and fields.get("finished_ms"):
        attempts.append(Attempt(attempt=int(fields.get("attempts", 0)), started_ms=int(float(fields["started_ms"])),
                                ended_ms=int(float(fields["finished_ms"])), outcome="succeeded",
                                status=int(fields["status"]) if fields.get("status") else None,
                                coordinator=fields.get("sent_by", "")))
    if fields.get("state") == "running" and fields.get("started_ms"):
        attempts.append(Attempt(attempt=int(fields.get("attempts", 0)), started_ms=int(float(fields["started_ms"])),
                                ended_ms=None, outcome="running", coordinator=fields.get("sent_by", "")))
    return tuple(attempts)


# The job fields a listing reads (all but the history): what Job.from_fields uses (long
# names: the listing asks for their stored names, job_fields.stored).
LISTED_FIELDS = ("state", "args", "run_at_ms", "attempts", "max_attempts", "timeout_ms", "created_ms", "last_error",
                 "result", "finished_ms", "throttle_key", "cost")


@dataclass(frozen=True)
class Job:
    id: str
    worker: str
    state: JobState
    args_json: str
    run_at_ms: int
    attempts: int
    max_attempts: int
    timeout_ms: int | None  # None = the worker's live timeout
    created_ms: int
    last_error: str | None = None
    result_json: str | None = None
    finished_ms: int | None = None
    throttle_key: str | None = None
    cost: float = 1.0
    history: tuple[Attempt, ...] | None = None  # None = not read (a listing's jobs)

    @classmethod
    def from_fields(cls, worker: str, suffix: str, fields: RedisHash,
                    history: Sequence[str | bytes] | None = None) -> Job:
        """The job of a hash; with its ``history`` list's entries (None: not read, as in a
        listing: the job then has no ``history``)."""
        f = decode_job_hash(fields)  # by the long names (job_fields.py)
        return cls(
            id=job_id(worker, suffix),
            worker=worker,
            state=JobState(f["state"]),
            args_json=f.get("args", "null"),
            run_at_ms=int(float(f["run_at_ms"])),
            attempts=int(f.get("attempts", 0)),
            max_attempts=int(f["max_attempts"]),
            timeout_ms=int(f["timeout_ms"]) if "timeout_ms" in f else None,
            created_ms=int(float(f["created_ms"])),
            last_error=f.get("last_error"),
            result_json=f.get("result"),
            finished_ms=int(float(f["finished_ms"])) if "finished_ms" in f else None,
            throttle_key=f.get("throttle_key"),
            cost=float(f.get("cost", 1)),
            history=None if history is None else history_of(f, history),
        )

    def json_text(self) -> str:
        """``to_json()`` as JSON text, with args and result spliced in as stored (no re-parse)."""
        return (
            f'{{"id":"{self.id}","worker":"{self.worker}","state":"{self.state.value}","args":{self.args_json},'
            f'"runAt":"{_iso(self.run_at_ms)}","attempts":{self.attempts},"maxAttempts":{self.max_attempts},'
            f'"lastError":{_json_or_null(self.last_error)},"result":{self.result_json or "null"},'
            f'"createdAt":"{_iso(self.created_ms)}","finishedAt":{_json_or_null(iso_from_ms(self.finished_ms))},'
            f'"throttleKey":{_json_or_null(self.throttle_key)},"cost":{_number_json(self.cost)}'
            + ("}" if self.history is None else f',"history":{self.history_json_text()}}}')
        )

    def history_json_text(self) -> str:
        if not self.history:
            return "[]"
        return json.dumps([a.to_json() for a in self.history], separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "worker": self.worker,
            "state": self.state.value,
            "args": json.loads(self.args_json),
            "runAt": iso_from_ms(self.run_at_ms),
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "lastError": self.last_error,
            "result": json.loads(self.result_json) if self.result_json else None,
            "createdAt": iso_from_ms(self.created_ms),
            "finishedAt": iso_from_ms(self.finished_ms),
            "throttleKey": self.throttle_key,
            "cost": json_number(self.cost),
            **({} if self.history is None else {"history": [a.to_json() for a in self.history]}),
        }


@dataclass(frozen=True)
class EnqueueRequest:
    """A validated ``POST /job`` body."""

    worker: str
    suffix: str
    args_json: str
    run_at_ms: int | None  # absolute (unix ms); None = now + delay_ms on the server's clock
    delay_ms: int
    max_attempts: int
    timeout_ms: int | None  # None = the worker's live timeout (limits.py)
    throttle_key: str = ""  # "" = none: the job shares the worker's key ""
    cost: float = 1.0  # tokens the job takes from its buckets

    @property
    def job_id(self) -> str:
        return job_id(self.worker, self.suffix)


ENQUEUE_FIELDS = ("worker", "args", "runAt", "delay", "id", "maxAttempts", "timeout", "throttleKey", "cost")
MAX_UNIX_S = 253402300799.999  # 9999-12-31T23:59:59.999Z
MAX_DELAY_S = 100 * 365 * 86400
MAX_COST = 1e9
DELAY_S = NumberRule(0, MAX_DELAY_S, unit="seconds")
MAX_ATTEMPTS = NumberRule(1, MAX_AMOUNT, whole=True)
COST = NumberRule(0, MAX_COST, above_low=True, unit="tokens")
AM_PM_FORMATS = ("%Y-%m-%d %I:%M:%S %p", "%Y-%m-%d %I:%M %p", "%Y/%m/%d %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p")


# built once: json.dumps with options builds one per call


def new_job_suffix() -> str:
    """A generated job id: 80 random bits in 14 characters of ``A-Z a-z 0-9 - _``. (As hex
    they took 20, in the job's key, its queue entry and its events: used_memory per waiting
    job 418 -> 393 bytes, per finished one 566 -> 542, tests/faults/test_maxmemory.py.)"""
    return base64.urlsafe_b64encode(os.urandom(10)).rstrip(b"=").decode()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unix_ms(seconds: float) -> int:
    # compared before any conversion: an integer too long for a float is refused, not overflowed
    if not (isinstance(seconds, int) or math.isfinite(seconds)) or not 0 <= seconds <= MAX_UNIX_S:
        raise ValueError(f"must be a time from 1970 to 9999 (0 to {MAX_UNIX_S} unix seconds), got {shown(seconds)}")
    return int(round(seconds * 1000))


def parse_run_at(value: Any) -> int:
    """A ``runAt`` value -> unix ms. ISO 8601 (UTC when it has no offset), ``2020-01-01 10:00:00 AM``
    style (UTC), or unix seconds as a number or a numeric string."""
    if _is_number(value):
        return _unix_ms(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be an ISO 8601 time, a '2020-01-01 10:00:00 AM' style time, or unix seconds")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return _unix_ms(seconds)
    moment: datetime | None = None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        for fmt in AM_PM_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if moment is None:
        raise ValueError(f"{value!r} is not an ISO 8601 time, a '2020-01-01 10:00:00 AM' style time, or unix seconds")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        seconds = moment.timestamp()
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"{value!r} is out of range") from None
    return _unix_ms(seconds)


def parse_enqueue(body: Any, workers: Mapping[str, WorkerConfig], index: int | None = None) -> EnqueueRequest:
    """Validate one enqueue body; raise ValidationError naming the field (and index)."""

    def invalid(field: str | None, message: str) -> ValidationError:
        where = f"jobs[{index}]." if index is not None else ""
        text = f"{where}{field}: {message}" if field else f"{where.rstrip('.') or 'body'}: {message}"
        return ValidationError(text, field=field, index=index)

    def number(field: str, rule: NumberRule) -> float:
        return rule.read(body[field], field, index)

    if not isinstance(body, dict):
        raise invalid(None, "must be a JSON object")
    unknown = [k for k in body if k not in ENQUEUE_FIELDS]
    if unknown:
        raise invalid(unknown[0], f"unknown field (expected {', '.join(ENQUEUE_FIELDS)})")
    worker_name = body.get("worker")
    if not isinstance(worker_name, str) or not worker_name:
        raise invalid("worker", "is required and must be a worker name")
    worker = workers.get(worker_name)
    if worker is None:
        known = ", ".join(sorted(workers)) or "none are configured"
        raise invalid("worker", f"unknown worker {worker_name!r} (known: {known})")

    if body.get("runAt") is not None and body.get("delay") is not None:
        raise invalid("runAt", "give either runAt or delay, not both")
    run_at_ms: int | None = None
    delay_ms = 0
    if body.get("runAt") is not None:
        try:
            run_at_ms = parse_run_at(body["runAt"])
        except ValueError as e:
            raise invalid("runAt", str(e)) from None
    if body.get("delay") is not None:
        delay_ms = int(round(number("delay", DELAY_S) * 1000))

    suffix = body.get("id")
    if suffix is None:
        suffix = new_job_suffix()
    elif not isinstance(suffix, str) or not CALLER_SUFFIX_RE.match(suffix):
        raise invalid("id", "must be 1 to 200 characters of A-Z a-z 0-9 . _ ~ : - (not @, which marks the jobs "
                      "of schedule ticks)")

    max_attempts = worker.max_attempts if "maxAttempts" not in body else int(number("maxAttempts", MAX_ATTEMPTS))
    timeout = None if body.get("timeout") is None else number("timeout", TIMEOUT_S)

    throttle_key = body.get("throttleKey")
    if throttle_key is None:
        throttle_key = ""
    elif not isinstance(throttle_key, str) or not 1 <= len(throttle_key) <= THROTTLE_KEY_MAX_CHARS \
            or not throttle_key.isprintable():
        raise invalid("throttleKey",
                      f"must be 1 to {THROTTLE_KEY_MAX_CHARS} printable characters, got {shown(throttle_key)}")
    cost = number("cost", COST) if "cost" in body else 1.0

    args = body.get("args", {})
    try:
        args_json = compact_json(args)
    except ValueError:
        raise invalid("args", "must be JSON (no NaN or Infinity)") from None
    return EnqueueRequest(
        worker=worker_name,
        suffix=suffix,
        args_json=args_json,
        run_at_ms=run_at_ms,
        delay_ms=delay_ms,
        max_attempts=max_attempts,
        timeout_ms=None if timeout is None else max(1, int(round(timeout * 1000))),
        throttle_key=throttle_key,
        cost=cost,
    )
