"""An operator finds jobs and fixes them: ``GET /jobs`` by worker and state (and throttle
key), paged by cursor; a job's attempt history; retrying dead or cancelled jobs (one, by
ids, or all of a state in slices, with the progress readable from any coordinator);
deleting finished ones. On a real Redis and on the embedded store."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from redisq.config import Backoff
from redisq.job_fields import HISTORY_FIELDS, stored_job_fields
from redisq.keys import WorkerKeys
from redisq.transport import Response

from test_api import WORKER, Api, iso_ms, running_api, worker_config


def answer(status: int, body: bytes = b"") -> Any:
    return lambda call: Response(status, body)


async def listing(api: Api, state: str, **params: Any) -> dict[str, Any]:
    resp = await api.client.get("/jobs", params={"worker": WORKER, "state": state, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def every_job(api: Api, state: str, limit: int, **params: Any) -> list[str]:
    """The ids of every job in the state, page by page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = await listing(api, state, limit=limit, **({"cursor": cursor} if cursor else {}), **params)
        ids += [job["id"] for job in page["jobs"]]
        cursor = page["next"]
        assert len(page["jobs"]) <= limit
        if cursor is None:
            return ids


async def until_dead(api: Api, count: int, within_s: float = 10.0) -> dict[str, Any]:
    async def all_dead() -> dict[str, Any] | None:
        page = await listing(api, "dead", limit=1)
        return page if page["counts"]["dead"] == count else None
    return await api.until(f"{count} dead", all_dead, within_s)


async def test_listings_by_state_page_through_every_job_in_order(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        later = [await api.enqueue(id=f"later-{n}", delay=100 + n) for n in range(7)]
        keyed = [await api.enqueue(id=f"shop-{n}", delay=50 + n, throttleKey="shop-a") for n in range(3)]
        page = await listing(api, "scheduled", limit=4)
        assert page["counts"] == {"scheduled": 10, "running": 0, "retrying": 0, "succeeded": 0, "dead": 0,
                                  "cancelled": 0}
        # soonest first for waiting jobs
        expected = [j["id"] for j in sorted(keyed + later, key=lambda j: iso_ms(j["runAt"]))]
        assert await every_job(api, "scheduled", limit=4) == expected
        assert await every_job(api, "scheduled", limit=1000) == expected
        assert await every_job(api, "scheduled", limit=2, throttleKey="shop-a") == [j["id"] for j in keyed]
        assert (await listing(api, "scheduled", throttleKey="shop-b"))["jobs"] == []
        assert (await listing(api, "dead"))["jobs"] == []
        listed = (await listing(api, "scheduled", limit=1))["jobs"][0]
        assert "history" not in listed and listed["id"] == expected[0] and listed["state"] == "scheduled"

        # cancelled: newest first; a job that left its state leaves its listing
        for job in later[:3]:
            assert (await api.client.delete(f"/job/{job['id']}")).status_code == 200
        assert await every_job(api, "cancelled", limit=2) == [j["id"] for j in reversed(later[:3])]
        assert len(await every_job(api, "scheduled", limit=3)) == 7


async def test_a_page_goes_on_after_its_last_job_even_when_that_job_has_left_since(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        jobs = [await api.enqueue(id=f"j{n}", delay=100 + n) for n in range(6)]
        first = await listing(api, "scheduled", limit=3)
        assert [j["id"] for j in first["jobs"]] == [j["id"] for j in jobs[:3]]
        await api.client.delete(f"/job/{jobs[2]['id']}")  # the page's last job is cancelled
        second = await listing(api, "scheduled", limit=3, cursor=first["next"])
        assert [j["id"] for j in second["jobs"]] == [j["id"] for j in jobs[3:]]
        assert second["next"] is None


async def test_scheduled_jobs_due_at_the_same_ms_are_listed_once_each_in_the_order_they_leave(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        run_at = "2030-01-01T00:00:00.000Z"
        bodies = [{"worker": WORKER, "id": f"j{n:02}", "runAt": run_at, **({"throttleKey": "shop-a"} if n % 3 else {})}
                  for n in range(30)]
        resp = await api.client.post("/jobs", json={"jobs": list(reversed(bodies))})  # enqueued j29 first
        assert resp.status_code == 201, resp.text
        ids = [f"{WORKER}:{b['id']}" for b in reversed(bodies)]
        unkeyed = [i for i, b in zip(ids, reversed(bodies), strict=True) if "throttleKey" not in b]
        keyed = [i for i in ids if i not in unkeyed]
        # the jobs without a throttle key in the order enqueued (the order they are dispatched in),
        # then those with one; every page of 1, 3 or 7 leads on to the next without a repeat
        for limit in (1, 3, 7, 1000):
            assert await every_job(api, "scheduled", limit=limit) == unkeyed + sorted(keyed)
            assert await every_job(api, "scheduled", limit=limit, throttleKey="shop-a") == keyed
        # the page's last job leaves (cancelled): the next page starts after where it was
        for throttle_key, expected in (("", unkeyed), ("shop-a", keyed)):
            first = await listing(api, "scheduled", limit=3, **({"throttleKey": throttle_key} if throttle_key else {}))
            assert [j["id"] for j in first["jobs"]] == expected[:3]
            assert (await api.client.delete(f"/job/{expected[2]}")).status_code == 200
            second = await listing(api, "scheduled", limit=3, cursor=first["next"],
                                   **({"throttleKey": throttle_key} if throttle_key else {}))
            assert [j["id"] for j in second["jobs"]] == expected[3:6]
            expected.remove(expected[2])
        later = await api.enqueue(id="later", runAt="2030-01-01T00:00:00.001Z")
        earlier = await api.enqueue(id="earlier", runAt="2029-12-31T23:59:59.999Z", throttleKey="shop-a")
        listed = await every_job(api, "scheduled", limit=4)
        assert listed == [earlier["id"], *unkeyed, *sorted(keyed), later["id"]]
        assert (await listing(api, "scheduled", limit=1))["counts"]["scheduled"] == 30


async def test_the_scheduled_listing_passes_over_retrying_jobs_that_wait_in_the_same_queues(
        engine_redis, monkeypatch):
    from redisq.engine import listings

    answers = {"status": 500}
    worker = worker_config(max_attempts=3, backoff=Backoff(initial_s=100.0, factor=2.0, jitter=False))
    async with running_api(engine_redis, lambda call: Response(answers["status"]), worker=worker) as api:
        bodies = [{"worker": WORKER, "id": f"r{n:02}", **({"throttleKey": "shop-a"} if n % 3 == 0 else {})}
                  for n in range(30)]
        assert (await api.client.post("/jobs", json={"jobs": bodies})).status_code == 201

        async def all_retrying() -> bool:
            return (await listing(api, "retrying", limit=1))["counts"]["retrying"] == 30
        await api.until("30 retrying", all_retrying, within_s=10)
        waiting = [await api.enqueue(id=f"s{n}", delay=1000 + n, **({"throttleKey": "shop-a"} if n % 2 else {}))
                   for n in range(6)]
        expected = [j["id"] for j in waiting]
        assert await every_job(api, "scheduled", limit=2) == expected
        assert await every_job(api, "scheduled", limit=2, throttleKey="shop-a") == expected[1::2]
        assert len(await every_job(api, "retrying", limit=1000)) == 30
        # a call looks at few entries past the page: a page that found none says where to go on
        monkeypatch.setattr(listings, "SKIPPED_PER_CALL", 3)
        monkeypatch.setattr(listings, "SCHEDULED_CALLS_PER_PAGE", 2)
        first = await listing(api, "scheduled", limit=2)
        assert first["jobs"] == [] and first["next"] is not None
        assert await every_job(api, "scheduled", limit=2) == expected
        assert await every_job(api, "scheduled", limit=1, throttleKey="shop-a") == expected[1::2]


async def test_an_earlier_versions_index_entries_of_scheduled_jobs_list_nothing_twice_and_go_as_they_leave(
        engine_redis):
    keys = WorkerKeys(WORKER)
    async with running_api(engine_redis, dispatch=False) as api:
        plain = await api.enqueue(id="plain", delay=100)
        keyed = await api.enqueue(id="keyed", delay=101, throttleKey="shop-a")
        assert await engine_redis.zrange(keys.state_index("scheduled"), 0, -1) == [b"keyed"]
        assert await engine_redis.exists(keys.state_index("scheduled", "shop-a")) == 0
        # what the earlier version indexed as well: every scheduled job, and per throttle key
        await engine_redis.zadd(keys.state_index("scheduled"), {"plain": iso_ms(plain["runAt"])})
        await engine_redis.zadd(keys.state_index("scheduled", "shop-a"), {"keyed": iso_ms(keyed["runAt"])})
        assert await every_job(api, "scheduled", limit=1) == [plain["id"], keyed["id"]]
        for job in (plain, keyed):
            assert (await api.client.delete(f"/job/{job['id']}")).status_code == 200
        assert await engine_redis.exists(keys.state_index("scheduled"), keys.state_index("scheduled", "shop-a")) == 0
        assert await every_job(api, "scheduled", limit=1) == []


async def test_bad_listing_parameters_are_422_naming_the_parameter(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        cases = [
            ({"state": "dead"}, "worker"), ({"worker": "nope", "state": "dead"}, "worker"),
            ({"worker": WORKER, "state": "zombie"}, "state"), ({"worker": WORKER}, "state"),
            ({"worker": WORKER, "state": "dead", "limit": "0"}, "limit"),
            ({"worker": WORKER, "state": "dead", "limit": "1001"}, "limit"),
            ({"worker": WORKER, "state": "dead", "limit": "ten"}, "limit"),
            ({"worker": WORKER, "state": "dead", "cursor": "not-a-cursor"}, "cursor"),
            ({"worker": WORKER, "state": "dead", "colour": "red"}, "colour"),
        ]
        for params, field in cases:
            resp = await api.client.get("/jobs", params=params)
            assert resp.status_code == 422, (params, resp.text)
            assert resp.json()["field"] == field, (params, resp.text)
        for n in range(3):
            await api.enqueue(id=f"j{n}", delay=100)
        cursor = (await listing(api, "scheduled", limit=1))["next"]
        resp = await api.client.get("/jobs", params={"worker": WORKER, "state": "dead", "cursor": cursor})
        assert resp.status_code == 422 and "another listing" in resp.json()["error"]

        # cursors that look like one but are not: a score that is no number, a scheduled
        # listing's without the zset it is in (as an earlier version wrote them) or in the
        # index on a throttle key's listing, another listing's with one
        def forged(state: str, key: str, score: str, *place: str) -> str:
            raw = json.dumps([WORKER, state, key, score, *place], separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).decode().rstrip("=")
        for state, key, cursor in [("scheduled", "", forged("scheduled", "", "NaN", "x", "q")),
                                   ("dead", "", forged("dead", "", "Infinity", "x")),
                                   ("scheduled", "", forged("scheduled", "", "1", "j0")),
                                   ("scheduled", "", forged("scheduled", "", "1", "x", "z")),
                                   ("scheduled", "k", forged("scheduled", "k", "1", "x", "i")),
                                   ("dead", "", forged("dead", "", "1", "x", "q"))]:
            resp = await api.client.get("/jobs", params={"worker": WORKER, "state": state, "cursor": cursor,
                                                          **({"throttleKey": key} if key else {})})
            assert resp.status_code == 422 and resp.json()["field"] == "cursor", (state, cursor, resp.text)
        assert (await listing(api, "scheduled", cursor=forged("scheduled", "", "1", "x", "q")))["counts"]


async def test_a_jobs_history_shows_every_attempt_with_its_status_error_and_coordinator(engine_redis):
    answers = iter([Response(500, b"smtp down"), Response(404, b"gone"), Response(200, b'{"sent":1}')])
    worker = worker_config(max_attempts=3, permanent_statuses=frozenset())
    async with running_api(engine_redis, lambda call: next(answers), worker=worker) as api:
        job = await api.enqueue(id="h1")
        assert job["history"] == []
        done = await api.state(job["id"], "succeeded", within_s=10)
        history = done["history"]
        assert [(a["attempt"], a["outcome"], a["status"]) for a in history] == [
            (1, "failed", 500), (2, "failed", 404), (3, "succeeded", 200)]
        assert history[0]["error"] == "HTTP 500: smtp down" and history[2]["error"] is None
        coordinator_id = api.coordinator.engine.coordinator_id
        for a in history:
            assert a["coordinator"] == coordinator_id
            assert iso_ms(a["startedAt"]) <= iso_ms(a["endedAt"])
            assert a["durationMs"] == iso_ms(a["endedAt"]) - iso_ms(a["startedAt"])
        assert iso_ms(history[0]["endedAt"]) <= iso_ms(history[1]["startedAt"])


async def test_history_keeps_the_last_25_attempts(engine_redis):
    worker = worker_config(max_attempts=30, permanent_statuses=frozenset(),
                           backoff=Backoff(initial_s=0.01, factor=1.0, jitter=False))
    async with running_api(engine_redis, answer(500), worker=worker) as api:
        job = await api.enqueue(id="many", maxAttempts=28)
        done = await api.state(job["id"], "dead", within_s=60)
        assert done["attempts"] == 28
        assert [a["attempt"] for a in done["history"]] == list(range(4, 29))
        # each kept as a JSON text under the short names (README, "Sizing maxmemory")
        entries = [json.loads(e) for e in await engine_redis.lrange(WorkerKeys(WORKER).history("many"), 0, -1)]
        assert len(entries) == 25 and all(set(e) <= set(HISTORY_FIELDS.values()) for e in entries)
        assert [e[HISTORY_FIELDS["attempt"]] for e in entries] == list(range(4, 29))


async def test_retry_runs_a_dead_job_again_with_its_attempts_starting_over(engine_redis):
    answers = {"status": 404}
    async with running_api(engine_redis, lambda call: Response(answers["status"]),
                           worker=worker_config(max_attempts=2)) as api:
        job = await api.enqueue(id="r1", args={"n": 1})
        dead = await api.state(job["id"], "dead", within_s=10)
        assert dead["attempts"] == 2
        answers["status"] = 200
        resp = await api.client.post(f"/job/{job['id']}/retry", json={"args": {"n": 2}})
        assert resp.status_code == 200, resp.text
        retried = resp.json()
        assert retried["state"] in ("scheduled", "running", "succeeded") and retried["args"] == {"n": 2}
        done = await api.state(job["id"], "succeeded", within_s=10)
        assert done["attempts"] == 1 and done["lastError"] is None
        assert [(a["attempt"], a["outcome"]) for a in done["history"]] == [(1, "failed"), (2, "failed"),
                                                                           (1, "succeeded")]
        assert api.calls[-1]["args"] == {"n": 2}
        page = await listing(api, "succeeded")
        assert page["counts"]["dead"] == 0 and page["counts"]["succeeded"] == 1
        # a finished job that is not dead or cancelled, an unknown one, a running one
        assert (await api.client.post(f"/job/{job['id']}/retry")).status_code == 409
        assert (await api.client.post(f"/job/{WORKER}:nope/retry")).status_code == 404
        assert (await api.client.post("/job/nope/retry")).status_code == 404


async def test_a_late_receipt_of_an_attempt_from_before_a_retry_does_not_settle_the_new_one(engine_redis):
    async with running_api(engine_redis, worker=worker_config(max_attempts=1)) as api:  # 202: receipts later
        job = await api.enqueue(id="late")
        old_call = await api.call_for(job["id"])
        await api.client.delete(f"/job/{job['id']}")
        assert (await api.client.post(f"/job/{job['id']}/retry")).status_code == 200
        await api.call_for(job["id"], attempt=1, within_s=3)
        await api.until("second dispatch", lambda: len(api.calls) == 2)
        resp = await api.receipt(job["id"], {"status": "success"}, old_call["receiptToken"])
        assert resp.status_code == 409, resp.text
        assert (await api.get(job["id"]))["state"] == "running"


async def test_bulk_retry_of_all_dead_jobs_runs_them_all_and_says_how_many(engine_redis):
    answers = {"status": 404}
    async with running_api(engine_redis, lambda call: Response(answers["status"]),
                           worker=worker_config(max_attempts=1)) as api:
        resp = await api.client.post("/jobs", json={"jobs": [{"worker": WORKER, "id": f"b{n}"} for n in range(30)]})
        assert resp.status_code == 201
        await until_dead(api, 30)
        answers["status"] = 200
        resp = await api.client.post("/jobs/retry", json={"worker": WORKER, "state": "dead", "all": True, "limit": 20})
        assert resp.status_code == 200, resp.text
        assert resp.json()["retried"] == 20 and resp.json()["done"] is True
        op = (await api.client.get(f"/operations/{resp.json()['operation']}")).json()
        assert op["retried"] == 20 and op["done"] is True and op["total"] == 20 and op["error"] is None
        resp = await api.client.post("/jobs/retry", json={"worker": WORKER, "all": True})
        assert resp.json()["retried"] == 10

        async def all_succeeded() -> bool:
            return (await listing(api, "succeeded", limit=1))["counts"]["succeeded"] == 30
        await api.until("30 succeeded", all_succeeded, within_s=10)
        page = await listing(api, "succeeded", limit=1)
        assert page["counts"]["dead"] == 0


async def test_bulk_retry_and_delete_by_ids_say_which_they_left_and_why(engine_redis):
    async with running_api(engine_redis, answer(404), worker=worker_config(max_attempts=1)) as api:
        dead = [await api.enqueue(id=f"d{n}") for n in range(3)]
        waiting = await api.enqueue(id="w", delay=100)
        await until_dead(api, 3)
        ids = [dead[0]["id"], waiting["id"], f"{WORKER}:missing", "other-worker:x"]
        resp = await api.client.post("/jobs/delete", json={"worker": WORKER, "state": "dead", "ids": ids})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["deleted"] == 1
        assert {s["id"]: s["reason"] for s in body["skipped"]} == {
            waiting["id"]: "scheduled", f"{WORKER}:missing": "not found",
            "other-worker:x": f"not a job of worker {WORKER!r}"}
        assert (await api.client.get(f"/job/{dead[0]['id']}")).status_code == 404
        assert await every_job(api, "dead", limit=10) == [dead[2]["id"], dead[1]["id"]]
        resp = await api.client.post("/jobs/delete", json={"worker": WORKER, "state": "dead", "all": True})
        assert resp.json()["deleted"] == 2
        page = await listing(api, "dead")
        assert page["jobs"] == [] and page["counts"]["dead"] == 0 and page["counts"]["scheduled"] == 1


async def test_bad_bulk_bodies_are_422_and_change_nothing(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        cases = [
            ("/jobs/retry", {"state": "dead", "all": True}, "worker"),
            ("/jobs/retry", {"worker": WORKER, "state": "succeeded", "all": True}, "state"),
            ("/jobs/retry", {"worker": WORKER, "state": "dead"}, "ids"),
            ("/jobs/retry", {"worker": WORKER, "ids": ["a:b"], "all": True}, "ids"),
            ("/jobs/retry", {"worker": WORKER, "ids": []}, "ids"),
            ("/jobs/retry", {"worker": WORKER, "all": True, "limit": 0}, "limit"),
            ("/jobs/retry", {"worker": WORKER, "all": True, "colour": 1}, "colour"),
            ("/jobs/delete", {"worker": WORKER, "state": "running", "all": True}, "state"),
            ("/jobs/delete", {"worker": WORKER, "all": True, "args": {}}, "args"),
        ]
        for path, body, field in cases:
            resp = await api.client.post(path, json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert resp.json()["field"] == field, (body, resp.text)
        assert (await api.client.get(f"/operations/{WORKER}:0123abcd")).status_code == 404
        assert (await api.client.get("/operations/nope")).status_code == 404


@pytest.mark.parametrize("engine_redis", ["redis"], indirect=True)
async def test_retrying_thousands_of_dead_jobs_goes_in_slices_and_reports_progress(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        engine = api.coordinator.engine.worker(WORKER)
        keys = api.keys
        # 5,000 dead jobs, written as the scripts would leave them (finished a moment ago: no
        # purge could take them)
        seconds, _ = await engine_redis.time()
        finished_ms = int(seconds) * 1000
        pipe = engine_redis.pipeline(transaction=False)
        for n in range(5000):
            suffix = f"dead-{n}"
            pipe.hset(keys.job(suffix), mapping=stored_job_fields(
                state="dead", args="{}", run_at_ms=1, attempts=1, max_attempts=1, created_ms=1, seq=n + 1,
                finished_ms=finished_ms + n))
            pipe.zadd(keys.state_index("dead"), {suffix: finished_ms + n})
        pipe.hset(keys.stats, mapping={"dead": 5000})
        await pipe.execute()
        slices = []
        real_retry = engine.retry_jobs

        async def counted(*args: Any, **kwargs: Any) -> Any:
            result = await real_retry(*args, **kwargs)
            slices.append(result.looked_at)
            return result
        engine.retry_jobs = counted  # type: ignore[method-assign]
        resp = await api.client.post("/jobs/retry", json={"worker": WORKER, "all": True, "delay": 3600})
        assert resp.status_code in (200, 202), resp.text
        operation = resp.json()["operation"]

        async def finished() -> dict[str, Any] | None:
            op = (await api.client.get(f"/operations/{operation}")).json()
            return op if op["done"] else None
        op = await api.until("the operation", finished, within_s=30)
        assert op["retried"] == 5000 and op["total"] == 5000 and op["error"] is None
        assert max(slices) <= 500 and sum(slices) == 5000
        page = await listing(api, "scheduled", limit=1)
        assert page["counts"]["scheduled"] == 5000 and page["counts"]["dead"] == 0
        assert await engine_redis.zcard(keys.state_index("dead")) == 0
        await asyncio.sleep(0)
