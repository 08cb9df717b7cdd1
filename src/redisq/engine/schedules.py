"""One worker's cron schedules: save, get, list, pause/resume, delete, and the tick (see
``redisq.cron`` for fire times and the rules; ``redisq.ticker`` runs the loop)."""

from __future__ import annotations

import logging

from croniter import CroniterError

from ..cron import DUE_BATCH, ScheduleRequest, cron_spec, due_ticks
from ..errors import NotFoundError, ValidationError
from ..job_fields import stored
from ..keys import job_id, tick_job_suffix
from ..limits import Limits, number_text
from ..loops import MAX_IDLE_S
from ..types import ScriptArg
from .base import WorkerBase
from .calls import redis_errors_mapped
from .records import LastJob, Schedule, TickPlan, TickRound, int_or_none, integer, replies, text

log = logging.getLogger("redisq.cron")


class Schedules(WorkerBase):
    async def save_schedule(self, request: ScheduleRequest) -> tuple[Schedule, bool]:
        """Create the schedule, or update it in place; returns (schedule, created)."""
        k = self.keys
        if request.cost is not None:  # as enqueue refuses a job that could never run
            with redis_errors_mapped():
                limits = Limits.from_fields(await self.redis.hgetall(k.limits))
            refusal = limits.cost_refusal(request.cost)
            if refusal is not None:
                raise ValidationError(f"cost: {refusal} of worker {self.name!r}, so its jobs could never run",
                                      field="cost")
        now_ms = await self.now_ms()
        try:
            next_fire_ms = request.spec.fires_after(now_ms, 1)[0]
        except CroniterError as e:
            raise ValidationError(f"cron: {request.cron!r} never fires ({e})", field="cron") from None
        out = replies(await self.run("schedule_save", [k.schedules, k.schedule_ids, k.schedule(request.suffix)], [
            request.suffix, request.cron, request.timezone, request.args_json,
            "" if request.max_attempts is None else request.max_attempts,
            "" if request.timeout_ms is None else request.timeout_ms,
            1 if request.catch_up else 0, next_fire_ms, request.throttle_key,
            "" if request.cost is None else number_text(request.cost)]))
        self.notify.schedules_changed(self.name)
        return await self.get_schedule(request.suffix), bool(integer(out[0]))

    async def get_schedule(self, suffix: str) -> Schedule:
        k = self.keys
        with redis_errors_mapped():
            fields = await self.redis.hgetall(k.schedule(suffix))
            if not fields:
                raise NotFoundError(f"no schedule {job_id(self.name, suffix)!r}")
            job_suffixes = [text(s) for s in await self.redis.lrange(k.schedule_jobs(suffix), 0, -1)]
            last_jobs = []
            for job_suffix in job_suffixes:
                state, run_at = await self.redis.hmget(k.job(job_suffix), *stored("state", "run_at_ms"))
                last_jobs.append(LastJob(job_id(self.name, job_suffix), text(state) if state is not None else "purged",
                                         int_or_none(text(run_at)) if run_at is not None else None))
        return Schedule.from_fields(self.config, suffix, fields, last_jobs)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule of the worker, each with its last jobs (as ``get_schedule``)."""
        out = []
        with redis_errors_mapped():
            suffixes = sorted(text(s) for s in await self.redis.smembers(self.keys.schedule_ids))
        for suffix in suffixes:
            try:
                out.append(await self.get_schedule(suffix))
            except NotFoundError:  # deleted since
                continue
        return out

    async def delete_schedule(self, suffix: str) -> Schedule:
        schedule = await self.get_schedule(suffix)
        k = self.keys
        existed = await self.run("schedule_delete", [k.schedules, k.schedule_ids, k.schedule(suffix),
                                                     k.schedule_jobs(suffix)], [suffix])
        if not integer(existed):
            raise NotFoundError(f"no schedule {schedule.id!r}")
        return schedule

    async def set_schedule_paused(self, suffix: str, paused: bool) -> Schedule:
        k = self.keys
        next_fire_ms = ""
        if not paused:
            with redis_errors_mapped():
                fields = await self.redis.hmget(k.schedule(suffix), "cron", "timezone")
            if fields[0] is None:
                raise NotFoundError(f"no schedule {job_id(self.name, suffix)!r}")
            now_ms = await self.now_ms()
            next_fire_ms = str(cron_spec(text(fields[0]), text(fields[1])).fires_after(now_ms, 1)[0])
        out = replies(await self.run("schedule_pause", [k.schedules, k.schedule(suffix)],
                                     [suffix, "pause" if paused else "resume", next_fire_ms]))
        if text(out[0]) == "missing":
            raise NotFoundError(f"no schedule {job_id(self.name, suffix)!r}")
        if not paused:
            self.notify.schedules_changed(self.name)
        return await self.get_schedule(suffix)

    # -- the tick ----------------------------------------------------------------------
    async def plan(self, horizon_ms: int = 0, most: int = DUE_BATCH) -> TickPlan:
        """Read the schedules due now (or, within ``horizon_ms``, at the earliest next fire
        time) and compute their ticks: a plan for ``fire``. Changes nothing."""
        k = self.keys
        out = replies(await self.run("schedules_due", [k.schedules], [k.schedule_prefix, most, horizon_ms]))
        now_ms, earliest_ms, due_ms = integer(out[0]), integer(out[1]), integer(out[2])
        tick_keys: list[str] = []
        tick_args: list[ScriptArg] = []
        count = skipped = 0
        for i in range(3, len(out), 6):
            suffix, next_fire_ms, revision = text(out[i]), integer(out[i + 1]), integer(out[i + 2])
            cron, tz, catch_up = text(out[i + 3]), text(out[i + 4]), text(out[i + 5]) == "1"
            try:
                ticks, new_next_ms = due_ticks(cron_spec(cron, tz), catch_up, next_fire_ms, due_ms)
            except (CroniterError, ValueError, LookupError) as e:
                log.error("schedule %s: cannot compute its fire times (%s); it is skipped",
                          job_id(self.name, suffix), e)
                skipped += 1
                continue
            count += 1
            tick_keys += [k.schedule(suffix), k.schedule_jobs(suffix)]
            tick_args += [suffix, next_fire_ms, revision, new_next_ms, len(ticks)]
            for fire_ms in ticks:
                job_suffix = tick_job_suffix(suffix, fire_ms)
                tick_keys.append(k.job(job_suffix))
                tick_args += [job_suffix, fire_ms]
        wait_ms = -1 if earliest_ms < 0 else max(0, earliest_ms - now_ms)
        if skipped and not count:  # due but not computable: look again in a while, not in a busy loop
            wait_ms = round(MAX_IDLE_S * 1000)
        return TickPlan(self.config, now_ms, due_ms, wait_ms, count, tick_keys, tick_args)

    async def fire(self, plan: TickPlan, lead_ms: int = 0) -> TickRound:
        """Run a plan's ticks in one atomic ``tick.lua`` call, not before ``lead_ms`` ahead of
        its ``due_ms``. The jobs' runAt is their tick's time either way."""
        k = self.keys
        result = replies(await self.run("tick", [*k.queue_keys, k.schedules, *plan.keys],
                                        [*k.queue_args, plan.due_ms - lead_ms, self.config.max_attempts,
                                         "",  # the timeout: "" = the worker's live timeout
                                         plan.count, *plan.args]))
        now_ms = integer(result[0])
        if text(result[1]) == "early":
            return TickRound(now_ms, max(1, plan.due_ms - lead_ms - now_ms), 0, 0, False, early=True)
        outcomes = [integer(x) for x in result[2:]]
        round_ = TickRound(now_ms, 0, sum(n for n in outcomes if n > 0), sum(1 for n in outcomes if n < 0),
                           bool(integer(result[1])))
        if round_.wake:
            await self.notify.enqueued({self.name})
        return round_

    async def tick(self, most: int = DUE_BATCH) -> TickRound:
        """Fire the due schedules: one read, then one atomic tick script call."""
        plan = await self.plan(0, most)
        if not plan.count:
            return TickRound(plan.now_ms, plan.wait_ms, 0, 0, False)
        return await self.fire(plan)
