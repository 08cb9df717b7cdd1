"""The HTTP API as a caller and a worker see it, on a real Redis and on the embedded store.

Each test builds a ``Coordinator`` on the ``engine_redis`` client and drives its Starlette
app through ``httpx.ASGITransport``. Where a job must be dispatched, the worker is a
``MockTransport`` that records every dispatch body (the receipt token comes from there,
as a real worker would get it); the end-to-end checks over real HTTP are in
``test_dispatch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest

from redisq.api import create_app
from redisq.config import Backoff, Config, WorkerConfig
from redisq.coordinator import Coordinator
from redisq.job_fields import stored
from redisq.keys import WorkerKeys
from redisq.security import receipt_token
from redisq.transport import MockTransport, Response

WORKER = "send-email"
JOB_FIELDS = {"history", "id", "worker", "state", "args", "runAt", "attempts", "maxAttempts", "lastError", "result",
              "createdAt", "finishedAt", "throttleKey", "cost"}
FINISHED = ("succeeded", "dead", "cancelled")

Respond = Callable[[dict[str, Any]], "Response | Awaitable[Response]"]


def accept_later(call: dict[str, Any]) -> Response:
    """The default mock worker: 202, the receipt will be posted later."""
    return Response(202)


def worker_config(**settings: Any) -> WorkerConfig:
    settings.setdefault("url", "http://worker.test/send-email")
    settings.setdefault("timeout_s", 5.0)
    settings.setdefault("max_attempts", 3)
    settings.setdefault("backoff", Backoff(initial_s=0.05, factor=2.0, jitter=False))
    return WorkerConfig(name=WORKER, **settings)


def iso_ms(text: str) -> int:
    return int(round(datetime.fromisoformat(text).timestamp() * 1000))


async def server_ms(redis: Any) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


@dataclass
class Api:
    client: httpx.AsyncClient
    coordinator: Coordinator
    redis: Any
    calls: list[dict[str, Any]] = field(default_factory=list)  # dispatch bodies, in arrival order
    events: list[tuple[str, str, int, str]] = field(default_factory=list)  # the dispatcher's observer

    @property
    def keys(self) -> WorkerKeys:
        return WorkerKeys(WORKER)

    async def scheduled(self) -> list[Any]:
        return await self.redis.zrange(self.keys.scheduled, 0, -1)

    async def job_hashes(self) -> list[Any]:
        return [key async for key in self.redis.scan_iter(match=self.keys.job_prefix + "*")]

    async def assert_nothing_written(self) -> None:
        assert await self.scheduled() == []
        assert await self.job_hashes() == []
        assert await self.redis.zcard(self.keys.running) == 0

    async def enqueue(self, **body: Any) -> dict[str, Any]:
        body.setdefault("worker", WORKER)
        resp = await self.client.post("/job", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def get(self, job_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/job/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def receipt(self, job_id: str, body: Any, token: str | None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return await self.client.post(f"/job/{job_id}/receipt", json=body, headers=headers)

    async def until(self, what: str, predicate: Callable[[], Any], within_s: float = 3.0) -> Any:
        deadline = time.monotonic() + within_s
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
            await asyncio.sleep(0.01)

    async def call_for(self, job_id: str, attempt: int = 1, within_s: float = 3.0) -> dict[str, Any]:
        """The dispatch body the worker got for this attempt (waits for it)."""
        def find() -> dict[str, Any] | None:
            return next((c for c in self.calls if c["jobId"] == job_id and c["attempt"] == attempt), None)
        return await self.until(f"dispatch of {job_id} attempt {attempt}", find, within_s)

    async def state(self, job_id: str, *states: str, within_s: float = 3.0) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            job = await self.get(job_id)
            return job if job["state"] in states else None
        return await self.until(f"{job_id} in {states}", reached, within_s)


async def stop_within(coordinator: Coordinator, seconds: float = 10.0) -> None:
    """Stop the coordinator, failing (not hanging) when its stop() does not return."""
    try:
        await asyncio.wait_for(coordinator.stop(), seconds)
    except TimeoutError:
        await coordinator.redis.aclose()
        pytest.fail(f"Coordinator.stop() did not return within {seconds:g} s "
                    "(see test_dispatch.py::test_a_coordinator_stops_promptly_whenever_it_is_stopped)", pytrace=False)


@contextlib.asynccontextmanager
async def running_api(redis: Any, respond: Respond = accept_later, *, dispatch: bool = True,
                      worker: WorkerConfig | None = None, **settings: Any) -> AsyncIterator[Api]:
    worker = worker or worker_config()
    settings.setdefault("secret", "api-test-secret")
    settings.setdefault("shutdown_grace_s", 0.2)
    config = Config(workers={worker.name: worker}, **settings)
    api: Api

    def handler(url: str, body: bytes, headers: Any) -> Any:
        call = json.loads(body)
        api.calls.append(call)
        return respond(call)

    coordinator = Coordinator(config, redis=redis, transport=MockTransport(handler),
                              observer=lambda *event: api.events.append(event))
    await coordinator.start(dispatch=dispatch)
    try:
        app = create_app(coordinator, manage_lifecycle=False)
        # raise_app_exceptions=False: a crash must show up as the 500 a caller would get
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://redisq.test") as client:
            api = Api(client, coordinator, redis)
            yield api
    finally:
        await stop_within(coordinator)


# -- POST /job -------------------------------------------------------------------------------


async def test_enqueue_answers_201_with_the_whole_job(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        before = await server_ms(engine_redis)
        resp = await api.client.post("/job", json={"worker": WORKER, "id": "welcome-1",
                                                   "args": {"to": "ada@example.com"}})
        after = await server_ms(engine_redis)
        assert resp.status_code == 201
        job = resp.json()
        assert set(job) == JOB_FIELDS
        assert job["id"] == "send-email:welcome-1"
        assert job["worker"] == WORKER
        assert job["state"] == "scheduled"
        assert job["args"] == {"to": "ada@example.com"}
        assert (job["attempts"], job["maxAttempts"]) == (0, 3)
        assert (job["lastError"], job["result"], job["finishedAt"]) == (None, None, None)
        assert job["createdAt"].endswith("Z") and before <= iso_ms(job["createdAt"]) <= after
        assert job["runAt"] == job["createdAt"]  # no runAt or delay: due now
        assert await api.get("send-email:welcome-1") == job
        assert len(await api.scheduled()) == 1


async def test_enqueue_without_an_id_gets_a_fresh_one_each_time(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        first = await api.enqueue(args={})
        second = await api.enqueue(args={})
        assert first["id"].startswith(f"{WORKER}:") and second["id"].startswith(f"{WORKER}:")
        assert first["id"] != second["id"]
        # 14 characters of A-Z a-z 0-9 - _ (80 random bits; README), and the id reads the job back
        ids = [first["id"], second["id"], *[(await api.enqueue(args={}))["id"] for _ in range(30)]]
        suffixes = [job_id.split(":", 1)[1] for job_id in ids]
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{14}", suffix) for suffix in suffixes) and len(set(ids)) == 32
        for job_id in ids:
            assert (await api.get(job_id))["id"] == job_id


async def test_enqueue_takes_max_attempts_and_timeout_from_the_body(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        job = await api.enqueue(id="a", maxAttempts=7, timeout=2.5)
        assert job["maxAttempts"] == 7


async def test_the_same_id_again_answers_200_and_leaves_the_job_as_it_was(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        first = await api.enqueue(id="welcome-1", args={"to": "ada@example.com"}, delay=60)
        resp = await api.client.post("/job", json={"worker": WORKER, "id": "welcome-1",
                                                   "args": {"to": "grace@example.com"}, "maxAttempts": 9})
        assert resp.status_code == 200
        assert resp.json() == first
        assert await api.get("send-email:welcome-1") == first
        assert len(await api.scheduled()) == 1


@pytest.mark.parametrize("run_at, expected", [
    ("2030-01-01T10:00:00+02:00", "2030-01-01T08:00:00.000Z"),
    ("2030-01-01T10:00:00.250-05:30", "2030-01-01T15:30:00.250Z"),
    ("2030-01-01T10:00:00Z", "2030-01-01T10:00:00.000Z"),
    ("2030-01-01T10:00:00", "2030-01-01T10:00:00.000Z"),  # no offset: UTC
    ("2020-01-01 10:00:00 AM", "2020-01-01T10:00:00.000Z"),
    ("2020-01-01 10:00:00 PM", "2020-01-01T22:00:00.000Z"),
    ("2020-01-01 12:00:00 AM", "2020-01-01T00:00:00.000Z"),
    (1893492000, "2030-01-01T10:00:00.000Z"),  # unix seconds
    (1893492000.25, "2030-01-01T10:00:00.250Z"),
    ("1893492000", "2030-01-01T10:00:00.000Z"),
])
async def test_run_at_formats(engine_redis, run_at, expected):
    async with running_api(engine_redis, dispatch=False) as api:
        job = await api.enqueue(id="at", runAt=run_at)
        assert job["runAt"] == expected
        assert (await api.get("send-email:at"))["runAt"] == expected
        (score,) = [s for _, s in await engine_redis.zrange(api.keys.scheduled, 0, -1, withscores=True)]
        assert int(score) == iso_ms(expected)


async def test_delay_is_seconds_after_the_server_time_of_the_enqueue(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        job = await api.enqueue(id="later", delay=2.5)
        assert iso_ms(job["runAt"]) - iso_ms(job["createdAt"]) == 2500


async def test_run_at_and_delay_together_are_refused_naming_the_field(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/job", json={"worker": WORKER, "runAt": "2030-01-01T10:00:00Z", "delay": 5})
        assert resp.status_code == 422
        body = resp.json()
        assert body["field"] == "runAt"
        assert "runAt" in body["error"] and "delay" in body["error"]
        await api.assert_nothing_written()


# -- POST /jobs ------------------------------------------------------------------------------


async def test_a_batch_of_1000_is_enqueued_whole(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        jobs = [{"worker": WORKER, "id": f"bulk-{n}", "args": {"n": n}} for n in range(1000)]
        resp = await api.client.post("/jobs", json={"jobs": jobs})
        assert resp.status_code == 201
        body = resp.json()
        assert body["created"] == 1000
        assert [j["id"] for j in body["jobs"]] == [f"send-email:bulk-{n}" for n in range(1000)]
        assert all(set(j) == JOB_FIELDS and j["state"] == "scheduled" for j in body["jobs"])
        assert len(await api.scheduled()) == 1000
        assert (await api.get("send-email:bulk-999"))["args"] == {"n": 999}

        again = await api.client.post("/jobs", json={"jobs": jobs[:10]})
        assert again.status_code == 200 and again.json()["created"] == 0


async def test_a_batch_of_1001_is_refused_and_nothing_is_enqueued(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        jobs = [{"worker": WORKER, "id": f"bulk-{n}"} for n in range(1001)]
        resp = await api.client.post("/jobs", json={"jobs": jobs})
        assert resp.status_code == 422
        assert resp.json()["field"] == "jobs" and "1000" in resp.json()["error"]
        await api.assert_nothing_written()


@pytest.mark.parametrize("bad_item, field_name", [
    ({"worker": WORKER, "delay": -1}, "delay"),
    ({"worker": "no-such-worker"}, "worker"),
    ({"worker": WORKER, "runAt": "someday"}, "runAt"),
    ({"worker": WORKER, "id": "has spaces"}, "id"),
    ({"worker": WORKER, "colour": "red"}, "colour"),
    ({"worker": WORKER, "runAt": 1e20}, "runAt"),  # parses, but is no time a job can have
])
@pytest.mark.parametrize("index", [0, 3, 999])
async def test_one_invalid_item_refuses_the_whole_batch_naming_index_and_field(engine_redis, bad_item, field_name,
                                                                               index):
    async with running_api(engine_redis, dispatch=False) as api:
        jobs: list[Any] = [{"worker": WORKER, "id": f"bulk-{n}"} for n in range(1000)]
        jobs[index] = bad_item
        resp = await api.client.post("/jobs", json={"jobs": jobs})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert (body["index"], body["field"]) == (index, field_name)
        assert f"jobs[{index}].{field_name}" in body["error"]
        await api.assert_nothing_written()


@pytest.mark.parametrize("body, field_name", [
    ({}, "jobs"),
    ({"jobs": "all of them"}, "jobs"),
    ({"jobs": []}, "jobs"),
    ({"jobs": [{"worker": WORKER}], "priority": 1}, "priority"),
    ([{"worker": WORKER}], "jobs"),
])
async def test_a_malformed_batch_is_refused(engine_redis, body, field_name):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/jobs", json=body)
        assert resp.status_code == 422
        assert resp.json()["field"] == field_name and resp.json()["error"]
        await api.assert_nothing_written()


async def test_a_batch_item_that_is_not_an_object_is_named_by_index(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/jobs", json={"jobs": [{"worker": WORKER}, 5]})
        assert resp.status_code == 422
        assert resp.json()["index"] == 1
        await api.assert_nothing_written()


# -- GET and DELETE /job/{id} ------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["send-email:no-such-job", "no-such-worker:job-1", "not-a-job-id"])
async def test_an_unknown_job_is_404(engine_redis, job_id):
    async with running_api(engine_redis, dispatch=False) as api:
        for method in ("GET", "DELETE"):
            resp = await api.client.request(method, f"/job/{job_id}")
            assert resp.status_code == 404
            assert isinstance(resp.json()["error"], str) and resp.json()["error"]


async def test_cancelling_a_scheduled_job_means_it_is_never_dispatched(engine_redis):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="later", delay=0.3)
        resp = await api.client.delete("/job/send-email:later")
        assert resp.status_code == 200
        job = resp.json()
        assert job["state"] == "cancelled" and job["finishedAt"] is not None and job["attempts"] == 0
        await asyncio.sleep(0.6)  # past its runAt
        assert api.calls == []
        assert (await api.get("send-email:later"))["state"] == "cancelled"
        assert await api.scheduled() == []


async def test_cancelling_a_running_job_answers_its_later_receipt_and_stays_cancelled(engine_redis):
    async with running_api(engine_redis) as api:  # the worker answers 202
        await api.enqueue(id="slow")
        call = await api.call_for("send-email:slow")
        assert (await api.get("send-email:slow"))["state"] == "running"

        resp = await api.client.delete("/job/send-email:slow")
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"

        late = await api.receipt("send-email:slow", {"status": "success", "result": {"sent": True}},
                                 call["receiptToken"])
        assert late.status_code == 200
        assert late.json()["state"] == "cancelled" and late.json()["accepted"] is False
        job = await api.get("send-email:slow")
        assert job["state"] == "cancelled" and job["result"] is None and job["attempts"] == 1
        await asyncio.sleep(0.2)
        assert len(api.calls) == 1


async def test_cancelling_a_job_whose_worker_then_answers_keeps_it_cancelled(engine_redis):
    release = asyncio.Event()

    async def answer_when_released(call: dict[str, Any]) -> Response:
        await release.wait()
        return Response(200, b'{"sent": true}')

    async with running_api(engine_redis, answer_when_released) as api:
        await api.enqueue(id="in-flight")
        await api.call_for("send-email:in-flight")
        resp = await api.client.delete("/job/send-email:in-flight")
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
        release.set()
        await api.until("the worker's answer settled",
                        lambda: any(e[0] == "settled" and e[1] == "send-email:in-flight" for e in api.events))
        settled = [e for e in api.events if e[0] == "settled"]
        assert settled[0][3].startswith("cancelled")
        job = await api.get("send-email:in-flight")
        assert job["state"] == "cancelled" and job["result"] is None


async def test_cancelling_a_finished_job_is_409_and_changes_nothing(engine_redis):
    async with running_api(engine_redis, lambda call: Response(200, b'{"ok": 1}')) as api:
        await api.enqueue(id="done")
        job = await api.state("send-email:done", *FINISHED)
        assert job["state"] == "succeeded"
        resp = await api.client.delete("/job/send-email:done")
        assert resp.status_code == 409
        assert "succeeded" in resp.json()["error"]
        assert await api.get("send-email:done") == job


# -- POST /job/{id}/receipt -------------------------------------------------------------------


async def test_a_receipt_with_the_dispatched_token_finishes_the_job(engine_redis):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1", args={"to": "ada@example.com"})
        call = await api.call_for("send-email:r1")
        resp = await api.receipt("send-email:r1", {"status": "success", "result": {"messageId": "m-1"}},
                                 call["receiptToken"])
        assert resp.status_code == 200
        assert resp.json() == {"accepted": True, "duplicate": False, "state": "succeeded"}
        job = await api.get("send-email:r1")
        assert job["state"] == "succeeded" and job["result"] == {"messageId": "m-1"} and job["attempts"] == 1
        assert job["finishedAt"] is not None and job["lastError"] is None


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer 1.deadbeef",
                                           "Bearer 2.{token_hex}", "Bearer {token_for_other_job}",
                                           b"Bearer 1.\xe9abc", b"Bearer \xb2.abc"])
async def test_a_receipt_without_a_valid_token_is_401_and_changes_nothing(engine_redis, authorization):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        before = await api.get("send-email:r1")
        headers: dict[str, Any] = {}
        if isinstance(authorization, str):
            headers["Authorization"] = authorization.format(
                token_hex=call["receiptToken"].partition(".")[2],
                token_for_other_job=receipt_token(api.coordinator.secret, "send-email:r2", 1, 1))
        elif authorization is not None:
            headers["Authorization"] = authorization  # raw bytes, as a client may send them
        resp = await api.client.post("/job/send-email:r1/receipt", json={"status": "success"}, headers=headers)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]
        assert await api.get("send-email:r1") == before


async def test_a_receipt_for_an_unknown_job_is_404(engine_redis):
    async with running_api(engine_redis) as api:
        for job_id in ("send-email:never-enqueued", "no-such-worker:job-1"):
            token = receipt_token(api.coordinator.secret, job_id, 1, 1)
            resp = await api.receipt(job_id, {"status": "success"}, token)
            assert resp.status_code == 404 and resp.json()["error"]
        await api.assert_nothing_written()


async def test_a_receipt_for_an_earlier_attempt_is_409_and_cannot_finish_the_newer_one(engine_redis):
    def fail_first_then_accept(call: dict[str, Any]) -> Response:
        return Response(500, b"try again") if call["attempt"] == 1 else Response(202)

    async with running_api(engine_redis, fail_first_then_accept) as api:
        await api.enqueue(id="r1")
        first = await api.call_for("send-email:r1", attempt=1)
        second = await api.call_for("send-email:r1", attempt=2)
        running = await api.get("send-email:r1")
        assert running["state"] == "running" and running["attempts"] == 2

        stale = await api.receipt("send-email:r1", {"status": "success"}, first["receiptToken"])
        assert stale.status_code == 409
        assert "attempt 1" in stale.json()["error"]
        assert await api.get("send-email:r1") == running

        resp = await api.receipt("send-email:r1", {"status": "success"}, second["receiptToken"])
        assert resp.status_code == 200 and resp.json()["state"] == "succeeded"


async def test_an_exact_repeat_of_a_receipt_is_200_duplicate_and_changes_nothing(engine_redis):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        receipt = {"status": "success", "result": {"messageId": "m-1"}}
        first = await api.receipt("send-email:r1", receipt, call["receiptToken"])
        assert first.status_code == 200 and first.json()["duplicate"] is False
        done = await api.get("send-email:r1")
        raw = await engine_redis.hgetall(api.keys.job("r1"))

        again = await api.receipt("send-email:r1", receipt, call["receiptToken"])
        assert again.status_code == 200
        assert again.json() == {"accepted": True, "duplicate": True, "state": "succeeded"}
        assert await api.get("send-email:r1") == done
        assert await engine_redis.hgetall(api.keys.job("r1")) == raw

        different = await api.receipt("send-email:r1", {"status": "failure", "error": "oops"}, call["receiptToken"])
        assert different.status_code == 409
        assert await api.get("send-email:r1") == done


async def test_a_failure_receipt_with_retry_false_makes_the_job_dead_at_once(engine_redis):
    async with running_api(engine_redis, worker=worker_config(max_attempts=5)) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        resp = await api.receipt("send-email:r1", {"status": "failure", "error": "no such mailbox", "retry": False},
                                 call["receiptToken"])
        assert resp.status_code == 200 and resp.json()["state"] == "dead"
        job = await api.get("send-email:r1")
        assert (job["state"], job["attempts"], job["lastError"]) == ("dead", 1, "no such mailbox")
        await asyncio.sleep(0.3)  # far beyond the 0.05 s backoff a retry would have had
        assert len(api.calls) == 1


async def test_a_failure_receipt_is_retried_with_its_error_kept(engine_redis):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        resp = await api.receipt("send-email:r1", {"status": "failure", "error": {"code": "busy"}},
                                 call["receiptToken"])
        assert resp.status_code == 200 and resp.json()["state"] == "retrying"
        await api.call_for("send-email:r1", attempt=2)
        job = await api.get("send-email:r1")
        assert job["attempts"] == 2 and job["lastError"] == '{"code":"busy"}'


@pytest.mark.parametrize("content, status, field_name", [
    (b'{"status": "success"', 400, None),
    (b"", 400, None),
    (b"[]", 422, None),
    (b'{"status": "maybe"}', 422, "status"),
    (b"{}", 422, "status"),
    (b'{"status": "success", "extra": 1}', 422, "extra"),
    (b'{"status": "failure", "retry": "no"}', 422, "retry"),
])
async def test_a_malformed_receipt_is_refused_and_the_attempt_still_runs(engine_redis, content, status, field_name):
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        resp = await api.client.post("/job/send-email:r1/receipt", content=content,
                                     headers={"Authorization": f"Bearer {call['receiptToken']}",
                                              "Content-Type": "application/json"})
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]
        if field_name:
            assert resp.json()["field"] == field_name
        assert (await api.get("send-email:r1"))["state"] == "running"


async def test_a_receipt_whose_result_is_not_plain_json_never_breaks_the_job(engine_redis):
    """``NaN`` is accepted by Python's json.loads but is not JSON: the job must stay readable."""
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        call = await api.call_for("send-email:r1")
        resp = await api.client.post("/job/send-email:r1/receipt", content=b'{"status": "success", "result": NaN}',
                                     headers={"Authorization": f"Bearer {call['receiptToken']}"})
        assert resp.status_code in (200, 422), resp.text
        got = await api.client.get("/job/send-email:r1")
        assert got.status_code == 200, got.text


# -- errors ----------------------------------------------------------------------------------


BAD_ENQUEUES = [
    (b'{"worker": "send-email", ', 400, None),
    (b"", 400, None),
    (b"\xff\xfe\xfa", 400, None),
    (b"not json at all", 400, None),
    (b"[]", 422, None),
    (b'"send-email"', 422, None),
    (b"null", 422, None),
    (b"{}", 422, "worker"),
    (b'{"args": {}}', 422, "worker"),
    (b'{"worker": 5}', 422, "worker"),
    (b'{"worker": ""}', 422, "worker"),
    (b'{"worker": "no-such-worker"}', 422, "worker"),
    (b'{"worker": "send-email", "colour": "red"}', 422, "colour"),
    (b'{"worker": "send-email", "runAt": "tomorrow"}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": ""}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": true}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": [2030, 1, 1]}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": "nan"}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": "inf"}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": 1e20}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": -1e12}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": "0001-01-01T00:00:00+14:00"}', 422, "runAt"),
    (b'{"worker": "send-email", "runAt": "9999-12-31T23:59:59-14:00"}', 422, "runAt"),
    (b'{"worker": "send-email", "delay": -1}', 422, "delay"),
    (b'{"worker": "send-email", "delay": "5"}', 422, "delay"),
    (b'{"worker": "send-email", "delay": true}', 422, "delay"),
    (b'{"worker": "send-email", "delay": 1e15}', 422, "delay"),
    (b'{"worker": "send-email", "runAt": 1893492000, "delay": 5}', 422, "runAt"),
    (b'{"worker": "send-email", "id": ""}', 422, "id"),
    (b'{"worker": "send-email", "id": "has spaces"}', 422, "id"),
    (b'{"worker": "send-email", "id": "' + b"x" * 201 + b'"}', 422, "id"),
    (b'{"worker": "send-email", "id": 5}', 422, "id"),
    (b'{"worker": "send-email", "maxAttempts": 0}', 422, "maxAttempts"),
    (b'{"worker": "send-email", "maxAttempts": 1.5}', 422, "maxAttempts"),
    (b'{"worker": "send-email", "maxAttempts": "3"}', 422, "maxAttempts"),
    (b'{"worker": "send-email", "timeout": 0}', 422, "timeout"),
    (b'{"worker": "send-email", "timeout": "1"}', 422, "timeout"),
    (b'{"worker": "send-email", "args": NaN}', 422, "args"),
    (b'{"worker": "send-email", "args": {"x": Infinity}}', 422, "args"),
    (b"[" * 100_000, 400, None),  # nested too deeply for the JSON parser
]


@pytest.mark.parametrize("content, status, field_name", BAD_ENQUEUES,
                         ids=[c[:60].decode("utf-8", "replace") + (f"...({len(c)} bytes)" if len(c) > 60 else "")
                              for c, _, _ in BAD_ENQUEUES])
async def test_a_bad_enqueue_is_refused_with_a_reason_and_writes_nothing(engine_redis, content, status, field_name):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/job", content=content, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert isinstance(body["error"], str) and body["error"]
        assert body.get("field") == field_name
        await api.assert_nothing_written()


async def test_a_body_over_max_body_bytes_is_413_and_writes_nothing(engine_redis):
    async with running_api(engine_redis, dispatch=False, max_body_bytes=200) as api:
        big = {"worker": WORKER, "args": {"text": "x" * 300}}
        resp = await api.client.post("/job", json=big)
        assert resp.status_code == 413 and "200" in resp.json()["error"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"worker": "send-email", "args": {"text": "'
            for _ in range(10):
                yield b"x" * 50
            yield b'"}}'

        resp = await api.client.post("/job", content=chunks())
        assert resp.status_code == 413 and resp.json()["error"]

        resp = await api.client.post("/jobs", json={"jobs": [{"worker": WORKER, "id": f"j{n}"} for n in range(20)]})
        assert resp.status_code == 413
        await api.assert_nothing_written()

        small = await api.client.post("/job", json={"worker": WORKER, "id": "fits"})
        assert small.status_code == 201


async def test_health_says_redis_is_up(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.get("/health")
        assert resp.status_code == 200
        assert resp.json()["redis"] == "up"


async def test_run_at_null_counts_as_absent_beside_delay(engine_redis):
    async with running_api(engine_redis, dispatch=False) as api:
        resp = await api.client.post("/job", json={"worker": WORKER, "runAt": None, "delay": 5})
        assert resp.status_code == 201, resp.text
        job = resp.json()
        assert iso_ms(job["runAt"]) - iso_ms(job["createdAt"]) == 5000


async def test_a_receipt_of_a_purged_job_cannot_answer_a_new_job_with_the_same_id(engine_redis):
    """The token carries the job's enqueue sequence: after the first job with id r1 is gone
    and r1 is enqueued again, the old job's token for attempt 1 is refused (409)."""
    async with running_api(engine_redis) as api:
        await api.enqueue(id="r1")
        old_call = await api.call_for("send-email:r1")
        await api.redis.delete(api.keys.job("r1"))  # as purge does after the retention
        await api.redis.zrem(api.keys.running, "r1")
        await api.enqueue(id="r1")
        deadline = time.monotonic() + 5
        while (await api.get("send-email:r1"))["state"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        resp = await api.receipt("send-email:r1", {"status": "success"}, old_call["receiptToken"])
        assert resp.status_code == 409, resp.text
        assert (await api.get("send-email:r1"))["state"] == "running"


# -- POST /job/{id}/heartbeat --------------------------------------------------------------------


async def heartbeat(api: Api, job_id: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await api.client.post(f"/job/{job_id}/heartbeat", headers=headers)


async def test_a_heartbeat_moves_the_lease_deadline_to_now_plus_the_timeout(engine_redis):
    async with running_api(engine_redis) as api:
        job = await api.enqueue(id="long-1", timeout=2)
        call = await api.call_for(job["id"])
        suffix = "long-1"
        before = await api.redis.zscore(api.keys.running, suffix)
        await asyncio.sleep(0.05)  # let Redis's clock move on
        resp = await heartbeat(api, job["id"], call["receiptToken"])
        after_ms = await server_ms(api.redis)
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["extended"] is True and answer["attempt"] == 1
        deadline_ms = iso_ms(answer["leaseDeadline"])
        assert after_ms + 2000 - 50 <= deadline_ms <= after_ms + 2000
        assert await api.redis.zscore(api.keys.running, suffix) == deadline_ms > before
        assert int(await api.redis.hget(api.keys.job(suffix), *stored("lease_deadline_ms"))) == deadline_ms
        assert (await api.get(job["id"]))["state"] == "running"


async def test_heartbeats_keep_an_attempt_past_its_timeout_from_being_reaped(engine_redis):
    async with running_api(engine_redis) as api:
        job = await api.enqueue(id="long-2", timeout=0.3)
        call = await api.call_for(job["id"])
        for _ in range(9):  # 0.9 s of work, three times the timeout
            assert (await heartbeat(api, job["id"], call["receiptToken"])).status_code == 200
            await asyncio.sleep(0.1)
        running = await api.get(job["id"])
        assert running["state"] == "running" and running["attempts"] == 1 and running["lastError"] is None
        resp = await api.receipt(job["id"], {"status": "success"}, call["receiptToken"])
        assert resp.json()["state"] == "succeeded"


async def test_a_heartbeat_needs_the_receipt_token_of_the_running_attempt(engine_redis):
    async with running_api(engine_redis) as api:
        job = await api.enqueue(id="long-3")
        call = await api.call_for(job["id"])
        attempt, seq, _ = call["receiptToken"].split(".")
        assert (await heartbeat(api, job["id"], None)).status_code == 401
        assert (await heartbeat(api, job["id"], call["receiptToken"][:-1] + "x")).status_code == 401
        later_attempt = receipt_token(b"api-test-secret", job["id"], 2, int(seq))
        resp = await heartbeat(api, job["id"], later_attempt)
        assert resp.status_code == 409 and "no longer the running one" in resp.json()["error"]
        unknown = receipt_token(b"api-test-secret", "send-email:nope", 1, 1)
        assert (await heartbeat(api, "send-email:nope", unknown)).status_code == 404


async def test_a_heartbeat_of_a_finished_or_cancelled_job_is_409_so_the_worker_stops(engine_redis):
    async with running_api(engine_redis) as api:
        done = await api.enqueue(id="done-1")
        call = await api.call_for(done["id"])
        await api.receipt(done["id"], {"status": "success"}, call["receiptToken"])
        resp = await heartbeat(api, done["id"], call["receiptToken"])
        assert resp.status_code == 409 and "succeeded" in resp.json()["error"]

        cancelled = await api.enqueue(id="cancel-1")
        call = await api.call_for(cancelled["id"])
        assert (await api.client.delete(f"/job/{cancelled['id']}")).status_code == 200
        resp = await heartbeat(api, cancelled["id"], call["receiptToken"])
        assert resp.status_code == 409 and "cancelled" in resp.json()["error"]
        assert await api.redis.zcard(api.keys.running) == 0  # the heartbeat did not bring it back


# -- api_tokens ----------------------------------------------------------------------------------------


async def test_with_api_tokens_every_route_but_health_and_receipts_needs_one(engine_redis):
    async with running_api(engine_redis, api_tokens=("token-a", "token-b")) as api:
        body = {"worker": WORKER, "id": "auth-1"}
        missing = await api.client.post("/job", json=body)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await api.client.post("/job", json=body, headers={"Authorization": "Bearer token-c"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "bad API token"}
        await api.assert_nothing_written()

        auth = {"Authorization": "Bearer token-b"}
        created = await api.client.post("/job", json=body, headers=auth)
        assert created.status_code == 201
        job_id = created.json()["id"]
        assert (await api.client.get(f"/job/{job_id}")).status_code == 401
        assert (await api.client.get(f"/job/{job_id}", headers=auth)).status_code == 200
        assert (await api.client.post("/jobs", json={"jobs": [body]})).status_code == 401
        assert (await api.client.get("/workers")).status_code == 401  # routes added later are protected too
        assert (await api.client.get("/health")).status_code == 200

        call = await api.call_for(job_id)
        assert (await heartbeat(api, job_id, call["receiptToken"])).status_code == 200
        receipt = await api.receipt(job_id, {"status": "success"}, call["receiptToken"])
        assert receipt.status_code == 200 and receipt.json()["state"] == "succeeded"
        assert (await api.client.delete(f"/job/{job_id}")).status_code == 401
        assert (await api.client.delete(f"/job/{job_id}", headers=auth)).status_code == 409
