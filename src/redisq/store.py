"""The engine's API: enqueue, claim, settle, reap, purge, cancel, get.

Each method that changes state is one Lua script call (see ``lua/``), atomic and one round
trip, correct with any number of coordinators on the same Redis. Batches (enqueue, claim,
settle) cover one worker per call, since a worker's keys share one hash slot.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from redis import exceptions as redis_errors

from .config import Config, WorkerConfig
from .errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from .keys import WorkerKeys, job_id, split_job_id
from .limits import Limits, cost_refusal_text, number_text
from .model import EnqueueRequest, Job, JobState
from .scripts import Scripts

ENQUEUE_CHUNK = 1000


# Redis cannot be reached (as opposed to an error reply, which it sends when it can).
REDIS_OUTAGE_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


@contextmanager
def redis_outage_as_unavailable() -> Iterator[None]:
    try:
        yield
    except REDIS_OUTAGE_ERRORS as e:
        raise UnavailableError(f"redis is unavailable: {e}") from e
    except (redis_errors.ReadOnlyError, redis_errors.OutOfMemoryError) as e:
        raise UnavailableError(f"redis refuses writes: {e}") from e


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


@dataclass(frozen=True)
class HoldBack:
    """One claim's jobs of a bucket were written ``late_ms`` after it (``lua/hold_back.lua``):
    ``bucket`` is "key" (``throttle_key``'s) or "worker" (the worker-wide one)."""

    bucket: str
    throttle_key: str
    slack_ms: float  # how long the bucket would have taken to fill up at the claim
    cost: float  # what the claim drew from it
    reported_ms: int  # the lateness already reported for this claim's bucket
    late_ms: int


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

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "url": self.url, "limits": self.limits.to_json(),
            "jobs": {"scheduled": self.scheduled, "retrying": self.retrying, "running": self.running,
                     "succeeded": self.succeeded, "dead": self.dead, "cancelled": self.cancelled},
            "throttleKeysWaiting": self.throttle_keys, "tokens": self.tokens, "totalTokens": self.total_tokens,
            "backPressureFor": self.back_pressure_s,
            "dispatchedLastMinute": self.dispatched_last_minute,
            "dispatchRate": round(self.dispatched_last_minute / 60, 3),
        }


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

    @property
    def digest(self) -> str:
        text = "\x00".join((self.outcome, self.error, self.result_json, str(self.retry_after_ms)))
        return hashlib.sha1(text.encode()).hexdigest()


ACCEPTED = frozenset({"succeeded", "retrying", "dead"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class Store:
    def __init__(self, redis: Any, config: Config):
        self.redis = redis
        self.config = config
        self.scripts = Scripts(redis)
        self._keys: dict[str, WorkerKeys] = {}
        self._seeded: set[str] = set()  # workers whose limits this process has seeded

    def keys(self, worker: str) -> WorkerKeys:
        keys = self._keys.get(worker)
        if keys is None:
            keys = self._keys[worker] = WorkerKeys(worker)
        return keys

    def worker(self, name: str) -> WorkerConfig:
        worker = self.config.workers.get(name)
        if worker is None:
            raise NotFoundError(f"unknown worker {name!r}")
        return worker

    def _policy_args(self, worker: WorkerConfig) -> list[Any]:
        b, r = worker.backoff, worker.retention
        keys = self.keys(worker.name)
        return [
            *keys.queue_args, keys.job_prefix,
            round(b.initial_s * 1000), b.factor, round(b.max_s * 1000), 1 if b.jitter else 0,
            random.getrandbits(31),
            round(r.succeeded_s * 1000), round(r.dead_s * 1000),
        ]

    # -- enqueue ---------------------------------------------------------------------
    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> tuple[list[tuple[Job, bool]], set[str]]:
        """Enqueue validated requests; returns ``[(job, created)]`` in request order, and the
        workers whose schedule got a new earliest job (dispatchers should be woken)."""
        by_worker: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            by_worker[request.worker].append(i)
        results: list[tuple[Job, bool] | None] = [None] * len(requests)
        wake: set[str] = set()
        if len(by_worker) > 1:
            await self._refuse_costs_above_burst(requests)
        try:
            await self._enqueue_by_worker(requests, by_worker, results, wake)
        except UnavailableError as e:
            done = sum(1 for r in results if r is not None)
            if done:  # one worker's jobs are one script call; a batch across workers is not atomic
                raise UnavailableError(
                    f"{e.message}; {done} of {len(requests)} jobs were enqueued before it failed "
                    "(retry with ids to make the retry idempotent)") from e
            raise
        return [r for r in results if r is not None], wake

    async def _refuse_costs_above_burst(self, requests: Sequence[EnqueueRequest]) -> None:
        """Before a batch across workers writes anything: a new job whose cost is above its
        worker's burst is refused here (the enqueue script checks it again, atomically, but
        only for its own worker's jobs, after the workers before it were written)."""
        limits: dict[str, Limits] = {}
        for i, r in enumerate(requests):
            if r.cost <= 1:
                continue
            if r.worker not in limits:
                limits[r.worker] = await self.limits(r.worker)
            refusal = limits[r.worker].cost_refusal(r.cost)
            if refusal is None:
                continue
            with redis_outage_as_unavailable():
                exists = await self.redis.exists(self.keys(r.worker).job(r.suffix))
            if not exists:  # an existing id is answered with its job, as always
                raise ValidationError(f"jobs[{i}].cost: {refusal} of worker {r.worker!r}, so it could never run",
                                      field="cost", index=i)

    async def _enqueue_by_worker(self, requests: Sequence[EnqueueRequest], by_worker: dict[str, list[int]],
                                 results: list[tuple[Job, bool] | None], wake: set[str]) -> None:
        with redis_outage_as_unavailable():
            for worker, indexes in by_worker.items():
                keys = self.keys(worker)
                for start in range(0, len(indexes), ENQUEUE_CHUNK):
                    chunk = indexes[start:start + ENQUEUE_CHUNK]
                    args: list[Any] = list(keys.queue_args)
                    job_keys = []
                    for i in chunk:
                        r = requests[i]
                        job_keys.append(keys.job(r.suffix))
                        args += [r.suffix, r.args_json, "" if r.run_at_ms is None else r.run_at_ms,
                                 r.delay_ms, r.max_attempts, "" if r.timeout_ms is None else r.timeout_ms,
                                 r.throttle_key, number_text(r.cost)]
                    await self._ensure_limits(worker)
                    out = await self.scripts.enqueue(keys=[*keys.queue_keys, *job_keys], args=args)
                    if _text(out[0]) == "cost":
                        i = chunk[int(out[1]) - 1]
                        where = f"jobs[{i}]." if len(requests) > 1 else ""
                        refusal = cost_refusal_text(requests[i].cost, _text(out[2]), float(_text(out[3])))
                        raise ValidationError(f"{where}cost: {refusal} of worker {worker!r}, so it could never run",
                                              field="cost", index=i if len(requests) > 1 else None)
                    now_ms = int(out[0])
                    if int(out[1]):
                        wake.add(worker)
                    for i, entry in zip(chunk, out[2:]):
                        r = requests[i]
                        if isinstance(entry, list):
                            results[i] = (Job.from_fields(worker, r.suffix, _fields(entry)), False)
                        else:
                            results[i] = (Job(
                                id=r.job_id, worker=worker, state=JobState.SCHEDULED, args_json=r.args_json,
                                run_at_ms=int(entry), attempts=0, max_attempts=r.max_attempts,
                                timeout_ms=r.timeout_ms, created_ms=now_ms,
                                throttle_key=r.throttle_key or None, cost=r.cost,
                            ), True)

    async def enqueue(self, request: EnqueueRequest) -> tuple[Job, bool]:
        results, _ = await self.enqueue_many([request])
        return results[0]

    # -- the dispatcher's side ---------------------------------------------------------
    async def claim(self, worker: WorkerConfig, most: int) -> Claim:
        keys = self.keys(worker.name)
        await self._ensure_limits(worker.name)
        out = await self.scripts.claim(
            keys=[*keys.queue_keys, keys.running, keys.bucket, keys.dispatched, keys.buckets],
            args=[*keys.queue_args, keys.job_prefix, most],
        )
        jobs = [
            ClaimedJob(worker.name, _text(out[i]), int(out[i + 1]), int(out[i + 2]), _text(out[i + 3]), int(out[i + 4]),
                       throttle_key=_text(out[i + 5]), cost=float(_text(out[i + 6])), key_slack_ms=_number(out[i + 7]))
            for i in range(4, len(out), 8)
        ]
        return Claim(jobs, int(out[0]), bool(int(out[1])), bool(int(out[2])), _number(out[3]))

    async def hold_back(self, worker: WorkerConfig, reports: Sequence[HoldBack]) -> int:
        """Hold throttle keys back for jobs written late after their claim (``lua/hold_back.lua``);
        returns how many buckets changed."""
        keys = self.keys(worker.name)
        args: list[Any] = list(keys.queue_args)
        for r in reports:
            args += [r.bucket, r.throttle_key, number_text(r.slack_ms), number_text(r.cost), r.reported_ms, r.late_ms]
        return int(await self.scripts.hold_back(keys=[*keys.queue_keys, keys.bucket], args=args))

    async def settle(self, worker: WorkerConfig, receipts: Sequence[Receipt]) -> list[str]:
        """End attempts; one word per receipt (see ``lua/settle.lua``)."""
        keys = self.keys(worker.name)
        args = self._policy_args(worker)
        for r in receipts:
            args += [r.suffix, r.attempt, r.outcome, r.error, r.result_json, r.retry_after_ms, r.digest, r.seq]
        out = await self.scripts.settle(
            keys=[*self._attempt_keys(keys), *(keys.job(r.suffix) for r in receipts)],
            args=args,
        )
        return [_text(word) for word in out]

    @staticmethod
    def _attempt_keys(keys: WorkerKeys) -> list[str]:
        """KEYS of the scripts that end attempts (lua/settle.lua, lua/reap.lua)."""
        return [*keys.queue_keys, keys.running, keys.finished, keys.bucket, keys.buckets]

    async def reap(self, worker: WorkerConfig, most: int = 500) -> tuple[int, int]:
        """Fail expired leases; returns (reaped, ms until the next lease ends or -1)."""
        keys = self.keys(worker.name)
        out = await self.scripts.reap(keys=self._attempt_keys(keys), args=[*self._policy_args(worker), most])
        return int(out[0]), int(out[1])

    async def purge(self, worker: WorkerConfig, most: int = 500) -> tuple[int, bool]:
        """Delete finished jobs past their retention; returns (purged, more are due)."""
        keys = self.keys(worker.name)
        out = await self.scripts.purge(keys=[keys.finished, keys.stats, keys.buckets, keys.limits],
                                       args=[keys.job_prefix, most, keys.key_bucket_prefix])
        return int(out[0]), bool(int(out[1]))

    # -- by job id -------------------------------------------------------------------
    def _locate(self, job_id_text: str) -> tuple[str, str]:
        parts = split_job_id(job_id_text)
        if parts is None or parts[0] not in self.config.workers:
            raise NotFoundError(f"no job {job_id_text!r}")
        return parts

    async def get(self, job_id_text: str) -> Job:
        worker, suffix = self._locate(job_id_text)
        with redis_outage_as_unavailable():
            fields = await self.redis.hgetall(self.keys(worker).job(suffix))
        if not fields:
            raise NotFoundError(f"no job {job_id_text!r}")
        return Job.from_fields(worker, suffix, fields)

    async def cancel(self, job_id_text: str) -> Job:
        worker_name, suffix = self._locate(job_id_text)
        worker = self.worker(worker_name)
        keys = self.keys(worker_name)
        with redis_outage_as_unavailable():
            out = await self.scripts.cancel(
                keys=[*keys.queue_keys, keys.running, keys.finished, keys.job(suffix)],
                args=[*keys.queue_args, suffix, round(worker.retention.cancelled_s * 1000)],
            )
        outcome = _text(out[0])
        if outcome == "missing":
            raise NotFoundError(f"no job {job_id_text!r}")
        job = Job.from_fields(worker_name, suffix, _fields(out[1]))
        if outcome == "finished":
            raise ConflictError(f"job {job_id_text!r} has already finished ({job.state.value})")
        return job

    async def receipt(self, job_id_text: str, receipt: Receipt) -> str:
        """Settle one posted receipt; raises NotFound / Conflict for the API."""
        worker_name, suffix = self._locate(job_id_text)
        with redis_outage_as_unavailable():
            (word,) = await self.settle(self.worker(worker_name), [receipt])
        if word == "missing":
            raise NotFoundError(f"no job {job_id_text!r}")
        if word == "stale":
            raise ConflictError(f"attempt {receipt.attempt} of job {job_id_text!r} is no longer the running one")
        return word

    # -- live limits -------------------------------------------------------------------
    async def _ensure_limits(self, worker_name: str) -> None:
        if worker_name not in self._seeded:
            await self.seed_limits(self.worker(worker_name))

    async def seed_limits(self, worker: WorkerConfig) -> Limits:
        """Give the worker's live limits the config file's values where the file changed
        them since it last did (see limits.py: a live change wins until then)."""
        keys = self.keys(worker.name)
        out = await self.scripts.set_limits(keys=[keys.limits, keys.throttle_keys],
                                            args=["seed", *Limits.from_config(worker).redis_pairs()])
        self._seeded.add(worker.name)
        return Limits.from_fields(_fields(out))

    async def limits(self, worker_name: str) -> Limits:
        with redis_outage_as_unavailable():
            await self._ensure_limits(worker_name)
            return Limits.from_fields(await self.redis.hgetall(self.keys(worker_name).limits))

    async def set_limits(self, worker_name: str, limits: Limits, fields: set[str] | None = None) -> Limits:
        """Set a worker's live limits (``paused`` with them); given ``fields`` (Redis field
        names, see ``Limits.pairs_of``), only those are written."""
        with redis_outage_as_unavailable():
            await self._ensure_limits(worker_name)
            keys = self.keys(worker_name)
            if fields is None:
                pairs = [*limits.redis_pairs(), "paused", "1" if limits.paused else ""]
            else:
                pairs = limits.pairs_of(fields)
            out = await self.scripts.set_limits(keys=[keys.limits, keys.throttle_keys], args=["set", *pairs])
        return Limits.from_fields(_fields(out))

    async def worker_state(self, worker_name: str) -> WorkerState:
        worker = self.worker(worker_name)
        keys = self.keys(worker_name)
        with redis_outage_as_unavailable():
            await self._ensure_limits(worker_name)
            out = await self.scripts.worker_state(
                keys=[*keys.queue_keys, keys.running, keys.bucket, keys.key_bucket(""), keys.dispatched],
                args=keys.queue_args)
        stats = {k: int(v) for k, v in _fields(out[2]).items()}
        queued, retrying = stats.get("queued", 0), stats.get("retrying", 0)
        return WorkerState(
            name=worker_name, url=worker.url, limits=Limits.from_fields(_fields(out[1])),
            scheduled=queued - retrying, retrying=retrying, running=int(out[3]),
            succeeded=stats.get("succeeded", 0), dead=stats.get("dead", 0), cancelled=stats.get("cancelled", 0),
            throttle_keys=int(out[4]),
            tokens=float(_text(out[5])) if _text(out[5]) else None,
            total_tokens=float(_text(out[6])) if _text(out[6]) else None,
            back_pressure_s=int(out[7]) / 1000, dispatched_last_minute=int(out[8]),
        )

    async def heartbeat(self, job_id_text: str, attempt: int, seq: int = 0) -> int:
        """Extend the running attempt's lease to now + the job's timeout; returns the new
        lease deadline (unix ms). NotFound for an unknown job; Conflict when the attempt
        is no longer the running one or the job is not running."""
        worker_name, suffix = self._locate(job_id_text)
        keys = self.keys(worker_name)
        with redis_outage_as_unavailable():
            out = await self.scripts.heartbeat(keys=[keys.running, keys.job(suffix)], args=[suffix, attempt, seq])
        outcome, detail = _text(out[0]), _text(out[1])
        if outcome == "missing":
            raise NotFoundError(f"no job {job_id_text!r}")
        if outcome == "stale":
            raise ConflictError(f"attempt {attempt} of job {job_id_text!r} is no longer the running one")
        if outcome == "finished":
            raise ConflictError(f"job {job_id_text!r} is {detail}, not running: its lease cannot be extended")
        return int(detail)

    async def ping(self) -> None:
        with redis_outage_as_unavailable():
            await self.redis.ping()
