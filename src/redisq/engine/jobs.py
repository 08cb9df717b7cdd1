"""One worker's jobs: enqueue, claim, settle, hold back, reap, purge, cancel, get, receipts
and heartbeats. Each state change is one script call (``lua/``), atomic and one round
trip, correct with any number of coordinators on the same Redis."""

from __future__ import annotations

import dataclasses
import json
import random
import secrets
from collections.abc import Sequence
from functools import partial

from ..connection import is_outage
from ..errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from ..keys import job_id
from ..limits import Limits, cost_refusal_text, number_text
from ..model import EnqueueRequest, Job, JobState
from ..types import ScriptArg, ScriptReply
from .base import WorkerBase
from .records import Claim, ClaimedJob, HoldBack, Reaped, ReapedAttempt, Receipt, fields_of, integer, replies, text

ENQUEUE_CHUNK = 1000
# How long a tagged claim keeps its answer for a repeat (``keys.WorkerKeys.reply``): a
# claim loop repeats its claim until it is answered, at most a backoff (5 s) after Redis
# answers again, and then deletes the reply with its next claim.
CLAIM_REPLY_TTL_MS = 60_000


def call_tag() -> str:
    """A new tag for a claim that will be repeated until it is answered (``Jobs.claim``)."""
    return secrets.token_hex(8)


def _number(value: ScriptReply) -> float | None:
    value_text = text(value)
    return float(value_text) if value_text else None


def _per_limit(names: Sequence[str], value: ScriptReply) -> tuple[tuple[str, float], ...]:
    """A comma-separated list of numbers, one per shared limit in ``names`` ('' = none), as
    (limit, number) of the limits that have one."""
    return tuple((name, float(part)) for name, part in zip(names, text(value).split(","), strict=False) if part)


class Jobs(WorkerBase):
    def _policy_args(self) -> list[ScriptArg]:
        """ARGV of the scripts that end attempts (lua/settle.lua, lua/reap.lua)."""
        b = self.config.backoff
        return [
            *self.keys.queue_args, self.keys.job_prefix,
            round(b.initial_s * 1000), b.factor, round(b.max_s * 1000), 1 if b.jitter else 0,
            random.getrandbits(31),
        ]

    def _attempt_keys(self) -> list[str]:
        """KEYS of the scripts that end attempts (lua/settle.lua, lua/reap.lua)."""
        k = self.keys
        return [*k.queue_keys, k.running, k.bucket, k.buckets]

    # -- enqueue ---------------------------------------------------------------------
    async def enqueue(self, requests: Sequence[EnqueueRequest], positions: Sequence[int] | None = None,
                      batch_size: int | None = None) -> tuple[list[tuple[Job, bool]], bool]:
        """Enqueue validated requests of this worker, ``ENQUEUE_CHUNK`` per script call;
        returns ``[(job, created)]`` in order, and whether a new job is due before the
        queue's head (the dispatchers should look). ``positions`` are the requests' indexes
        in the caller's batch of ``batch_size``, for error messages."""
        positions = list(range(len(requests))) if positions is None else positions
        batch_size = len(requests) if batch_size is None else batch_size
        await self._refuse_costs_above_shared_bursts(requests, positions, batch_size)
        results: list[tuple[Job, bool]] = []
        wake = False
        for start in range(0, len(requests), ENQUEUE_CHUNK):
            chunk = requests[start:start + ENQUEUE_CHUNK]
            chunk_results, chunk_wake = await self._enqueue_chunk(chunk, positions[start:start + ENQUEUE_CHUNK],
                                                                  batch_size)
            results += chunk_results
            wake = wake or chunk_wake
        if wake:
            await self.notify.enqueued({self.name})
        return results, wake

    async def _refuse_costs_above_shared_bursts(self, requests: Sequence[EnqueueRequest], positions: Sequence[int],
                                                batch_size: int) -> None:
        """A job whose cost is above the burst of a shared limit its worker names could never
        run: refused before anything is written (the live limits read just before; the claim
        takes at most a burst's tokens of a job whose limit was lowered since)."""
        costly = [(i, r) for i, r in zip(positions, requests, strict=True) if r.cost > 1]
        if not costly or not self.shared_keys:
            return
        for keys in self.shared_keys:
            limits = Limits.from_fields(await self.read(partial(self.redis.hgetall, keys.limits)))
            for i, r in costly:
                refusal = limits.cost_refusal(r.cost)
                if refusal is not None:
                    where = f"jobs[{i}]." if batch_size > 1 else ""
                    raise ValidationError(f"{where}cost: {refusal} of limit {keys.name!r}, so it could never run",
                                          field="cost", index=i if batch_size > 1 else None)

    async def _enqueue_chunk(self, chunk: Sequence[EnqueueRequest], positions: Sequence[int],
                             batch_size: int) -> tuple[list[tuple[Job, bool]], bool]:
        args: list[ScriptArg] = list(self.keys.queue_args)
        job_keys = []
        for r in chunk:
            job_keys.append(self.keys.job(r.suffix))
            args += [r.suffix, r.args_json, "" if r.run_at_ms is None else r.run_at_ms, r.delay_ms, r.max_attempts,
                     "" if r.timeout_ms is None else r.timeout_ms, r.throttle_key, number_text(r.cost)]
        await self.ensure_limits()
        try:
            out = replies(await self.run("enqueue", [*self.keys.queue_keys, *job_keys], args))
        except UnavailableError as e:
            if not is_outage(e):
                raise
            raise UnavailableError(f"{e.message}; the jobs may or may not have been written: post them again with "
                                   "the same ids to know (a job that exists is answered with it, 200; a job posted "
                                   "without an id may then be created twice)") from e.__cause__
        if text(out[0]) == "cost":
            n = integer(out[1]) - 1
            i = positions[n]
            where = f"jobs[{i}]." if batch_size > 1 else ""
            refusal = cost_refusal_text(chunk[n].cost, text(out[2]), float(text(out[3])))
            raise ValidationError(f"{where}cost: {refusal} of worker {self.name!r}, so it could never run",
                                  field="cost", index=i if batch_size > 1 else None)
        now_ms = integer(out[0])
        results = []
        for r, entry in zip(chunk, out[2:], strict=True):
            if isinstance(entry, list):  # the job exists: answered as it is (rare: a repeated id)
                results.append((Job.from_fields(self.name, r.suffix, fields_of(entry), await self.history(r.suffix)),
                                False))
            else:
                results.append((Job(
                    id=r.job_id, worker=self.name, state=JobState.SCHEDULED, args_json=r.args_json,
                    run_at_ms=integer(entry), attempts=0, max_attempts=r.max_attempts, timeout_ms=r.timeout_ms,
                    created_ms=now_ms, throttle_key=r.throttle_key or None, cost=r.cost, history=(),
                ), True))
        return results, bool(integer(out[1]))

    # -- the dispatcher's side ---------------------------------------------------------
    async def claim(self, most: int, tag: str | None = None, answered_tag: str | None = None) -> Claim:
        """Claim up to ``most`` due jobs. With a ``tag``, the answer is kept for a repeat: a
        call whose answer was lost, repeated with the same tag (and ``most``), returns the
        same jobs instead of leaving them leased and unsent; ``answered_tag`` is the tag of
        the caller's previous claim, which was answered, whose reply is deleted. Without a
        tag nothing is kept (the caller never repeats a claim)."""
        k = self.keys
        await self.ensure_limits()
        reply = k.reply(tag or "")
        answered = reply if answered_tag is None else k.reply(answered_tag)
        out = replies(await self.run("claim", [*k.queue_keys, k.running, k.bucket, k.dispatched, k.buckets,
                                               reply, answered, *self.shared_limit_keys],
                                     [*k.queue_args, k.job_prefix, most, CLAIM_REPLY_TTL_MS if tag else 0,
                                      self.coordinator_id, self.name, *self.shared_limit_args]))
        names = [limit.name for limit in self.shared_keys]
        jobs = [
            ClaimedJob(self.name, text(out[i]), integer(out[i + 1]), integer(out[i + 2]), text(out[i + 3]),
                       integer(out[i + 4]), throttle_key=text(out[i + 5]), cost=float(text(out[i + 6])),
                       key_slack_ms=_number(out[i + 7]), run_at_ms=integer(out[i + 8]),
                       shared_key_slack_ms=_per_limit(names, out[i + 9]))
            for i in range(5, len(out), 10)
        ]
        return Claim(jobs, integer(out[0]), bool(integer(out[1])), bool(integer(out[2])), _number(out[3]),
                     _per_limit(names, out[4]))

    async def settle(self, receipts: Sequence[Receipt]) -> list[str]:
        """End attempts; one word per receipt (see ``lua/settle.lua``). What a receipt reports
        of the downstream (its cost, its level) is applied to the buckets first."""
        for r in receipts:
            if r.actual_cost is not None or r.available is not None:  # (a bucket_size alone says nothing)
                await self.report_cost(r)
            elif self.shared_keys and r.outcome == "unsent":  # it cost the downstream nothing
                await self.report_cost(dataclasses.replace(r, actual_cost=0), scope="shared")
            elif self.shared_keys and r.retry_after_ms >= 0:  # back-pressure: the shared key pauses too
                await self.report_cost(r)
        args = self._policy_args()
        for r in receipts:
            args += [r.suffix, r.attempt, r.outcome, r.error, r.result_json, r.retry_after_ms, r.digest, r.seq,
                     r.status]
        out = await self.run("settle", [*self._attempt_keys(), *(self.keys.job(r.suffix) for r in receipts)], args)
        return [text(word) for word in replies(out)]

    async def report_cost(self, receipt: Receipt, scope: str = "all") -> str:
        """Apply what the downstream told the worker of one attempt's call, and its
        back-pressure to the shared limits (``lua/report_cost.lua``); ``scope`` "shared": to
        the shared limits' buckets only."""
        k = self.keys

        def opt(value: float | None) -> str:
            return "" if value is None else number_text(value)

        out = await self.run("report_cost", [k.job(receipt.suffix), k.limits, k.bucket, k.buckets,
                                             *self.shared_limit_keys],
                             [receipt.attempt, opt(receipt.actual_cost), opt(receipt.available),
                              opt(receipt.bucket_size), receipt.retry_after_ms, scope, k.key_bucket_prefix,
                              *self.shared_limit_args])
        return text(out)

    async def hold_back(self, reports: Sequence[HoldBack]) -> int:
        """Hold throttle keys back for jobs written late after their claim (``lua/hold_back.lua``);
        returns how many buckets changed."""
        reports_json = json.dumps([[r.bucket, r.limit, r.throttle_key, r.slack_ms, r.cost, r.late_ms] for r in reports])
        return integer(await self.run(
            "hold_back", [*self.keys.queue_keys, self.keys.bucket,
                          *self.shared_limit_keys],
            [*self.keys.queue_args, reports_json, *self.shared_limit_args]))

    async def reap(self, most: int = 500, not_after_ms: int | None = None) -> Reaped:
        """Fail expired leases; returns (reaped, ms until the next lease ends or -1, the
        attempts it ended). With ``not_after_ms`` (Redis time), a reap that Redis runs later
        does nothing: (0, 0, ())."""
        out = replies(await self.run("reap", self._attempt_keys(),
                                     [*self._policy_args(), most, "" if not_after_ms is None else not_after_ms]))
        ended = tuple(ReapedAttempt(job_id(self.name, text(out[i])), integer(out[i + 1]), text(out[i + 2]))
                      for i in range(2, len(out), 3))
        return Reaped(integer(out[0]), integer(out[1]), ended)

    async def purge(self, most: int = 500) -> tuple[int, bool]:
        """Delete finished jobs past their retention; returns (purged, more are due)."""
        k = self.keys
        r = self.config.retention
        out = replies(await self.run("purge", [k.finished, k.stats, k.buckets, k.limits],
                                     [k.job_prefix, most, k.key_bucket_prefix, k.state_prefix, k.history_prefix,
                                      round(r.succeeded_s * 1000), round(r.dead_s * 1000),
                                      round(r.cancelled_s * 1000)]))
        return integer(out[0]), bool(integer(out[1]))

    async def lease_left_ms(self, suffix: str, attempt: int, seq: int = 0) -> int:
        """Ms the running attempt's lease has left (heartbeats move it on); 0 when it has
        ended or the attempt is no longer the running one (``lua/lease.lua``, a read)."""
        return integer(await self.run("lease", [self.keys.running, self.keys.job(suffix)], [suffix, attempt, seq]))

    # -- one job -------------------------------------------------------------------------
    async def get(self, suffix: str) -> Job:
        fields = await self.read(lambda: self.redis.hgetall(self.keys.job(suffix)))
        if not fields:
            raise NotFoundError(f"no job {job_id(self.name, suffix)!r}")
        return Job.from_fields(self.name, suffix, fields, await self.history(suffix))

    async def history(self, suffix: str) -> list[bytes | str]:
        """The entries of a job's history list (``WorkerKeys.history``), oldest first."""
        entries: list[bytes | str] = await self.read(lambda: self.redis.lrange(self.keys.history(suffix), 0, -1))
        return entries

    async def cancel(self, suffix: str) -> Job:
        k = self.keys
        out = replies(await self.run("cancel", [*k.queue_keys, k.running, k.job(suffix)],
                                     [*k.queue_args, suffix]))
        outcome = text(out[0])
        if outcome == "missing":
            raise NotFoundError(f"no job {job_id(self.name, suffix)!r}")
        job = Job.from_fields(self.name, suffix, fields_of(out[1]), await self.history(suffix))
        if outcome == "finished":
            raise ConflictError(f"job {job.id!r} has already finished ({job.state.value})")
        self.notify.settled(self.name, ["cancelled"])  # a cancelled running job frees its slot
        return job

    async def receipt(self, suffix: str, receipt: Receipt) -> str:
        """Settle one posted receipt; raises NotFound / Conflict for the API."""
        (word,) = await self.settle([receipt])
        self.notify.settled(self.name, [word])
        if word == "missing":
            raise NotFoundError(f"no job {job_id(self.name, suffix)!r}")
        if word == "stale":
            raise ConflictError(
                f"attempt {receipt.attempt} of job {job_id(self.name, suffix)!r} is no longer the running one")
        return word

    async def heartbeat(self, suffix: str, attempt: int, seq: int = 0) -> int:
        """Extend the running attempt's lease to now + the job's timeout; returns the new
        lease deadline (unix ms). NotFound for an unknown job; Conflict when the attempt
        is no longer the running one or the job is not running."""
        out = replies(await self.run("heartbeat", [self.keys.running, self.keys.job(suffix)], [suffix, attempt, seq]))
        outcome, detail = text(out[0]), text(out[1])
        the_job = job_id(self.name, suffix)
        if outcome == "missing":
            raise NotFoundError(f"no job {the_job!r}")
        if outcome == "stale":
            raise ConflictError(f"attempt {attempt} of job {the_job!r} is no longer the running one")
        if outcome == "finished":
            raise ConflictError(f"job {the_job!r} is {detail}, not running: its lease cannot be extended")
        return int(detail)
