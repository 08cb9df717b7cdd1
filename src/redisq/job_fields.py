"""The fields of a job's hash (``redisq:{worker}:job:<suffix>``): the one place they are named.

Redis keeps a small hash as one listpack, which stores every field's name beside its
value, once per job. So the stored names are short (``s`` for ``state``), and the code
on both sides says the long ones: the Lua scripts through the table ``F`` in
``lua/includes/fields.lua`` (``F.state``), which ``tests/test_job_fields.py`` holds
to ``JOB_FIELDS``, and Python through ``decode_job_hash``, which turns a hash as read
into long names. Short names cut a job's hash from 232 to 179 bytes waiting, 328 to 232
running and 440 to 311 finished (``python -m bench.footprint``, Redis 7.0, 50,000 jobs
with args like ``{"n":12345}``, half of them with a throttle key).

Hashes that an earlier version wrote under the long names are renamed when a coordinator
starts, before it dispatches: ``migrate.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .types import RedisHash

# long name (what the code says) -> stored name
JOB_FIELDS: Mapping[str, str] = {
    "state": "s",                # scheduled | running | retrying | succeeded | dead | cancelled
    "args": "a",                 # JSON text
    "run_at_ms": "r",            # when it is (or was last) due
    "attempts": "n",             # attempts begun
    "max_attempts": "m",
    "created_ms": "c",
    "seq": "q",                  # its enqueue sequence (tells it from a later job with its id)
    "timeout_ms": "t",           # absent: the worker's live timeout
    "throttle_key": "k",         # absent: none
    "cost": "w",                 # absent: 1
    "schedule": "cs",            # the cron schedule whose tick made it
    "lease_deadline_ms": "ld",   # the running attempt's lease
    "lease_timeout_ms": "lt",
    "started_ms": "b",           # the running (or last) attempt's start
    "sent_by": "by",             # the coordinator that claimed it (host:pid)
    "finished_ms": "f",
    "settled_attempt": "sa",     # the attempt whose receipt was taken
    "receipt_digest": "rd",      # that receipt's digest (a repeat of it is a duplicate)
    "result": "o",               # the worker's JSON answer, when it kept one
    "status": "h",               # the HTTP status of the last answer
    "last_error": "e",
    "throttled": "th",           # back-pressure answers (429 with Retry-After), not counted as attempts
    "unsent": "u",               # times it went back to its queue unsent
    "cost_reported": "cr",       # the attempt whose actual cost was applied
}
# A job under a shared limit also keeps, per limit NAME, what its claim took from the key's
# bucket: field ``TAKEN_PREFIX + NAME`` (lua/claim.lua, lua/report_cost.lua).
TAKEN_PREFIX = "x:"

# The keys of an attempt's entry in a job's history list (``redisq:{worker}:history:<suffix>``,
# a JSON text per attempt; ``H`` in lua/includes/fields.lua). An earlier version wrote the
# long names (and ``by``, as now); ``history_entry`` reads either.
HISTORY_FIELDS: Mapping[str, str] = {
    "attempt": "n",
    "started_ms": "b",
    "ended_ms": "e",
    "outcome": "o",              # failed | timed out | throttled | unsent
    "sent_by": "by",             # the coordinator that sent it (host:pid)
    "status": "h",               # the worker's HTTP status, when it answered
    "error": "x",
}

LONG_NAMES: Mapping[str, str] = {short: long for long, short in JOB_FIELDS.items()}
HISTORY_LONG_NAMES: Mapping[str, str] = {short: long for long, short in HISTORY_FIELDS.items()}
# What the earlier layout (long names) called TAKEN_PREFIX: migrate.py renames it too.
OLD_TAKEN_PREFIX = "taken:"


def stored(*names: str) -> list[str]:
    """The stored names of long ``names`` (for an HMGET or a listing's fields)."""
    return [JOB_FIELDS[name] for name in names]


def decode_job_hash(fields: RedisHash) -> dict[str, str]:
    """A job hash as read (bytes or text, stored names) -> {long name: text}. A field of no
    known name (a limit's ``x:NAME``) keeps its stored name."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        name = key.decode() if isinstance(key, bytes) else key
        out[LONG_NAMES.get(name, name)] = value.decode() if isinstance(value, bytes) else value
    return out


def stored_job_fields(**values: str | int | float) -> dict[str, str | int | float]:
    """A job hash by long names -> the same by stored names (to write one as the scripts do)."""
    return {JOB_FIELDS[name]: value for name, value in values.items()}


def history_entry(decoded: Mapping[str, object]) -> dict[str, object]:
    """An attempt's history entry as decoded from its JSON text -> {long name: value}, from
    either layout (short names, or the earlier long ones)."""
    return {HISTORY_LONG_NAMES.get(key, key): value for key, value in decoded.items()}
