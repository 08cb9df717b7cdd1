"""One worker's listings and an operator's fixes: a page of its jobs in one state (from the
state's index, ``lua/list.lua``; scheduled jobs from their queues, ``lua/list_scheduled.lua``),
and retrying or deleting finished jobs in slices (``lua/retry.lua``, ``lua/delete.lua``), by
id or from the head of a state's index."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence

from ..errors import ValidationError
from ..job_fields import stored
from ..keys import job_id, split_job_id
from ..model import LISTED_FIELDS, Job, JobState
from ..types import ScriptArg, ScriptReply
from .base import WorkerBase
from .records import BulkSlice, JobPage, integer, replies, text

MAX_PAGE = 1000
# Newest first for the finished states (their index is scored by finished_ms), soonest
# first for the others (run_at_ms; running: the lease deadline, or the attempt's start).
NEWEST_FIRST = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
RETRYABLE = (JobState.DEAD, JobState.CANCELLED)
DELETABLE = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)
COUNTED = ("queued", "retrying", "succeeded", "dead", "cancelled", "running")
# A scheduled listing skips the entries of its zsets that are not scheduled jobs (retrying
# jobs wait in the same queues): this many at most per zset and script call, and this many
# calls at most for one page.
SKIPPED_PER_CALL = 1000
SCHEDULED_CALLS_PER_PAGE = 10


def listing_counts(out: list[ScriptReply]) -> dict[str, int]:
    """The worker's jobs per state, from the first six values of a listing's answer."""
    stats = dict(zip(COUNTED, (integer(v) for v in out[:6]), strict=True))
    return {"scheduled": stats["queued"] - stats["retrying"], "running": stats["running"],
            "retrying": stats["retrying"], "succeeded": stats["succeeded"], "dead": stats["dead"],
            "cancelled": stats["cancelled"]}


def encode_cursor(worker: str, state: JobState, throttle_key: str, score: str, member: str, source: str = "") -> str:
    """Where the next page starts: after ``member`` (at ``score``) in this listing's index
    (a scheduled listing's: in its ``source``, ``q`` the queue or ``i`` the index)."""
    place = [worker, state.value, throttle_key, score, member, *([source] if source else [])]
    text_form = json.dumps(place, separators=(",", ":"))
    return base64.urlsafe_b64encode(text_form.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, worker: str, state: JobState, throttle_key: str) -> tuple[str, str, str]:
    """(score, member, source) of a cursor from ``encode_cursor``; 422 for one that is not,
    or that belongs to another listing."""
    not_one = ValidationError("cursor: not a cursor of GET /jobs (give the 'next' of the previous page)",
                              field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        listed_worker, listed_state, listed_key, score, member, *rest = json.loads(raw)
        if not math.isfinite(float(score)):
            raise ValueError(score)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise not_one from None
    if (listed_worker, listed_state, listed_key) != (worker, state.value, throttle_key) \
            or not isinstance(member, str) or not member:
        raise ValidationError("cursor: it belongs to another listing (another worker, state or throttleKey)",
                              field="cursor")
    if state is not JobState.SCHEDULED:
        if rest:
            raise not_one
        return str(score), member, ""
    # a scheduled listing's says which zset it is in ('i', the index, only in the worker's listing)
    if rest not in (["q"], ["i"]) or (rest == ["i"] and throttle_key):
        raise not_one
    return str(score), member, rest[0]


class Listings(WorkerBase):
    async def list_jobs(self, state: JobState, throttle_key: str = "", limit: int = 100,
                        cursor: str | None = None) -> JobPage:
        """One page of the worker's jobs in ``state`` (of one throttle key's, when given),
        in O(log n + limit) whatever the number of jobs (scheduled: plus the retrying jobs
        passed over); the page's ``next_cursor`` leads on."""
        if state is JobState.SCHEDULED:
            return await self._list_scheduled(throttle_key, limit, cursor)
        k = self.keys
        if state is JobState.RUNNING and not throttle_key:
            index = k.running  # the running zset: suffix -> lease deadline
        else:
            index = k.state_index(state.value, throttle_key)
        score, member = ("", "") if cursor is None else decode_cursor(cursor, self.name, state, throttle_key)[:2]
        order = "desc" if state in NEWEST_FIRST else "asc"
        out = replies(await self.run("list", [index, k.stats, k.running],
                                     [k.job_prefix, order, limit, member, score, *stored(*LISTED_FIELDS)]))
        more = bool(integer(out[6]))
        jobs, last = self._listed_jobs(out, 7)
        next_cursor = None
        if more and last is not None:
            next_cursor = encode_cursor(self.name, state, throttle_key, last[0], last[1])
        return JobPage(jobs, next_cursor, listing_counts(out))

    async def _list_scheduled(self, throttle_key: str, limit: int, cursor: str | None) -> JobPage:
        """Scheduled jobs are listed from their queues (``lua/list_scheduled.lua``): a call
        that had to skip many entries (retrying jobs share the queues) may answer fewer jobs
        than asked with a cursor past them, so this asks again, up to
        ``SCHEDULED_CALLS_PER_PAGE`` calls, each looking at ``limit + SKIPPED_PER_CALL + 1``
        entries per zset at most; a page can still come back short, with a ``next``."""
        k = self.keys
        source, member, score = "", "", ""
        if cursor is not None:
            score, member, source = decode_cursor(cursor, self.name, JobState.SCHEDULED, throttle_key)
        jobs: list[Job] = []
        for _ in range(SCHEDULED_CALLS_PER_PAGE):
            most = limit - len(jobs)
            out = replies(await self.run("list_scheduled", [k.queue(throttle_key), k.state_index("scheduled"),
                                                            k.stats, k.running],
                                         [k.job_prefix, "0" if throttle_key else "1", most,
                                          most + SKIPPED_PER_CALL + 1, source, member, score,
                                          *stored(*LISTED_FIELDS)]))
            jobs += self._listed_jobs(out, 10)[0]
            more = bool(integer(out[6]))
            source, member, score = text(out[7]), text(out[8]), text(out[9])
            if not more or len(jobs) >= limit:
                break
        next_cursor = encode_cursor(self.name, JobState.SCHEDULED, throttle_key, score, member, source) \
            if more else None
        return JobPage(jobs, next_cursor, listing_counts(out))

    def _listed_jobs(self, out: list[ScriptReply], first: int) -> tuple[list[Job], tuple[str, str] | None]:
        """The jobs of a listing's answer from ``out[first]`` on (suffix, score, the listed
        fields' values per job), and the last one's (score, suffix)."""
        per_job = 2 + len(LISTED_FIELDS)
        jobs: list[Job] = []
        last: tuple[str, str] | None = None
        for i in range(first, len(out), per_job):
            suffix, job_score = text(out[i]), text(out[i + 1])
            fields = {name: text(value) for name, value in zip(LISTED_FIELDS, out[i + 2:i + per_job], strict=True)
                      if value is not None}
            jobs.append(Job.from_fields(self.name, suffix, fields))
            last = (job_score, suffix)
        return jobs, last

    def _suffixes(self, ids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The suffixes of ``ids`` that name this worker's jobs, and why the others are left."""
        suffixes, skipped = [], {}
        for id_text in ids:
            parts = split_job_id(id_text)
            if parts is None or parts[0] != self.name:
                skipped[id_text] = f"not a job of worker {self.name!r}"
            else:
                suffixes.append(parts[1])
        return suffixes, skipped

    def _bulk_keys(self, operation: str) -> list[str]:
        k = self.keys
        return [*k.queue_keys, k.finished, k.operation(operation or "-")]

    def _bulk_slice(self, out: list[ScriptReply], changed_word: str, skipped: dict[str, str]) -> BulkSlice:
        changed = 0
        looked_at = 0
        for i in range(2, len(out), 2):
            suffix, outcome = text(out[i]), text(out[i + 1])
            looked_at += 1
            if outcome == changed_word:
                changed += 1
            else:
                skipped[job_id(self.name, suffix)] = "not found" if outcome == "missing" else outcome
        return BulkSlice(changed, looked_at, skipped)

    async def retry_jobs(self, states: Sequence[JobState] = RETRYABLE, ids: Sequence[str] | None = None,
                         most: int = 0, run_at_ms: int | None = None, delay_ms: int = 0, args_json: str = "",
                         operation: str = "") -> BulkSlice:
        """Run finished jobs again: those of ``ids``, or the first ``most`` of the first
        state's index. ``operation`` (its suffix) counts them in its progress hash."""
        suffixes, skipped = self._suffixes(ids or ())
        mode: list[ScriptArg] = ["ids", *suffixes] if ids is not None else ["index", most]
        k = self.keys
        out = replies(await self.run("retry", self._bulk_keys(operation), [
            *k.queue_args, k.job_prefix, ",".join(s.value for s in states),
            "" if run_at_ms is None else run_at_ms, delay_ms, args_json, operation, *mode]))
        result = self._bulk_slice(out, "retried", skipped)
        wake = bool(integer(out[1]))
        if wake:
            await self.notify.enqueued({self.name})
        return BulkSlice(result.changed, result.looked_at, result.skipped, wake)

    async def delete_jobs(self, states: Sequence[JobState] = DELETABLE, ids: Sequence[str] | None = None,
                          most: int = 0, operation: str = "") -> BulkSlice:
        """Delete finished jobs: those of ``ids``, or the first ``most`` of the first state's index."""
        suffixes, skipped = self._suffixes(ids or ())
        mode: list[ScriptArg] = ["ids", *suffixes] if ids is not None else ["index", most]
        k = self.keys
        out = replies(await self.run("delete", self._bulk_keys(operation), [
            *k.queue_args, k.job_prefix, ",".join(s.value for s in states), operation, *mode]))
        return self._bulk_slice(out, "deleted", skipped)

    async def count_in_state(self, state: JobState) -> int:
        """How many of the worker's jobs are in ``state`` now (its index's size)."""
        if state is JobState.SCHEDULED:  # no index holds them all: the stats count them
            stats = await self.read(lambda: self.redis.hmget(self.keys.stats, ["queued", "retrying"]))
            return int(stats[0] or 0) - int(stats[1] or 0)
        index = self.keys.running if state is JobState.RUNNING else self.keys.state_index(state.value)
        count: int = await self.read(lambda: self.redis.zcard(index))
        return count
