"""The engine: every worker's ``WorkerEngine``, and the calls that span workers or start
from an id.

``Engine(redis, config).worker(name)`` is one worker's engine (jobs, live limits,
schedules; ``worker.py``). A job's or a schedule's id names its worker
(``<worker>:<suffix>``), so a call by id resolves the worker and delegates. A batch
enqueue spans workers: one script call per worker (a worker's keys share one hash slot).
Every call reaches Redis through one choke point that maps its errors (``calls.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..config import Config, WorkerConfig
from ..connection import RedisClient, is_cluster, ping_masters
from ..cron import ScheduleRequest
from ..errors import ConflictError, NotFoundError, RedisqError, ValidationError
from ..keys import WorkerKeys, split_job_id
from ..limits import Limits
from ..model import EnqueueRequest, Job
from ..scripts import Scripts
from .base import NoOneToTell, Notifier, default_coordinator_id
from .calls import REDIS_OUTAGE_ERRORS, OutageClock, is_outage, mapped_error, redis_errors_mapped
from .presence import CoordinatorAlive, Presence
from .records import (
    ACCEPTED,
    BulkSlice,
    Claim,
    ClaimedJob,
    HoldBack,
    JobPage,
    LastJob,
    Reaped,
    ReapedAttempt,
    Receipt,
    Schedule,
    SharedKeyState,
    ThrottleKeys,
    ThrottleKeyState,
    TickPlan,
    TickRound,
    WorkerState,
)
from .shared import SharedLimit, SharedLimitState
from .worker import WorkerEngine

__all__ = [
    "ACCEPTED", "BulkSlice", "Claim", "ClaimedJob", "CoordinatorAlive", "Engine", "HoldBack", "JobPage", "LastJob",
    "Reaped", "ReapedAttempt", "NoOneToTell", "SharedLimit", "SharedLimitState", "Notifier", "Presence",
    "REDIS_OUTAGE_ERRORS", "Receipt", "Schedule", "ScheduleBook", "SharedKeyState", "Store", "ThrottleKeyState",
    "ThrottleKeys",
    "TickPlan", "TickRound", "WorkerEngine",
    "WorkerState", "is_outage", "mapped_error", "redis_errors_mapped",
]


class Engine:
    def __init__(self, redis: RedisClient, config: Config, notify: Notifier | None = None, coordinator_id: str = ""):
        self.redis = redis
        self.config = config
        self.scripts = Scripts(redis)
        self.outages = OutageClock()
        self.coordinator_id = coordinator_id or default_coordinator_id()
        self.workers = {name: WorkerEngine(redis, worker, self.scripts, notify, self.outages, self.coordinator_id)
                        for name, worker in config.workers.items()}
        self.limits = {name: SharedLimit(limit, [self.workers[w] for w, worker in config.workers.items()
                                                 if name in worker.limits])
                       for name, limit in config.limits.items()}  # [limits.NAME]
        self.schedules = ScheduleBook(self)
        self.presence = Presence(redis, self.scripts)  # the coordinators alive

    def worker(self, name: str) -> WorkerEngine:
        engine = self.workers.get(name)
        if engine is None:
            raise NotFoundError(f"unknown worker {name!r}")
        return engine

    def limit(self, name: str) -> SharedLimit:
        limit = self.limits.get(name)
        if limit is None:
            raise NotFoundError(f"unknown limit {name!r}")
        return limit

    def keys(self, name: str) -> WorkerKeys:
        return self.worker(name).keys

    def locate(self, id_text: str, what: str = "job") -> tuple[WorkerEngine, str]:
        """The engine of the worker an id names, and the id's suffix; NotFound otherwise."""
        parts = split_job_id(id_text)
        if parts is None or parts[0] not in self.workers:
            raise NotFoundError(f"no {what} {id_text!r}")
        return self.workers[parts[0]], parts[1]

    # -- across workers --------------------------------------------------------------
    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> tuple[list[tuple[Job, bool]], set[str]]:
        """Enqueue validated requests; returns ``[(job, created)]`` in request order, and the
        workers whose queue got a new earliest job (dispatchers should be woken)."""
        by_worker: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            by_worker[request.worker].append(i)
        if len(by_worker) > 1:
            await self._refuse_costs_above_burst(requests)
        results: list[tuple[Job, bool] | None] = [None] * len(requests)
        wake: set[str] = set()
        for name, indexes in by_worker.items():
            try:
                worker_results, worker_wake = await self.worker(name).enqueue([requests[i] for i in indexes],
                                                                              indexes, len(requests))
            except RedisqError as e:
                written = [job.id for result in results if result is not None for job in (result[0],)]
                if not written or e.status_code < 500:
                    raise
                # one worker's jobs are one script call; a batch across workers is not atomic
                raise type(e)(
                    f"{e.message}; {len(written)} of {len(requests)} jobs were enqueued before it failed, those of "
                    f"the workers before {name!r} (their ids are in 'enqueued'; post the batch again with ids to "
                    "make the retry idempotent)", details={"enqueued": written}) from (e.__cause__ or e)
            for i, result in zip(indexes, worker_results, strict=True):
                results[i] = result
            if worker_wake:
                wake.add(name)
        return [r for r in results if r is not None], wake

    async def _refuse_costs_above_burst(self, requests: Sequence[EnqueueRequest]) -> None:
        """Before a batch across workers writes anything: a new job whose cost is above its
        worker's burst is refused here (the enqueue script checks it again, atomically, but
        only for its own worker's jobs, after the workers before it were written)."""
        limits = {}
        for i, r in enumerate(requests):
            if r.cost <= 1:
                continue
            engine = self.worker(r.worker)
            if r.worker not in limits:
                limits[r.worker] = await engine.limits()
            refusal = limits[r.worker].cost_refusal(r.cost)
            if refusal is None:
                continue
            with redis_errors_mapped():
                exists = await self.redis.exists(engine.keys.job(r.suffix))
            if not exists:  # an existing id is answered with its job, as always
                raise ValidationError(f"jobs[{i}].cost: {refusal} of worker {r.worker!r}, so it could never run",
                                      field="cost", index=i)

    async def enqueue(self, request: EnqueueRequest) -> tuple[Job, bool]:
        results, _ = await self.enqueue_many([request])
        return results[0]

    async def ping(self) -> dict[str, str | None]:
        """PING the store (UnavailableError when it does not answer). On a cluster, every
        master: {address: None when it answered, else why not}; {} on a single Redis."""
        with redis_errors_mapped():
            if is_cluster(self.redis):
                return await ping_masters(self.redis)
            await self.redis.ping()
        return {}

    # -- by job id -------------------------------------------------------------------
    async def get(self, job_id_text: str) -> Job:
        engine, suffix = self.locate(job_id_text)
        return await engine.get(suffix)

    async def retry(self, job_id_text: str, args_json: str = "", run_at_ms: int | None = None,
                    delay_ms: int = 0) -> Job:
        """Run a dead or cancelled job again (its attempts start over); 404 unknown, 409 when
        it is in another state."""
        engine, suffix = self.locate(job_id_text)
        result = await engine.retry_jobs(ids=[job_id_text], run_at_ms=run_at_ms, delay_ms=delay_ms,
                                         args_json=args_json)
        if not result.changed:
            reason = result.skipped.get(job_id_text, "not found")
            if reason == "not found":
                raise NotFoundError(f"no job {job_id_text!r}")
            raise ConflictError(f"job {job_id_text!r} is {reason}: only dead or cancelled jobs can be retried")
        return await engine.get(suffix)

    async def cancel(self, job_id_text: str) -> Job:
        engine, suffix = self.locate(job_id_text)
        return await engine.cancel(suffix)

    async def receipt(self, job_id_text: str, receipt: Receipt) -> str:
        engine, suffix = self.locate(job_id_text)
        return await engine.receipt(suffix, receipt)

    async def heartbeat(self, job_id_text: str, attempt: int, seq: int = 0) -> int:
        engine, suffix = self.locate(job_id_text)
        return await engine.heartbeat(suffix, attempt, seq)

    # -- by worker, for the loops and tests: each delegates to ``worker(name)`` ---------
    async def claim(self, worker: WorkerConfig, most: int) -> Claim:
        return await self.worker(worker.name).claim(most)

    async def settle(self, worker: WorkerConfig, receipts: Sequence[Receipt]) -> list[str]:
        return await self.worker(worker.name).settle(receipts)

    async def lease_left_ms(self, worker: WorkerConfig, job: ClaimedJob) -> int:
        return await self.worker(worker.name).lease_left_ms(job.suffix, job.attempt, job.seq)

    async def hold_back(self, worker: WorkerConfig, reports: Sequence[HoldBack]) -> int:
        return await self.worker(worker.name).hold_back(reports)

    async def reap(self, worker: WorkerConfig, most: int = 500, not_after_ms: int | None = None) -> Reaped:
        return await self.worker(worker.name).reap(most, not_after_ms)

    async def purge(self, worker: WorkerConfig, most: int = 500) -> tuple[int, bool]:
        return await self.worker(worker.name).purge(most)

    async def seed_limits(self, worker: WorkerConfig) -> Limits:
        return await self.worker(worker.name).seed_limits()


Store = Engine  # the engine's name before it was one object per worker (redisq.Store)


class ScheduleBook:
    """Schedules by id across workers: each call resolves the worker and delegates."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.config = engine.config

    async def save(self, request: ScheduleRequest) -> tuple[Schedule, bool]:
        return await self.engine.worker(request.worker).save_schedule(request)

    async def get(self, schedule_id: str) -> Schedule:
        engine, suffix = self.engine.locate(schedule_id, "schedule")
        return await engine.get_schedule(suffix)

    async def list(self, worker_name: str | None = None) -> list[Schedule]:
        names = [worker_name] if worker_name is not None else sorted(self.engine.workers)
        return [schedule for name in names for schedule in await self.engine.worker(name).list_schedules()]

    async def delete(self, schedule_id: str) -> Schedule:
        engine, suffix = self.engine.locate(schedule_id, "schedule")
        return await engine.delete_schedule(suffix)

    async def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        engine, suffix = self.engine.locate(schedule_id, "schedule")
        return await engine.set_schedule_paused(suffix, paused)

    async def plan(self, worker: WorkerConfig, horizon_ms: int = 0, most: int | None = None) -> TickPlan:
        engine = self.engine.worker(worker.name)
        return await (engine.plan(horizon_ms) if most is None else engine.plan(horizon_ms, most))

    async def fire(self, plan: TickPlan, lead_ms: int = 0) -> TickRound:
        return await self.engine.worker(plan.worker.name).fire(plan, lead_ms)

    async def tick(self, worker: WorkerConfig, most: int | None = None) -> TickRound:
        engine = self.engine.worker(worker.name)
        return await (engine.tick() if most is None else engine.tick(most))
