"""Recurring schedules: cron expressions that fire one ordinary job per tick.

A schedule is ``POST /job`` with ``cron`` (see ``parse_schedule``). Its id is
``<worker>:<suffix>``, like a job's, and the job its tick at ``fire_ms`` creates is
``<worker>:<suffix>@<fire_ms>`` (``keys.tick_job_suffix``), so a tick can never produce two
jobs, and no caller can give that id (``@`` is refused in callers' ids). Keys (built in
``keys.py``): a zset ``schedules`` of suffix -> next_fire_ms (schedules not paused), a set
``schedule-ids`` of all of them, a hash per schedule, and a short list of its latest jobs.

Fire times are computed here, in Python (croniter, on the schedule's IANA timezone);
"now" is always the Redis server's clock, read by the scripts. Each coordinator's
``Ticker`` (``ticker.py``) runs one loop per worker: ``schedules_due.lua`` reads the due schedules and
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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from .config import WorkerConfig
from .errors import ValidationError, shown
from .keys import job_id
from .model import parse_enqueue

SCHEDULE_FIELDS = ("worker", "args", "cron", "timezone", "id", "catchUp", "maxAttempts", "timeout", "throttleKey",
                   "cost")
DEFAULT_TIMEZONE = "UTC"
MISFIRE_GRACE_MS = 60_000
MAX_CATCH_UP_TICKS = 1000
MAX_SCHEDULE_SUFFIX = 180  # leaves room for "@<fire_ms>" in the tick job's id (at most 200)
NEXT_RUN_TIMES = 5
DUE_BATCH = 100
# A tick's job is created this long before the tick, with runAt at the tick's time, so that
# the dispatcher sends it as on time as any delayed job (it sleeps until runAt).
TICK_LEAD_MS = 100
MAX_CRON_STEPS = 100_000  # croniter iterations before a schedule counts as never firing
# The forms a cron may take, as every refusal shows them. Six fields put seconds first, as
# BullMQ, node-cron, Quartz and Spring do (croniter's ``second_at_beginning``).
CRON_FORMS = ("expected 5 fields (minute hour day-of-month month day-of-week), 6 fields with seconds first "
              "(second minute hour day-of-month month day-of-week), or one of @yearly, @monthly, @weekly, "
              "@daily, @hourly")
CRON_FIELD_COUNTS = (5, 6)
STABLE_ID_PREFIX = "cron-"  # a schedule posted without an id: cron-<16 hex digits of its hash>


def cron_iter(cron: str, start: datetime | None = None) -> croniter:
    """croniter over ``cron``, reading a 6th field as the seconds in front."""
    return croniter(cron, start, second_at_beginning=True)


# -- fire times ----------------------------------------------------------------------------

def _ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


class CronSpec:
    """A cron expression on an IANA timezone: its fire times as unix ms."""

    def __init__(self, cron: str, timezone: str = DEFAULT_TIMEZONE):
        self.cron = cron
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        hours = cron_iter(cron).expanded[1]  # croniter's own order: minute, hour, ..., second
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
        it = cron_iter(self.cron, self._at(after_ms))
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
        it = cron_iter(self.cron, self._at(last_ms + 1))
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


def parse_cron(value: Any) -> str:
    """A schedule's ``cron``, its fields joined by single spaces; ValidationError (showing the
    forms it may take) for anything but 5 fields, 6 with seconds first, or one @name."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"cron: must be a cron expression such as \"0 9 * * *\"; {CRON_FORMS}", field="cron")
    fields = value.split()
    cron = " ".join(fields)
    count = len(fields)
    if cron.startswith("@") and count != 1 or not cron.startswith("@") and count not in CRON_FIELD_COUNTS:
        valid, reason = False, f"it has {count} fields"
    else:
        try:
            cron_iter(cron)
            valid = croniter.is_valid(cron, second_at_beginning=True)
            reason = "croniter does not accept it"
        except (CroniterError, ValueError, KeyError, TypeError) as e:
            valid, reason = False, str(e)
    if not valid:
        raise ValidationError(f"cron: {shown(cron)} is not a valid cron expression ({reason}); {CRON_FORMS}",
                              field="cron")
    return cron


def stable_schedule_suffix(worker: str, cron: str, timezone: str, args: Any) -> str:
    """The id of a schedule posted without one: the same worker, cron, timezone and args
    (as canonical JSON: keys sorted) give the same id, so posting it again updates it."""
    canonical_args = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    digest = hashlib.sha256("\n".join((worker, cron, timezone, canonical_args)).encode()).hexdigest()
    return STABLE_ID_PREFIX + digest[:16]


def parse_schedule(body: Any, workers: Mapping[str, WorkerConfig]) -> ScheduleRequest:
    """Validate a schedule body; raise ValidationError naming the field."""
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object")
    for field in ("runAt", "delay"):
        if field in body:
            raise ValidationError(f"{field}: cannot be given with cron (a schedule runs at its cron times)",
                                  field=field)
    unknown = [k for k in body if k not in SCHEDULE_FIELDS]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown field for a schedule (expected {', '.join(SCHEDULE_FIELDS)})",
                              field=unknown[0])
    cron = parse_cron(body.get("cron"))
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
    if isinstance(suffix, str) and len(suffix) > MAX_SCHEDULE_SUFFIX:
        raise ValidationError(f"id: a schedule id is at most {MAX_SCHEDULE_SUFFIX} characters", field="id")
    # worker, args, id, maxAttempts, timeout, throttleKey, cost are checked as for any job
    job_fields = ("worker", "args", "id", "maxAttempts", "timeout", "throttleKey", "cost")
    job = parse_enqueue({k: body[k] for k in job_fields if k in body}, workers)
    if suffix is None:
        suffix = stable_schedule_suffix(job.worker, cron, tz, body.get("args", {}))
    return ScheduleRequest(
        worker=job.worker, suffix=suffix, cron=cron, timezone=tz, args_json=job.args_json, catch_up=catch_up,
        max_attempts=job.max_attempts if body.get("maxAttempts") is not None else None,
        timeout_ms=job.timeout_ms if body.get("timeout") is not None else None,
        throttle_key=job.throttle_key, cost=job.cost if body.get("cost") is not None else None,
    )
