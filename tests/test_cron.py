"""Cron schedules: fire times (DST at real boundaries, by injected times), the misfire rule,
the engine's ticks on a real Redis and on the embedded store, and the HTTP API.

The end-to-end proofs with ``redisq serve`` processes (3 coordinators racing, a restart)
are in ``test_cron_resilience.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from stores import sibling_client

from redisq.api import create_app
from redisq.config import Config, WorkerConfig
from redisq.coordinator import Coordinator
from redisq.cron import MAX_CATCH_UP_TICKS, MISFIRE_GRACE_MS, CronSpec, due_ticks, parse_schedule
from redisq.engine import Engine, ScheduleBook
from redisq.errors import ValidationError
from redisq.job_fields import decode_job_hash
from redisq.keys import COORDINATORS_KEY, WorkerKeys, tick_job_suffix
from redisq.transport import MockTransport, Response

WORKER = "digest"
KEYS = WorkerKeys(WORKER)


def local_ms(tz: str, *parts: int, fold: int = 0) -> int:
    return round(datetime(*parts, tzinfo=ZoneInfo(tz), fold=fold).timestamp() * 1000)  # type: ignore[misc]


def local_text(tz: str, ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).isoformat()


def fires(cron: str, tz: str, after_ms: int, count: int) -> list[str]:
    return [local_text(tz, ms) for ms in CronSpec(cron, tz).fires_after(after_ms, count)]


# -- fire times and daylight saving ---------------------------------------------------------

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def test_daily_local_time_across_spring_forward_loses_no_day():
    # 2026-03-29 02:00 CET the clocks jump to 03:00 CEST: 02:30 does not exist that night
    assert fires("30 2 * * *", BERLIN, local_ms(BERLIN, 2026, 3, 27, 12), 4) == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00"]
    assert fires("30 2 * * *", NEW_YORK, local_ms(NEW_YORK, 2026, 3, 7, 12), 3) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]


def test_daily_local_time_across_fall_back_fires_once():
    # 2026-10-25 03:00 CEST the clocks go back to 02:00 CET: 02:30 happens twice
    assert fires("30 2 * * *", BERLIN, local_ms(BERLIN, 2026, 10, 24, 12), 3) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    assert fires("30 1 * * *", NEW_YORK, local_ms(NEW_YORK, 2026, 10, 31, 12), 2) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    # asked from inside the repeated hour (after the first 02:30), the second 02:30 is not a tick
    assert fires("30 2 * * *", BERLIN, local_ms(BERLIN, 2026, 10, 25, 2, 10, fold=1), 1) == [
        "2026-10-26T02:30:00+01:00"]
    # every half hour of the 2 o'clock hour: twice that night, not four times
    assert fires("*/30 2 * * *", BERLIN, local_ms(BERLIN, 2026, 10, 25, 1), 3) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:00:00+01:00"]


def test_hourly_keeps_firing_every_real_hour_across_both_transitions():
    assert fires("0 * * * *", BERLIN, local_ms(BERLIN, 2026, 10, 25, 0, 30), 5) == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]
    assert fires("0 * * * *", BERLIN, local_ms(BERLIN, 2026, 3, 29, 0, 30), 3) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]
    # every second through the fall-back: 3600 more seconds of real time, none twice
    start = local_ms(BERLIN, 2026, 10, 25, 2, 59, 58)
    ticks = CronSpec("* * * * * *", BERLIN).fires_after(start, 4)
    assert [t - start for t in ticks] == [1000, 2000, 3000, 4000]


def test_two_ticks_that_land_on_the_same_instant_fire_once():
    # 02:00 does not exist on 2026-03-29; it and 03:00 are both 03:00 CEST
    assert fires("0 2,3 * * *", BERLIN, local_ms(BERLIN, 2026, 3, 28, 12), 3) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T03:00:00+02:00"]


def test_seconds_field_and_named_schedules():
    after = local_ms("UTC", 2026, 1, 1, 8, 0)
    # 6 fields: seconds first, as BullMQ, node-cron, Quartz and Spring read them
    assert fires("30 0 9 * * *", "UTC", after, 2) == ["2026-01-01T09:00:30+00:00", "2026-01-02T09:00:30+00:00"]
    assert fires("0 0 9 * * *", "UTC", after, 3) == [
        "2026-01-01T09:00:00+00:00", "2026-01-02T09:00:00+00:00", "2026-01-03T09:00:00+00:00"]
    assert fires("*/20 * * * * *", "UTC", after, 3) == [
        "2026-01-01T08:00:20+00:00", "2026-01-01T08:00:40+00:00", "2026-01-01T08:01:00+00:00"]
    assert fires("@daily", "UTC", after, 2) == ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]
    assert fires("@hourly", BERLIN, after, 1) == ["2026-01-01T10:00:00+01:00"]


def test_fires_between_walks_back_through_a_transition_like_forward():
    spec = CronSpec("30 2 * * *", BERLIN)
    first = local_ms(BERLIN, 2026, 10, 20, 0)
    forward = spec.fires_after(first, 10)
    assert spec.fires_between(first, forward[-1], 100) == forward
    assert spec.fires_between(first, forward[-1], 3) == forward[-3:]


# -- the misfire rule ---------------------------------------------------------------------

def test_ticks_missed_within_the_grace_all_fire():
    spec = CronSpec("* * * * * *")
    next_ms = local_ms("UTC", 2026, 1, 1, 0, 0, 0)
    ticks, new_next = due_ticks(spec, False, next_ms, next_ms + 3500)
    assert ticks == [next_ms, next_ms + 1000, next_ms + 2000, next_ms + 3000]
    assert new_next == next_ms + 4000


def test_a_long_outage_fires_once_for_the_missed_period():
    spec = CronSpec("* * * * *")  # every minute, coordinators away for 3 hours
    next_ms = local_ms("UTC", 2026, 1, 1, 0, 0)
    now_ms = next_ms + 3 * 3600_000 + 5_000
    assert now_ms - next_ms > MISFIRE_GRACE_MS
    ticks, new_next = due_ticks(spec, False, next_ms, now_ms)
    assert ticks == [next_ms + 3 * 3600_000]  # the latest missed tick, once
    assert new_next == next_ms + 3 * 3600_000 + 60_000


def test_catch_up_fires_every_missed_tick_up_to_the_bound():
    spec = CronSpec("* * * * *")
    next_ms = local_ms("UTC", 2026, 1, 1, 0, 0)
    ticks, _ = due_ticks(spec, True, next_ms, next_ms + 10 * 60_000 + 1)
    assert ticks == [next_ms + n * 60_000 for n in range(11)]
    ticks, new_next = due_ticks(spec, True, next_ms, next_ms + 2 * MAX_CATCH_UP_TICKS * 60_000)
    assert len(ticks) == MAX_CATCH_UP_TICKS and ticks[-1] == next_ms + 2 * MAX_CATCH_UP_TICKS * 60_000
    assert new_next == ticks[-1] + 60_000


# -- parsing ------------------------------------------------------------------------------

WORKERS = {WORKER: WorkerConfig(name=WORKER, url="http://127.0.0.1:9/digest")}


@pytest.mark.parametrize("body, field, says", [
    ({"cron": "61 * * * *"}, "cron", "not a valid cron expression"),
    ({"cron": "every morning"}, "cron", "not a valid cron expression"),
    ({"cron": "0 0 9 * * * 2027"}, "cron", "7 fields"),  # a year field: not a form redisq takes
    ({"cron": "0 9 * *"}, "cron", "4 fields"),
    ({"cron": "0 9 * * * 30"}, "cron", "not a valid cron expression"),  # seconds last: 30 is no day of week
    ({"cron": "@daily 9"}, "cron", "2 fields"),
    ({"cron": ""}, "cron", "must be a cron expression"),
    ({"cron": 9}, "cron", "must be a cron expression"),
    ({"cron": "0 9 * * *", "timezone": "Europe/Nowhere"}, "timezone", "unknown timezone"),
    ({"cron": "0 9 * * *", "timezone": "../etc/passwd"}, "timezone", "unknown timezone"),
    ({"cron": "0 9 * * *", "runAt": "2026-01-01T09:00:00Z"}, "runAt", "cannot be given with cron"),
    ({"cron": "0 9 * * *", "delay": 5}, "delay", "cannot be given with cron"),
    ({"cron": "0 9 * * *", "catchUp": "yes"}, "catchUp", "true or false"),
    ({"cron": "0 9 * * *", "id": "x" * 181}, "id", "at most 180"),
    ({"cron": "0 9 * * *", "id": "no spaces"}, "id", "must be 1 to 200"),
    ({"cron": "0 9 * * *", "maxAttempts": 0}, "maxAttempts", "whole number"),
    ({"cron": "0 9 * * *", "colour": "red"}, "colour", "unknown field"),
    ({"cron": "0 9 * * *", "worker": "nobody"}, "worker", "unknown worker"),
])
def test_bad_schedule_bodies_name_the_field_and_why(body, field, says):
    body = {"worker": WORKER, **body}
    with pytest.raises(ValidationError) as raised:
        parse_schedule(body, WORKERS)
    assert raised.value.field == field
    assert raised.value.message.startswith(f"{field}: ") and says in raised.value.message
    if field == "cron":  # every refused cron shows the forms and their field order
        assert CRON_FORMS_TEXT in raised.value.message


CRON_FORMS_TEXT = ("expected 5 fields (minute hour day-of-month month day-of-week), 6 fields with seconds first "
                   "(second minute hour day-of-month month day-of-week), or one of @yearly, @monthly, @weekly, "
                   "@daily, @hourly")


def test_a_schedule_without_an_id_gets_one_from_its_worker_cron_timezone_and_args():
    def suffix(**body: Any) -> str:
        return parse_schedule({"worker": WORKER, **body}, WORKERS).suffix

    first = suffix(cron="0 9 * * *", args={"list": "daily", "n": 1})
    assert first == suffix(cron="0  9 * * *", args={"n": 1, "list": "daily"})  # spacing, key order
    assert first == suffix(cron="0 9 * * *", args={"list": "daily", "n": 1}, timezone="UTC", maxAttempts=2)
    others = {suffix(cron="0 10 * * *", args={"list": "daily", "n": 1}),
              suffix(cron="0 9 * * *", args={"list": "daily", "n": 2}),
              suffix(cron="0 9 * * *", args={"list": "daily", "n": 1}, timezone="Europe/Berlin"),
              suffix(cron="0 9 * * *")}
    assert len(others) == 4 and first not in others
    assert suffix(cron="0 9 * * *", id="mine") == "mine"


# -- the engine: on a real Redis and on the embedded store --------------------------------

def config(**worker: Any) -> Config:
    worker.setdefault("url", "http://127.0.0.1:9/digest")
    return Config(workers={WORKER: WorkerConfig(name=WORKER, **worker)})


async def save(schedules: ScheduleBook, **body: Any) -> tuple[Any, bool]:
    body.setdefault("worker", WORKER)
    return await schedules.save(parse_schedule(body, schedules.config.workers))


async def tick_jobs(client: Any) -> dict[str, dict[str, str]]:
    """Every job a tick created, by id, with its hash."""
    out = {}
    async for key in client.scan_iter(match=KEYS.job_prefix + "*"):
        fields = decode_job_hash(await client.hgetall(key))
        if "schedule" in fields:
            out[f"{WORKER}:{key.decode()[len(KEYS.job_prefix):]}"] = fields
    return out


async def backdate(client: Any, suffix: str, next_fire_ms: int) -> None:
    """Stand-in for coordinators that were away: the stored next fire time lies in the past."""
    await client.hset(KEYS.schedule(suffix), "next_fire_ms", next_fire_ms)
    await client.zadd(KEYS.schedules, {suffix: next_fire_ms})


async def server_ms(client: Any) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_tick_creates_an_ordinary_job_the_dispatcher_claims(engine_redis):
    cfg = config(max_attempts=7, timeout_s=12)
    schedules, store = Engine(engine_redis, cfg).schedules, Engine(engine_redis, cfg)
    schedule, created = await save(schedules, cron="* * * * * *", id="every-second", args={"to": "ada"})
    assert created and schedule.id == "digest:every-second"
    first = schedule.next_fire_ms
    while await server_ms(engine_redis) < first:
        await asyncio.sleep(0.02)
    round_ = await schedules.tick(cfg.workers[WORKER])
    assert round_.fired == 1 and round_.wake
    job_suffix = tick_job_suffix("every-second", first)
    assert job_suffix == f"every-second@{first}"
    job = await store.get(f"digest:{job_suffix}")
    assert (job.state.value, job.run_at_ms, json.loads(job.args_json)) == ("scheduled", first, {"to": "ada"})
    # The worker's max_attempts at tick time; no timeout of its own, so the worker's live one.
    assert (job.max_attempts, job.timeout_ms) == (7, None)
    claim = await store.claim(cfg.workers[WORKER], 10)
    assert [(j.id, j.timeout_ms) for j in claim.jobs] == [(f"digest:{job_suffix}", 12_000)]
    after = await schedules.get("digest:every-second")
    assert after.next_fire_ms == first + 1000 and after.last_fire_ms == first
    assert [(j.id, j.state) for j in after.last_jobs] == [(f"digest:{job_suffix}", "running")]


async def test_three_racing_tickers_fire_each_tick_exactly_once(engine_redis):
    cfg = config()
    clients = [sibling_client(engine_redis) for _ in range(3)]
    try:
        racers = [Engine(c, cfg).schedules for c in clients]
        schedule, _ = await save(racers[0], cron="* * * * * *", id="race")
        deadline = schedule.next_fire_ms + 3000
        rounds = []
        while await server_ms(engine_redis) < deadline:
            rounds += await asyncio.gather(*(r.tick(cfg.workers[WORKER]) for r in racers))
            await asyncio.sleep(0.005)
        jobs = await tick_jobs(engine_redis)
        fire_times = sorted(int(job["run_at_ms"]) for job in jobs.values())
        assert fire_times == [schedule.next_fire_ms + n * 1000 for n in range(len(fire_times))]
        assert len(fire_times) in (3, 4)
        assert sum(r.fired for r in rounds) == len(jobs)
        assert sum(r.refused for r in rounds) >= 1, "the tickers really raced"
    finally:
        for c in clients:
            await c.aclose()


async def test_update_in_place_keeps_one_schedule_and_its_next_fire_time(engine_redis):
    schedules = Engine(engine_redis, config()).schedules
    first, created = await save(schedules, cron="0 9 * * *", timezone=BERLIN, id="morning", args={"v": 1})
    assert created
    again, created = await save(schedules, cron="0 9 * * *", timezone=BERLIN, id="morning", args={"v": 2})
    assert not created
    assert again.next_fire_ms == first.next_fire_ms and json.loads(again.args_json) == {"v": 2}
    moved, created = await save(schedules, cron="0 18 * * *", timezone=BERLIN, id="morning")
    assert not created and local_text(BERLIN, moved.next_fire_ms).endswith("T18:00:00+01:00")
    assert [s.id for s in await schedules.list(WORKER)] == ["digest:morning"]
    assert await engine_redis.zrange(KEYS.schedules, 0, -1, withscores=True) == [(b"morning", moved.next_fire_ms)]


async def test_an_update_made_while_a_tick_was_computed_refuses_that_tick(engine_redis):
    cfg = config()
    schedules = Engine(engine_redis, cfg).schedules
    await save(schedules, cron="* * * * *", id="changing", args={"v": 1})
    now = await server_ms(engine_redis)
    await backdate(engine_redis, "changing", now - 1000)
    registered = schedules.engine.scripts.registered
    real_due = registered["schedules_due"]

    async def due_then_update(**kwargs: Any) -> Any:
        out = await real_due(**kwargs)
        await save(schedules, cron="* * * * *", id="changing", args={"v": 2})  # revision moves on
        return out

    registered["schedules_due"] = due_then_update
    round_ = await schedules.tick(cfg.workers[WORKER])
    assert (round_.fired, round_.refused) == (0, 1)
    assert await tick_jobs(engine_redis) == {}
    registered["schedules_due"] = real_due
    round_ = await schedules.tick(cfg.workers[WORKER])
    assert round_.fired == 1
    (job,) = (await tick_jobs(engine_redis)).values()
    assert json.loads(job["args"]) == {"v": 2}


async def test_after_a_long_outage_a_schedule_fires_once_then_goes_on(engine_redis):
    cfg = config()
    schedules = Engine(engine_redis, cfg).schedules
    await save(schedules, cron="* * * * * *", id="missed")
    await save(schedules, cron="* * * * * *", id="caught-up", catchUp=True)
    now = await server_ms(engine_redis)
    away_since = (now // 1000 - 120) * 1000  # two minutes of ticks missed
    await backdate(engine_redis, "missed", away_since)
    await backdate(engine_redis, "caught-up", away_since)
    round_ = await schedules.tick(cfg.workers[WORKER])
    jobs = await tick_jobs(engine_redis)
    missed = [j for j in jobs.values() if j["schedule"] == "missed"]
    caught_up = sorted(int(j["run_at_ms"]) for j in jobs.values() if j["schedule"] == "caught-up")
    assert len(missed) == 1 and int(missed[0]["run_at_ms"]) >= away_since + 119_000
    assert caught_up[0] == away_since and len(caught_up) >= 120
    assert caught_up == [away_since + n * 1000 for n in range(len(caught_up))]
    assert round_.fired == 1 + len(caught_up)
    for suffix in ("missed", "caught-up"):
        assert (await schedules.get(f"digest:{suffix}")).next_fire_ms > round_.now_ms


async def test_a_short_outage_fires_every_missed_tick(engine_redis):
    cfg = config()
    schedules = Engine(engine_redis, cfg).schedules
    await save(schedules, cron="* * * * * *", id="restart")
    now = await server_ms(engine_redis)
    away_since = (now // 1000 - 5) * 1000
    await backdate(engine_redis, "restart", away_since)
    await schedules.tick(cfg.workers[WORKER])
    fire_times = sorted(int(j["run_at_ms"]) for j in (await tick_jobs(engine_redis)).values())
    assert fire_times[:6] == [away_since + n * 1000 for n in range(6)]


async def test_pause_stops_ticks_and_resume_goes_on_from_now(engine_redis):
    cfg = config()
    schedules = Engine(engine_redis, cfg).schedules
    await save(schedules, cron="* * * * * *", id="sleepy")
    paused = await schedules.set_paused("digest:sleepy", True)
    assert paused.paused and paused.next_run_times() == []
    await backdate(engine_redis, "sleepy", 1000)  # even a due time in the zset is refused
    await engine_redis.zrem(KEYS.schedules, "sleepy")
    assert (await schedules.tick(cfg.workers[WORKER])).fired == 0
    resumed = await schedules.set_paused("digest:sleepy", False)
    now = await server_ms(engine_redis)
    assert not resumed.paused and now < resumed.next_fire_ms <= now + 1000
    assert await tick_jobs(engine_redis) == {}


async def test_delete_stops_ticks_and_keeps_the_jobs_made(engine_redis):
    cfg = config()
    schedules = Engine(engine_redis, cfg).schedules
    await save(schedules, cron="* * * * * *", id="gone")
    await backdate(engine_redis, "gone", await server_ms(engine_redis) - 10)
    assert (await schedules.tick(cfg.workers[WORKER])).fired == 1
    await schedules.delete("digest:gone")
    assert await schedules.list() == []
    await asyncio.sleep(1.1)
    assert (await schedules.tick(cfg.workers[WORKER])).fired == 0
    assert len(await tick_jobs(engine_redis)) == 1
    for key in (KEYS.schedules, KEYS.schedule_ids, KEYS.schedule("gone"), KEYS.schedule_jobs("gone")):
        assert not await engine_redis.exists(key), key


# -- the HTTP API -------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def api(redis: Any, calls: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    def respond(url: str, body: bytes, headers: Any) -> Response:
        calls.append({**json.loads(body), "at_ms": time.time() * 1000})
        return Response(200)

    coordinator = Coordinator(Config(workers=WORKERS, secret="cron-test", shutdown_grace_s=0.2),
                              redis=redis, transport=MockTransport(respond))
    await coordinator.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(coordinator, manage_lifecycle=False)),
                                     base_url="http://redisq.test") as client:
            yield client
    finally:
        await asyncio.wait_for(coordinator.stop(), 10)


async def test_post_job_with_cron_creates_then_updates_and_ticks_reach_the_worker(engine_redis):
    calls: list[dict[str, Any]] = []
    async with api(engine_redis, calls) as client:
        resp = await client.post("/job", json={"worker": WORKER, "cron": "* * * * * *", "id": "hello",
                                               "args": {"n": 1}})
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert body["id"] == "digest:hello" and body["timezone"] == "UTC" and len(body["nextRunTimes"]) == 5
        times = [datetime.fromisoformat(t).timestamp() for t in body["nextRunTimes"]]
        assert [b - a for a, b in itertools.pairwise(times)] == [1.0] * 4
        resp = await client.post("/job", json={"worker": WORKER, "cron": "* * * * * *", "id": "hello",
                                               "args": {"n": 2}})
        assert resp.status_code == 200 and resp.json()["args"] == {"n": 2}

        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(calls) >= 2
        assert all(c["jobId"].startswith("digest:hello@") and c["args"] == {"n": 2} for c in calls)
        fire_ms = [int(c["jobId"].rsplit("@", 1)[1]) for c in calls]
        assert len(set(fire_ms)) == len(fire_ms)
        assert all(c["at_ms"] >= f - 2 for c, f in zip(calls, fire_ms, strict=True))

        got = (await client.get("/schedule/digest:hello")).json()
        assert got["lastFireAt"] is not None and got["lastJobs"][0]["state"] in ("succeeded", "running", "scheduled")
        job = (await client.get(f"/job/{got['lastJobs'][-1]['id']}")).json()
        assert job["state"] == "succeeded"
        listed = (await client.get("/schedules", params={"worker": WORKER})).json()["schedules"]
        assert [s["id"] for s in listed] == ["digest:hello"]


async def test_posting_the_same_schedule_without_an_id_twice_keeps_one_schedule(engine_redis):
    async with api(engine_redis, []) as client:
        body = {"worker": WORKER, "cron": "0 0 9 * * *", "timezone": "Europe/Berlin", "args": {"list": "daily"}}
        first = await client.post("/job", json=body)
        assert first.status_code == 201, first.text
        again = await client.post("/job", json={**body, "maxAttempts": 2})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"] and again.json()["maxAttempts"] == 2
        assert again.json()["nextRunAt"] == first.json()["nextRunAt"]
        assert [s["id"] for s in (await client.get("/schedules")).json()["schedules"]] == [first.json()["id"]]
        times = [datetime.fromisoformat(t) for t in first.json()["nextRunTimes"]]
        assert all(t.astimezone(ZoneInfo("Europe/Berlin")).time().isoformat() == "09:00:00" for t in times)
        assert [(b - a).days for a, b in itertools.pairwise(times)] == [1] * 4  # daily, not 60 a month


async def test_invalid_schedules_are_422_and_create_nothing(engine_redis):
    async with api(engine_redis, []) as client:
        for body, field in [
            ({"cron": "0 25 * * *"}, "cron"),
            ({"cron": "0 9 * * *", "timezone": "Atlantis/Capital"}, "timezone"),
            ({"cron": "0 9 * * *", "runAt": "2026-01-01T00:00:00Z"}, "runAt"),
            ({"cron": "0 9 * * *", "delay": 10}, "delay"),
            ({"cron": "0 0 30 2 *"}, "cron"),  # February 30th never comes
        ]:
            resp = await client.post("/job", json={"worker": WORKER, "id": "bad", **body})
            assert resp.status_code == 422, resp.text
            assert resp.json()["field"] == field and resp.json()["error"].startswith(f"{field}: ")
        resp = await client.post("/jobs", json={"jobs": [{"worker": WORKER}, {"worker": WORKER, "cron": "* * * * *"}]})
        assert resp.status_code == 422 and resp.json() == {
            "error": "jobs[1].cron: schedules are created one at a time with POST /job, not in a batch",
            "field": "cron", "index": 1}
        assert (await client.get("/schedules")).json() == {"schedules": []}
        # Nothing but the worker's live limits, which the coordinator seeded at start, and its
        # layout mark (migrate.py: no job hash to rename).
        stored = [k async for k in engine_redis.scan_iter(match="redisq:*") if k != COORDINATORS_KEY.encode()]
        assert sorted(stored) == [b"redisq:{digest}:layout", b"redisq:{digest}:limits"]  # and the coordinator's
        resp = await client.get("/schedules", params={"worker": "nobody"})
        assert resp.status_code == 422 and resp.json()["field"] == "worker"


async def test_schedule_routes_answer_404_for_unknown_ids_and_pause_resume_delete(engine_redis):
    async with api(engine_redis, []) as client:
        for method, path in [("GET", "/schedule/digest:none"), ("DELETE", "/schedule/digest:none"),
                             ("POST", "/schedule/digest:none/pause"), ("POST", "/schedule/digest:none/resume"),
                             ("GET", "/schedule/nobody:x"), ("GET", "/schedule/not-an-id")]:
            resp = await client.request(method, path)
            assert resp.status_code == 404, (method, path, resp.text)
        assert (await client.post("/job", json={"worker": WORKER, "cron": "@daily", "id": "d"})).status_code == 201
        paused = (await client.post("/schedule/digest:d/pause")).json()
        assert paused["paused"] is True and paused["nextRunAt"] is None and paused["nextRunTimes"] == []
        resumed = (await client.post("/schedule/digest:d/resume")).json()
        assert resumed["paused"] is False and resumed["nextRunAt"].endswith("T00:00:00.000Z")
        deleted = await client.delete("/schedule/digest:d")
        assert deleted.status_code == 200 and deleted.json()["id"] == "digest:d"
        assert (await client.get("/schedule/digest:d")).status_code == 404


async def test_a_schedule_passes_its_throttle_key_and_cost_to_every_tick_and_a_cost_above_the_burst_is_422(
        engine_redis):
    cfg = config(rate=100.0, burst=20)
    schedules, store = Engine(engine_redis, cfg).schedules, Engine(engine_redis, cfg)
    await store.seed_limits(cfg.workers[WORKER])
    with pytest.raises(ValidationError, match="cost: is 25, above the burst of 20 tokens"):
        await save(schedules, cron="* * * * * *", id="too-costly", cost=25)
    assert await engine_redis.exists(KEYS.schedule("too-costly")) == 0
    schedule, _ = await save(schedules, cron="* * * * * *", id="per-shop", throttleKey="shop-a", cost=5)
    assert (schedule.throttle_key, schedule.cost) == ("shop-a", 5)
    while await server_ms(engine_redis) < schedule.next_fire_ms:
        await asyncio.sleep(0.02)
    assert (await schedules.tick(cfg.workers[WORKER])).fired == 1
    job = await store.get(f"{WORKER}:{tick_job_suffix('per-shop', schedule.next_fire_ms)}")
    assert (job.throttle_key, job.cost) == ("shop-a", 5)
    assert (await store.worker(WORKER).state()).scheduled == 1  # the tick's job is counted
