"""Recurring schedules: cron expressions that fire one ordinary job per tick.

A schedule is ``POST /job`` with ``cron`` (see ``parse_schedule``). Its id is
``<worker>:<suffix>``, like a job's, and the job its tick at ``fire_ms`` creates is
``<worker>:<suffix>:<fire_ms>`` (``keys.tick_job_suffix``), so a tick can never produce two
jobs. Keys (built in ``keys.py``): a zset ``schedules`` of suffix -> next_fire_ms (schedules
not paused), a set ``schedule-ids`` of all of them, a hash per schedule, and a short list
of its latest jobs.

Fire times are computed here, in Python (croniter, on the schedule's IANA timezone);
"now" is always the Redis server's clock, read by the scripts. Each coordinator's
``Ticker`` runs one loop per worker: ``schedules_due.lua`` reads the due schedules and
now, this module computes each one's ticks and its next fire time, and ``tick.lua``
creates the jobs (with ``create_job`` from ``lua/includes/jobs.lua``, as enqueue does) and
advances the schedule, atomically, only if the stored next fire time and revision are
still the ones the computation started from. Any number of coordinators may race; one
wins each tick, the others are refused and change nothing.

Daylight saving (``CronSpec``): a local time that the clocks skip fires at the moment they
jump (02:30 on a spring-forward night fires at 03:00), so no day is lost; a local time
that occurs twice fires at its first occurrence only, so nothing fires twice, unless the
hour field is ``*`` (an hourly or more frequent schedule keeps firing every real hour).

A tick's job is created up to ``TICK_LEAD_MS`` (0.1 s) before the tick, with runAt at
the tick's time, so the dispatcher sends it as on time as any delayed job.

Misfires (``due_ticks``): ticks at most ``MISFIRE_GRACE_MS`` late are all fired (a
restart or a deploy loses none); when the schedule's next tick is later than that, no
coordinator ran for a while, and the schedule fires once, for the latest missed tick,
unless ``catchUp`` is set: then every missed tick fires (the latest
``MAX_CATCH_UP_TICKS``). Either way it then goes on from the next tick after now.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Awaitable, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .config import Config, WorkerConfig
from .errors import NotFoundError, ValidationError
from .keys import WorkerKeys, job_id, split_job_id, tick_job_suffix
from .limits import Limits, number_text
from .loops import MAX_IDLE_S, OutageBackoff, WorkerLoops
from .model import iso_from_ms, json_number, new_job_suffix, parse_enqueue
from .scripts import script_source
from .store import redis_outage_as_unavailable

log = logging.getLogger("redisq.cron")

SCHEDULE_FIELDS = ("worker", "args", "cron", "timezone", "id", "catchUp", "maxAttempts", "timeout", "throttleKey", "cost")
DEFAULT_TIMEZONE = "UTC"
MISFIRE_GRACE_MS = 60_000
MAX_CATCH_UP_TICKS = 1000
MAX_SCHEDULE_SUFFIX = 180  # leaves room for ":<fire_ms>" in the tick job's id (at most 200)
NEXT_RUN_TIMES = 5
DUE_BATCH = 100
# A tick's job is created this long before the tick, with runAt at the tick's time, so that
# the dispatcher sends it as on time as any delayed job (it sleeps until runAt).
TICK_LEAD_MS = 100
MAX_CRON_STEPS = 100_000  # croniter iterations before a schedule counts as never firing


# -- fire times ----------------------------------------------------------------------------

def _ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


class CronSpec:
    """A cron expression on an IANA timezone: its fire times as unix ms."""

    def __init__(self, cron: str, timezone: str = DEFAULT_TIMEZONE):
        self.cron = cron
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        hours = croniter(cron).expanded[1]
        # With fixed hours a wall time that occurs twice (clocks going back) fires once.
        self.fixed_hours = hours != ["*"] and len(set(hours)) < 24

    def _counts(self, moment: datetime) -> bool:
        """False for the second occurrence of a repeated local time, when hours are fixed."""
        if not self.fixed_hours:
            return True
        local = datetime.fromtimestamp(moment.timestamp(), self.zone)
        return not (local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset())

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self.zone)

    def fires_after(self, after_ms: int, count: int = 1) -> list[int]:
        """The next ``count`` fire times strictly after ``after_ms``."""
        it = croniter(self.cron, self._at(after_ms))
        out: list[int] = []
        last = after_ms
        for _ in range(MAX_CRON_STEPS):
            if len(out) >= count:
                return out
            moment = it.get_next(datetime)
            ms = _ms(moment)
            if ms > last and self._counts(moment):
                out.append(ms)
                last = ms
        raise CroniterBadDateError(f"no fire time found for {self.cron!r}")

    def fires_between(self, first_ms: int, last_ms: int, most: int) -> list[int]:
        """Fire times in ``[first_ms, last_ms]``, oldest first: the latest ``most`` of them."""
        it = croniter(self.cron, self._at(last_ms + 1))
        out: list[int] = []
        for _ in range(MAX_CRON_STEPS):
            if len(out) >= most:
                break
            moment = it.get_prev(datetime)
            ms = _ms(moment)
            if ms < first_ms:
                break
            if ms <= last_ms and self._counts(moment) and (not out or ms < out[-1]):
                out.append(ms)
        out.reverse()
        return out


@lru_cache(maxsize=1024)
def cron_spec(cron: str, timezone: str) -> CronSpec:
    return CronSpec(cron, timezone)


def due_ticks(spec: CronSpec, catch_up: bool, next_fire_ms: int, now_ms: int) -> tuple[list[int], int]:
    """The ticks to fire now for a schedule whose stored next fire time has come, and the
    next fire time after now (the misfire rule, see the module's docstring)."""
    following_ms = spec.fires_after(next_fire_ms, 1)[0]
    if following_ms > now_ms:  # the usual case: one tick is due
        return [next_fire_ms], following_ms
    new_next_ms = spec.fires_after(now_ms, 1)[0]
    on_time = next_fire_ms >= now_ms - MISFIRE_GRACE_MS
    most = MAX_CATCH_UP_TICKS if catch_up or on_time else 1
    ticks = spec.fires_between(next_fire_ms, now_ms, most)
    if not ticks:  # the stored time is not a tick of this cron (never written so): fire it as promised
        ticks = [next_fire_ms]
    return ticks, new_next_ms


# -- the request -------------------------------------------------------------------------

@dataclass(frozen=True)
class ScheduleRequest:
    """A validated ``POST /job`` body with ``cron``."""

    worker: str
    suffix: str
    cron: str
    timezone: str
    args_json: str
    catch_up: bool
    max_attempts: int | None  # None = the worker's default when the tick fires
    timeout_ms: int | None
    throttle_key: str = ""  # passed to each tick's job ("" = none)
    cost: float | None = None  # None = 1

    @property
    def id(self) -> str:
        return job_id(self.worker, self.suffix)

    @property
    def spec(self) -> CronSpec:
        return cron_spec(self.cron, self.timezone)


def is_schedule_body(body: Any) -> bool:
    return isinstance(body, dict) and body.get("cron") is not None


def reject_cron_in_batch(items: Sequence[Any]) -> None:
    """``POST /jobs`` takes jobs only: a schedule is created with ``POST /job``."""
    for i, item in enumerate(items):
        if isinstance(item, dict) and "cron" in item:
            raise ValidationError(f"jobs[{i}].cron: schedules are created one at a time with POST /job, "
                                  "not in a batch", field="cron", index=i)


def parse_schedule(body: Any, workers: Mapping[str, WorkerConfig]) -> ScheduleRequest:
    """Validate a schedule body; raise ValidationError naming the field."""
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object")
    for field in ("runAt", "delay"):
        if field in body:
            raise ValidationError(f"{field}: cannot be given with cron (a schedule runs at its cron times)", field=field)
    unknown = [k for k in body if k not in SCHEDULE_FIELDS]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown field for a schedule (expected {', '.join(SCHEDULE_FIELDS)})",
                              field=unknown[0])
    cron = body.get("cron")
    if not isinstance(cron, str) or not cron.strip():
        raise ValidationError("cron: must be a cron expression such as \"0 9 * * *\"", field="cron")
    cron = " ".join(cron.split())
    try:
        croniter(cron)
        valid = croniter.is_valid(cron)
        reason = "croniter does not accept it"
    except (CroniterError, ValueError, KeyError, TypeError) as e:
        valid, reason = False, str(e)
    if not valid:
        raise ValidationError(
            f"cron: {cron!r} is not a valid cron expression ({reason}); expected 5 fields "
            "(minute hour day-of-month month day-of-week), an optional 6th for seconds, or "
            "@yearly, @monthly, @weekly, @daily, @hourly", field="cron")
    tz = body.get("timezone", DEFAULT_TIMEZONE)
    if tz is None:
        tz = DEFAULT_TIMEZONE
    if not isinstance(tz, str) or not tz:
        raise ValidationError("timezone: must be an IANA timezone name such as \"Europe/Berlin\"", field="timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"timezone: unknown timezone {tz!r} (expected an IANA name such as "
                              "\"Europe/Berlin\" or \"UTC\")", field="timezone") from None
    catch_up = body.get("catchUp", False)
    if not isinstance(catch_up, bool):
        raise ValidationError("catchUp: must be true or false", field="catchUp")
    suffix = body.get("id")
    if suffix is None:
        suffix = new_job_suffix()
    elif isinstance(suffix, str) and len(suffix) > MAX_SCHEDULE_SUFFIX:
        raise ValidationError(f"id: a schedule id is at most {MAX_SCHEDULE_SUFFIX} characters", field="id")
    # worker, args, id, maxAttempts, timeout, throttleKey, cost are checked as for any job
    job_fields = ("worker", "args", "maxAttempts", "timeout", "throttleKey", "cost")
    job = parse_enqueue({k: body[k] for k in job_fields if k in body} | {"id": suffix}, workers)
    return ScheduleRequest(
        worker=job.worker, suffix=job.suffix, cron=cron, timezone=tz, args_json=job.args_json, catch_up=catch_up,
        max_attempts=job.max_attempts if body.get("maxAttempts") is not None else None,
        timeout_ms=job.timeout_ms if body.get("timeout") is not None else None,
        throttle_key=job.throttle_key, cost=job.cost if body.get("cost") is not None else None,
    )


# -- a schedule as stored ----------------------------------------------------------------

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int_or_none(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


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
    def from_fields(cls, worker: WorkerConfig, suffix: str, fields: Mapping[Any, Any],
                    last_jobs: Sequence[LastJob] = ()) -> "Schedule":
        f = {_text(k): _text(v) for k, v in fields.items()}
        return cls(
            id=job_id(worker.name, suffix), worker=worker.name, cron=f["cron"], timezone=f["timezone"],
            args_json=f.get("args", "{}"), catch_up=f.get("catch_up") == "1",
            max_attempts=_int_or_none(f.get("max_attempts")) or worker.max_attempts,
            timeout_ms=_int_or_none(f.get("timeout_ms")),
            throttle_key=f.get("throttle_key") or None, cost=float(f["cost"]) if f.get("cost") else 1.0,
            paused=f.get("paused") == "1", next_fire_ms=int(float(f["next_fire_ms"])),
            last_fire_ms=_int_or_none(f.get("last_fire_ms")),
            created_ms=int(float(f["created_ms"])), updated_ms=int(float(f["updated_ms"])),
            last_jobs=tuple(last_jobs),
        )

    def next_run_times(self, count: int = NEXT_RUN_TIMES) -> list[int]:
        if self.paused:
            return []
        return [self.next_fire_ms, *cron_spec(self.cron, self.timezone).fires_after(self.next_fire_ms, count - 1)]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "worker": self.worker, "cron": self.cron, "timezone": self.timezone,
            "args": json.loads(self.args_json), "catchUp": self.catch_up,
            "maxAttempts": self.max_attempts,
            "timeout": None if self.timeout_ms is None else self.timeout_ms / 1000,
            "throttleKey": self.throttle_key, "cost": json_number(self.cost),
            "paused": self.paused,
            "nextRunAt": None if self.paused else iso_from_ms(self.next_fire_ms),
            "nextRunTimes": [iso_from_ms(ms) for ms in self.next_run_times()],
            "lastFireAt": iso_from_ms(self.last_fire_ms),
            "lastJobs": [{"id": j.id, "state": j.state, "runAt": iso_from_ms(j.run_at_ms)} for j in self.last_jobs],
            "createdAt": iso_from_ms(self.created_ms), "updatedAt": iso_from_ms(self.updated_ms),
        }


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
    args: list[Any]


# -- the engine's side ---------------------------------------------------------------------

class Schedules:
    """Schedules in Redis: save, get, list, pause/resume, delete, and the tick."""

    def __init__(self, redis: Any, config: Config):
        self.redis = redis
        self.config = config
        self._save = redis.register_script(script_source("schedule_save"))
        self._pause = redis.register_script(script_source("schedule_pause"))
        self._delete = redis.register_script(script_source("schedule_delete"))
        self._due = redis.register_script(script_source("schedules_due"))
        self._tick = redis.register_script(script_source("tick"))

    def _locate(self, schedule_id: str) -> tuple[WorkerConfig, str]:
        parts = split_job_id(schedule_id)
        if parts is None or parts[0] not in self.config.workers:
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return self.config.workers[parts[0]], parts[1]

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def save(self, request: ScheduleRequest) -> tuple[Schedule, bool]:
        """Create the schedule, or update it in place; returns (schedule, created)."""
        keys = WorkerKeys(request.worker)
        with redis_outage_as_unavailable():
            if request.cost is not None:  # as enqueue refuses a job that could never run
                refusal = Limits.from_fields(await self.redis.hgetall(keys.limits)).cost_refusal(request.cost)
                if refusal is not None:
                    raise ValidationError(f"cost: {refusal} of worker {request.worker!r}, so its jobs could "
                                          "never run", field="cost")
            now_ms = await self._now_ms()
            try:
                next_fire_ms = request.spec.fires_after(now_ms, 1)[0]
            except CroniterError as e:
                raise ValidationError(f"cron: {request.cron!r} never fires ({e})", field="cron") from None
            out = await self._save(
                keys=[keys.schedules, keys.schedule_ids, keys.schedule(request.suffix)],
                args=[request.suffix, request.cron, request.timezone, request.args_json,
                      "" if request.max_attempts is None else request.max_attempts,
                      "" if request.timeout_ms is None else request.timeout_ms,
                      1 if request.catch_up else 0, next_fire_ms, request.throttle_key,
                      "" if request.cost is None else number_text(request.cost)])
        return await self.get(request.id), bool(int(out[0]))

    async def get(self, schedule_id: str) -> Schedule:
        worker, suffix = self._locate(schedule_id)
        keys = WorkerKeys(worker.name)
        with redis_outage_as_unavailable():
            fields = await self.redis.hgetall(keys.schedule(suffix))
            if not fields:
                raise NotFoundError(f"no schedule {schedule_id!r}")
            job_suffixes = [_text(s) for s in await self.redis.lrange(keys.schedule_jobs(suffix), 0, -1)]
            last_jobs = []
            for job_suffix in job_suffixes:
                state, run_at = await self.redis.hmget(keys.job(job_suffix), "state", "run_at_ms")
                last_jobs.append(LastJob(job_id(worker.name, job_suffix),
                                         _text(state) if state is not None else "purged",
                                         _int_or_none(_text(run_at)) if run_at is not None else None))
        return Schedule.from_fields(worker, suffix, fields, last_jobs)

    async def list(self, worker_name: str | None = None) -> list[Schedule]:
        names = [worker_name] if worker_name is not None else sorted(self.config.workers)
        out: list[Schedule] = []
        with redis_outage_as_unavailable():
            for name in names:
                worker = self.config.workers[name]
                keys = WorkerKeys(name)
                for suffix in sorted(_text(s) for s in await self.redis.smembers(keys.schedule_ids)):
                    fields = await self.redis.hgetall(keys.schedule(suffix))
                    if fields:
                        out.append(Schedule.from_fields(worker, suffix, fields))
        return out

    async def delete(self, schedule_id: str) -> Schedule:
        schedule = await self.get(schedule_id)
        worker, suffix = self._locate(schedule_id)
        keys = WorkerKeys(worker.name)
        with redis_outage_as_unavailable():
            existed = await self._delete(
                keys=[keys.schedules, keys.schedule_ids, keys.schedule(suffix), keys.schedule_jobs(suffix)], args=[suffix])
        if not int(existed):
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return schedule

    async def set_paused(self, schedule_id: str, paused: bool) -> Schedule:
        worker, suffix = self._locate(schedule_id)
        keys = WorkerKeys(worker.name)
        with redis_outage_as_unavailable():
            next_fire_ms = ""
            if not paused:
                fields = await self.redis.hmget(keys.schedule(suffix), "cron", "timezone")
                if fields[0] is None:
                    raise NotFoundError(f"no schedule {schedule_id!r}")
                now_ms = await self._now_ms()
                next_fire_ms = str(cron_spec(_text(fields[0]), _text(fields[1])).fires_after(now_ms, 1)[0])
            out = await self._pause(keys=[keys.schedules, keys.schedule(suffix)],
                                    args=[suffix, "pause" if paused else "resume", next_fire_ms])
        if _text(out[0]) == "missing":
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return await self.get(schedule_id)

    async def plan(self, worker: WorkerConfig, horizon_ms: int = 0, most: int = DUE_BATCH) -> TickPlan:
        """Read the schedules due now (or, within ``horizon_ms``, at the earliest next fire
        time) and compute their ticks: a plan for ``fire``. Changes nothing."""
        keys = WorkerKeys(worker.name)
        out = await self._due(keys=[keys.schedules], args=[keys.schedule_prefix, most, horizon_ms])
        now_ms, earliest_ms, due_ms = int(out[0]), int(out[1]), int(out[2])
        tick_keys: list[str] = []
        tick_args: list[Any] = []
        count = skipped = 0
        for i in range(3, len(out), 6):
            suffix, next_fire_ms, revision = _text(out[i]), int(out[i + 1]), int(out[i + 2])
            cron, tz, catch_up = _text(out[i + 3]), _text(out[i + 4]), _text(out[i + 5]) == "1"
            try:
                ticks, new_next_ms = due_ticks(cron_spec(cron, tz), catch_up, next_fire_ms, due_ms)
            except (CroniterError, ValueError, ZoneInfoNotFoundError) as e:
                log.error("schedule %s: cannot compute its fire times (%s); it is skipped", job_id(worker.name, suffix), e)
                skipped += 1
                continue
            count += 1
            tick_keys += [keys.schedule(suffix), keys.schedule_jobs(suffix)]
            tick_args += [suffix, next_fire_ms, revision, new_next_ms, len(ticks)]
            for fire_ms in ticks:
                job_suffix = tick_job_suffix(suffix, fire_ms)
                tick_keys.append(keys.job(job_suffix))
                tick_args += [job_suffix, fire_ms]
        wait_ms = -1 if earliest_ms < 0 else max(0, earliest_ms - now_ms)
        if skipped and not count:  # due but not computable: look again in a while, not in a busy loop
            wait_ms = round(MAX_IDLE_S * 1000)
        return TickPlan(worker, now_ms, due_ms, wait_ms, count, tick_keys, tick_args)

    async def fire(self, plan: TickPlan, lead_ms: int = 0) -> TickRound:
        """Run a plan's ticks in one atomic ``tick.lua`` call, not before ``lead_ms`` ahead of
        its ``due_ms``. The jobs' runAt is their tick's time either way."""
        keys = WorkerKeys(plan.worker.name)
        worker = plan.worker
        result = await self._tick(
            keys=[*keys.queue_keys, keys.schedules, *plan.keys],
            args=[*keys.queue_args, plan.due_ms - lead_ms, worker.max_attempts, "",  # "" = the worker's live timeout
                  plan.count, *plan.args])
        now_ms = int(result[0])
        if _text(result[1]) == "early":
            return TickRound(now_ms, max(1, plan.due_ms - lead_ms - now_ms), 0, 0, False, early=True)
        outcomes = [int(x) for x in result[2:]]
        return TickRound(now_ms, 0, sum(n for n in outcomes if n > 0), sum(1 for n in outcomes if n < 0),
                         bool(int(result[1])))

    async def tick(self, worker: WorkerConfig, most: int = DUE_BATCH) -> TickRound:
        """Fire this worker's due schedules: one read, then one atomic tick script call."""
        plan = await self.plan(worker, 0, most)
        if not plan.count:
            return TickRound(plan.now_ms, plan.wait_ms, 0, 0, False)
        return await self.fire(plan)


# -- the loop ------------------------------------------------------------------------------

class Ticker(WorkerLoops):
    """Per worker, one loop that sleeps until the earliest next fire time (at most
    ``MAX_IDLE_S``, and less when ``wake`` says a schedule was saved) and then ticks."""

    kind = "ticker"

    def __init__(self, schedules: Schedules, config: Config,
                 on_enqueued: Callable[[set[str]], Awaitable[None]] | None = None):
        super().__init__(config)
        self.schedules = schedules
        self.on_enqueued = on_enqueued

    async def _loop(self, worker: WorkerConfig) -> None:
        backoff = OutageBackoff(f"ticker ({worker.name})")
        wake = self._wake[worker.name]
        while not self._stopping:
            wake.clear()
            try:
                # The ticks due within TICK_LEAD_MS: their jobs are created now, to leave at
                # their tick's time.
                plan = await self.schedules.plan(worker, TICK_LEAD_MS)
                if plan.count:
                    await self._fire_when_due(plan)
                    backoff.succeeded()
                    continue
                backoff.succeeded()
            except Exception as e:  # a Redis outage or error reply: back off, never end the loop
                await backoff.failed(e)
                continue
            wait_ms = plan.wait_ms - TICK_LEAD_MS
            sleep_s = MAX_IDLE_S if plan.wait_ms < 0 else min(MAX_IDLE_S, max(0, wait_ms) / 1000)
            try:
                await asyncio.wait_for(wake.wait(), sleep_s)
            except asyncio.TimeoutError:
                pass

    async def _fire_when_due(self, plan: TickPlan) -> None:
        # Normally at once; the script refuses ticks more than TICK_LEAD_MS ahead, and then
        # says how long is left.
        wait_ms = plan.due_ms - TICK_LEAD_MS - plan.now_ms
        for _ in range(100):
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            round_ = await self.schedules.fire(plan, TICK_LEAD_MS)
            if not round_.early:
                break
            wait_ms = round_.wait_ms
        if round_.wake and self.on_enqueued is not None:
            await self.on_enqueued({plan.worker.name})
