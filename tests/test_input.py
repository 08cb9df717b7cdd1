"""Hostile and careless input through the API: every bad field is a 422 that names it, its
echo is safe to send, and nothing invalid is stored (on a real Redis and on the embedded store).

Bodies are sent as raw JSON text, as a hostile caller would: ``\\ud800`` is a lone surrogate
once Python's JSON parser has read it, and an integer of 400 digits is a Python int that no
float can hold.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from redisq.keys import WorkerKeys

from test_api import WORKER, Api, iso_ms, running_api, server_ms, worker_config

HUGE = "1" + "0" * 400  # >= 2**1024: float() of it overflows
KEYS = WorkerKeys(WORKER)


def iso_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send(api: Api, method: str, path: str, text: str, headers: dict[str, str] | None = None) -> Any:
    return await api.client.request(method, path, content=text.encode(),
                                    headers={"Content-Type": "application/json", **(headers or {})})


async def stored_keys(api: Api) -> set[str]:
    return {key.decode() async for key in api.redis.scan_iter(match="redisq:*")}


# -- item 8: lone surrogates are echoed escaped, never a 500 --------------------------------

SURROGATE_BODIES = [
    ("POST", "/job", '{"worker": "send-email", "\\ud800": 1}', "\\ud800"),
    ("POST", "/job", '{"worker": "send-email", "cron": "* * * * *", "\\udfff": 1}', "\\udfff"),
    ("POST", "/job", '{"worker": "send-email", "cron": "\\ud800 * * * *"}', "cron"),
    ("POST", "/jobs", '{"jobs": [{"worker": "send-email", "\\ud800x": 1}]}', "\\ud800x"),
    ("POST", "/jobs", '{"jobs": [], "\\ud800": 1}', "\\ud800"),
    ("PATCH", f"/workers/{WORKER}", '{"\\ud800": 1}', "\\ud800"),
    ("POST", "/job", '{"worker": "send-email", "throttleKey": "\\ud800"}', "throttleKey"),
    ("POST", "/job", '{"worker": "send-email", "cron": "* * * * *", "timezone": "\\ud800"}', "timezone"),
]


@pytest.mark.parametrize("method, path, text, field", SURROGATE_BODIES, ids=[b[2] for b in SURROGATE_BODIES])
async def test_a_lone_surrogate_in_a_field_is_a_422_that_shows_it_escaped(engine_redis, method, path, text, field):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=2.0)) as api:
        before = await stored_keys(api)
        resp = await send(api, method, path, text)
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["field"] == field
        assert "\\ud" in body["error"] and body["error"].isascii()  # the surrogate, escaped as text
        assert await stored_keys(api) == before


async def test_a_lone_surrogate_in_a_receipt_is_answered_and_the_job_stays_readable(engine_redis):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        auth = {"Authorization": f"Bearer {call['receiptToken']}"}
        resp = await send(api, "POST", "/job/send-email:r1/receipt", '{"status": "failure", "\\ud800": 1}', auth)
        assert resp.status_code == 422 and resp.json()["field"] == "\\ud800", resp.text
        resp = await send(api, "POST", "/job/send-email:r1/receipt",
                          '{"status": "failure", "retry": false, "error": "bad \\ud800 byte"}', auth)
        assert resp.status_code == 200, resp.text
        job = await api.get("send-email:r1")
        assert job["state"] == "dead" and job["lastError"] == "bad \\ud800 byte"


# -- items 9 and 10: huge numbers are a 422 naming the field, and nothing is stored --------

HUGE_ENQUEUES = [
    ('{"worker": "send-email", "delay": %s}', "delay"),
    ('{"worker": "send-email", "runAt": %s}', "runAt"),
    ('{"worker": "send-email", "runAt": -%s}', "runAt"),
    ('{"worker": "send-email", "timeout": %s}', "timeout"),
    ('{"worker": "send-email", "cost": %s}', "cost"),
    ('{"worker": "send-email", "maxAttempts": %s}', "maxAttempts"),
    ('{"worker": "send-email", "cost": 1e400}', "cost"),  # Python's JSON parser reads it as inf
    ('{"worker": "send-email", "timeout": -Infinity}', "timeout"),
    ('{"worker": "send-email", "delay": NaN}', "delay"),
    ('{"jobs": [{"worker": "send-email"}, {"worker": "send-email", "delay": %s}]}', "delay"),
    ('{"worker": "send-email", "id": "big", "cron": "* * * * *", "maxAttempts": %s}', "maxAttempts"),
    ('{"worker": "send-email", "id": "big", "cron": "* * * * *", "timeout": %s}', "timeout"),
    ('{"worker": "send-email", "id": "big", "cron": "* * * * *", "cost": %s}', "cost"),
]


@pytest.mark.parametrize("template, field", HUGE_ENQUEUES, ids=[t for t, _ in HUGE_ENQUEUES])
async def test_a_huge_number_in_an_enqueue_or_a_schedule_is_a_422_and_stores_nothing(engine_redis, template, field):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=2.0)) as api:
        before = await stored_keys(api)
        path = "/jobs" if template.startswith('{"jobs"') else "/job"
        resp = await send(api, "POST", path, template.replace("%s", HUGE))
        assert resp.status_code == 422, resp.text
        assert resp.json()["field"] == field and resp.json()["error"].startswith(
            f"{'jobs[1].' if path == '/jobs' else ''}{field}: must be")
        assert len(resp.json()["error"]) < 300  # the value is quoted cut short, not 400 digits
        assert await stored_keys(api) == before
        for method, route in (("GET", "/schedules"), ("GET", f"/schedule/{WORKER}:big"),
                              ("POST", f"/schedule/{WORKER}:big/pause"), ("DELETE", f"/schedule/{WORKER}:big")):
            resp = await api.client.request(method, route)
            assert resp.status_code in (200, 404), (method, route, resp.text)
        assert (await api.client.get("/schedules")).json() == {"schedules": []}


@pytest.mark.parametrize("field", ["rate", "burst", "totalRate", "totalBurst", "concurrency", "timeout"])
@pytest.mark.parametrize("number", [HUGE, "-" + HUGE, "1e400"])
async def test_a_huge_number_in_a_patch_is_a_422_and_changes_nothing(engine_redis, field, number):
    async with running_api(engine_redis, dispatch=False, worker=worker_config(rate=2.0, total_rate=5.0)) as api:
        before = (await api.client.get(f"/workers/{WORKER}")).json()["limits"]
        resp = await send(api, "PATCH", f"/workers/{WORKER}", f'{{"{field}": {number}}}')
        assert resp.status_code == 422, resp.text
        assert resp.json()["field"] == field and resp.json()["error"].startswith(f"{field}: must be")
        assert (await api.client.get(f"/workers/{WORKER}")).json()["limits"] == before


@pytest.mark.parametrize("number", [HUGE, "-" + HUGE, "1e400"])
async def test_a_huge_retry_after_in_a_receipt_is_a_422_and_the_attempt_still_runs(engine_redis, number):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        resp = await send(api, "POST", "/job/send-email:r1/receipt", f'{{"status": "failure", "retryAfter": {number}}}',
                          {"Authorization": f"Bearer {call['receiptToken']}"})
        assert resp.status_code == 422 and resp.json()["field"] == "retryAfter", resp.text
        assert (await api.get("send-email:r1"))["state"] == "running"


# -- item 11: a schedule tick's job id is out of callers' reach ------------------------------

async def test_a_caller_cannot_take_the_id_of_a_schedule_ticks_job(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/job", json={"worker": WORKER, "id": "digest", "cron": "* * * * * *",
                                                   "args": {"from": "schedule"}})
        assert resp.status_code == 201, resp.text
        next_ms = iso_ms(resp.json()["nextRunAt"])
        # Every form a caller could try for that tick's job id is refused, or is another job.
        tick_id_taken = []
        for suffix in (f"digest@{next_ms}", f"digest:{next_ms}", f"digest{next_ms}"):
            resp = await api.client.post("/job", json={"worker": WORKER, "id": suffix, "delay": 3600,
                                                       "args": {"from": "caller"}})
            assert resp.status_code in (201, 422), resp.text
            if resp.status_code == 422:
                assert resp.json()["field"] == "id"
            else:
                tick_id_taken.append(resp.json()["id"])
        resp = await api.client.post("/jobs", json={"jobs": [{"worker": WORKER, "id": f"digest@{next_ms}"}]})
        assert resp.status_code == 422 and resp.json()["field"] == "id", resp.text

        while await server_ms(engine_redis) < next_ms:
            await asyncio.sleep(0.02)
        round_ = await api.coordinator.engine.schedules.tick(api.coordinator.config.workers[WORKER])
        assert round_.fired == 1  # the tick made its own job
        schedule = (await api.client.get(f"/schedule/{WORKER}:digest")).json()
        (tick_job,) = schedule["lastJobs"]
        assert tick_job["id"] not in tick_id_taken and tick_job["runAt"] == iso_text(next_ms)
        job = await api.get(tick_job["id"])
        assert job["args"] == {"from": "schedule"} and job["state"] == "scheduled"
