"""The client: request bodies and typed errors (httpx.MockTransport), and the blocking
client against a real coordinator (uvicorn in a thread, a real Redis)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from redisq import (
    AsyncClient,
    AttemptInfo,
    BadRequestError,
    Client,
    ConflictError,
    JobInfo,
    NotFoundError,
    OperationFailedError,
    RedisqError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
)
from redisq.api import create_app
from redisq.client import ScheduleInfo
from redisq.config import Config, WorkerConfig
from redisq.coordinator import Coordinator

from stand_ins import StandInWorker

JOB = {"id": "send-email:a1", "worker": "send-email", "state": "scheduled", "args": {"to": "ada@example.com"},
       "runAt": "2030-01-01T09:00:00.000Z", "attempts": 0, "maxAttempts": 5, "lastError": None, "result": None,
       "createdAt": "2029-12-31T09:00:00.000Z", "finishedAt": None, "throttleKey": "shop-1"}


def recording(status: int = 201, answer: Any = JOB) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=answer)

    return seen, httpx.MockTransport(handler)


def test_enqueue_sends_the_api_fields_and_reads_the_job():
    seen, transport = recording()
    with Client("http://redisq.test/", token="t0k", transport=transport) as client:
        job = client.enqueue("send-email", {"to": "ada@example.com"}, run_at=datetime(2030, 1, 1, 9, tzinfo=UTC),
                             id="a1", max_attempts=5, timeout=timedelta(seconds=90), throttle_key="shop-1", cost=2)
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", "http://redisq.test/job")
    assert request.headers["authorization"] == "Bearer t0k"
    assert json.loads(request.content) == {
        "worker": "send-email", "args": {"to": "ada@example.com"}, "runAt": "2030-01-01T09:00:00+00:00",
        "timeout": 90.0, "id": "a1", "maxAttempts": 5, "throttleKey": "shop-1", "cost": 2}
    assert job.id == "send-email:a1" and job.created is True and job.state == "scheduled"
    assert job.run_at == datetime(2030, 1, 1, 9, tzinfo=UTC) and job.finished_at is None
    assert job.raw["throttleKey"] == "shop-1"  # fields of newer servers are kept


def test_options_left_out_are_not_sent():
    seen, transport = recording(200)
    with Client(transport=transport) as client:
        job = client.enqueue("send-email", delay=30)
    assert json.loads(seen[0].content) == {"worker": "send-email", "delay": 30}
    assert "authorization" not in seen[0].headers
    assert job.created is False  # 200: the id existed


def test_enqueue_many_get_and_cancel_use_their_routes():
    seen, transport = recording(201, {"jobs": [JOB, JOB], "created": 2})
    with Client(transport=transport) as client:
        jobs = client.enqueue_many([{"worker": "send-email", "args": {"n": 1}, "throttle_key": "s"},
                                    {"worker": "send-email", "delay": 5}])
    assert [j.id for j in jobs] == ["send-email:a1", "send-email:a1"]
    assert json.loads(seen[0].content) == {"jobs": [{"worker": "send-email", "args": {"n": 1}, "throttleKey": "s"},
                                                    {"worker": "send-email", "delay": 5}]}
    seen, transport = recording(200)
    with Client(transport=transport) as client:
        client.get("send-email:a1")
        client.cancel("send-email:a1")
    assert [(r.method, r.url.path) for r in seen] == [("GET", "/job/send-email:a1"), ("DELETE", "/job/send-email:a1")]


@pytest.mark.parametrize("status, body, error_type", [
    (400, {"error": "request body is not valid JSON"}, BadRequestError),
    (401, {"error": "bad API token"}, UnauthorizedError),
    (404, {"error": "no job 'send-email:x'"}, NotFoundError),
    (409, {"error": "job 'send-email:x' has already finished (succeeded)"}, ConflictError),
    (422, {"error": "jobs[2].runAt: bad", "field": "runAt", "index": 2}, ValidationError),
    (503, {"error": "redis is unavailable: refused"}, UnavailableError),
    (500, {"error": "internal error: KeyError"}, RedisqError),
])
async def test_api_errors_become_typed_errors_with_the_servers_message(status, body, error_type):
    _, transport = recording(status, body)
    with Client(transport=transport) as client, pytest.raises(error_type) as raised:
        client.get("send-email:x")
    assert type(raised.value) is error_type
    assert raised.value.message == body["error"] and raised.value.status_code == status
    assert str(raised.value) == f"GET /job/send-email:x: HTTP {status}: {body['error']}"
    assert (raised.value.field, raised.value.index) == (body.get("field"), body.get("index"))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    async with AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(error_type):
            await client.cancel("send-email:x")


def test_an_unreachable_coordinator_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", timeout_s=2) as client,
        pytest.raises(UnavailableError, match="cannot reach"),
    ):
        client.get("send-email:x")


SCHEDULE = {"id": "send-email:daily", "worker": "send-email", "cron": "0 9 * * *", "timezone": "Europe/Paris",
            "args": {"to": "ada@example.com"}, "catchUp": True, "maxAttempts": 5, "timeout": None,
            "throttleKey": "shop-1", "cost": 2, "paused": False, "nextRunAt": "2030-01-01T08:00:00.000Z",
            "nextRunTimes": ["2030-01-01T08:00:00.000Z", "2030-01-02T08:00:00.000Z"], "lastFireAt": None,
            "lastJobs": [], "createdAt": "2029-12-31T09:00:00.000Z", "updatedAt": "2029-12-31T09:00:00.000Z"}


async def test_a_cron_enqueue_answers_a_schedule_in_both_clients():
    seen, transport = recording(201, SCHEDULE)
    with Client(transport=transport) as client:
        schedule = client.enqueue("send-email", {"to": "ada@example.com"}, cron="0 9 * * *", timezone="Europe/Paris",
                                  id="daily", catch_up=True, throttle_key="shop-1", cost=2, max_attempts=5)
    assert json.loads(seen[0].content) == {
        "worker": "send-email", "args": {"to": "ada@example.com"}, "cron": "0 9 * * *", "timezone": "Europe/Paris",
        "catchUp": True, "id": "daily", "maxAttempts": 5, "throttleKey": "shop-1", "cost": 2}
    assert isinstance(schedule, ScheduleInfo) and schedule.created is True
    assert (schedule.id, schedule.worker, schedule.cron, schedule.timezone, schedule.paused) == (
        "send-email:daily", "send-email", "0 9 * * *", "Europe/Paris", False)
    assert schedule.next_run_at == datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert schedule.next_run_times == (datetime(2030, 1, 1, 8, tzinfo=UTC),
                                       datetime(2030, 1, 2, 8, tzinfo=UTC))
    assert schedule.raw["catchUp"] is True and schedule.raw["throttleKey"] == "shop-1"

    paused = {**SCHEDULE, "paused": True, "nextRunAt": None, "nextRunTimes": []}
    seen, transport = recording(200, paused)
    async with AsyncClient(transport=transport) as aclient:
        updated = await aclient.enqueue("send-email", cron="0 9 * * *", id="daily", catch_up=False)
    assert json.loads(seen[0].content) == {"worker": "send-email", "cron": "0 9 * * *", "catchUp": False, "id": "daily"}
    assert isinstance(updated, ScheduleInfo) and updated.created is False  # 200: updated in place
    assert (updated.paused, updated.next_run_at, updated.next_run_times) == (True, None, ())


def test_catch_up_without_cron_is_refused_before_sending():
    seen, transport = recording()
    with Client(transport=transport) as client, pytest.raises(ValidationError, match="catchUp") as refused:
        client.enqueue("send-email", catch_up=True)
    assert refused.value.field == "catchUp" and seen == []


@pytest.mark.parametrize("options, field_name", [
    ({"delay": float("nan")}, "delay"), ({"delay": float("inf")}, "delay"), ({"run_at": float("nan")}, "runAt"),
    ({"run_at": float("-inf")}, "runAt"), ({"timeout": float("nan")}, "timeout"), ({"cost": float("inf")}, "cost"),
    ({"args": {"x": float("nan")}}, "args"), ({"args": {1, 2}}, "args"),
])
async def test_values_json_cannot_carry_are_validation_errors_before_sending(options, field_name):
    seen, transport = recording()
    with Client(transport=transport) as client, pytest.raises(ValidationError) as refused:
        client.enqueue("send-email", **options)
    assert refused.value.field == field_name and str(refused.value).startswith(f"{field_name}: ")
    with Client(transport=transport) as client, pytest.raises(ValidationError) as refused:
        client.enqueue_many([{"worker": "send-email"}, {"worker": "send-email", **options}])
    assert (refused.value.field, refused.value.index) == (field_name, 1)
    assert str(refused.value).startswith(f"jobs[1].{field_name}: ")
    async with AsyncClient(transport=transport) as aclient:
        with pytest.raises(ValidationError):
            await aclient.enqueue("send-email", **options)
    assert seen == []


def test_a_naive_run_at_is_sent_as_utc():
    seen, transport = recording()
    with Client(transport=transport) as client:
        client.enqueue("send-email", run_at=datetime(2030, 1, 1, 9, 30))
        client.enqueue("send-email", run_at=datetime(2030, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))))
    assert [json.loads(r.content)["runAt"] for r in seen] == ["2030-01-01T09:30:00+00:00", "2030-01-01T09:30:00+02:00"]


def failing(error: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("error", [httpx.ReadTimeout("timed out"), httpx.WriteTimeout("timed out"),
                                   httpx.RemoteProtocolError("Server disconnected without sending a response.")])
async def test_no_answer_to_an_enqueue_says_the_job_may_exist(error):
    with Client("http://redisq.test", timeout_s=2.5, transport=failing(error)) as client:
        with pytest.raises(UnavailableError) as unanswered:
            client.enqueue("send-email", {}, id="a1")
        message = str(unanswered.value)
        assert "cannot reach" not in message and "POST /job" in message and type(error).__name__ in message
        assert "the job may have been created" in message and "same id" in message
        if isinstance(error, httpx.TimeoutException):
            assert "no answer from redisq at http://redisq.test within timeout_s=2.5s" in message
        with pytest.raises(UnavailableError, match="may have been created: enqueueing again without an id could "
                                                   "create a second one; give id="):
            client.enqueue("send-email", {})
        with pytest.raises(UnavailableError, match="the schedule may have been created"):
            client.enqueue("send-email", cron="0 9 * * *", id="daily")
        with pytest.raises(UnavailableError, match="POST /jobs: .*the jobs may have been created: enqueue them again "
                                                   "with the same ids"):
            client.enqueue_many([{"worker": "send-email", "id": "b1"}])
        with pytest.raises(UnavailableError) as read:
            client.get("send-email:a1")
        assert "may have been created" not in str(read.value)

    def async_failing(request: httpx.Request) -> httpx.Response:
        raise error

    async with AsyncClient(timeout_s=2.5, transport=httpx.MockTransport(async_failing)) as aclient:
        with pytest.raises(UnavailableError, match="the job may have been created"):
            await aclient.enqueue("send-email", {}, id="a1")


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("timed out"),
                                   httpx.PoolTimeout("timed out")])
def test_errors_before_sending_say_cannot_reach(error):
    with (
        Client("http://redisq.test", transport=failing(error)) as client,
        pytest.raises(UnavailableError, match="^cannot reach redisq at http://redisq.test: ") as unreachable,
    ):
        client.enqueue("send-email", {}, id="a1")
    assert "may have been created" not in str(unreachable.value)


def test_a_coordinator_that_never_answers_times_out_with_may_exist():
    """A real socket that accepts the request and never answers: httpx's own ReadTimeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with Client(f"http://127.0.0.1:{port}", timeout_s=0.3) as client, pytest.raises(UnavailableError) as raised:
            client.enqueue("send-email", {}, id="a1")
    assert isinstance(raised.value.__cause__, httpx.ReadTimeout)
    assert "within timeout_s=0.3s" in str(raised.value) and "the job may have been created" in str(raised.value)


@contextlib.contextmanager
def running_coordinator(redis_url: str, *workers: WorkerConfig) -> Iterator[str]:
    """A real coordinator (its own event loop, in a thread) on this Redis; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = Config(redis_url=redis_url, secret="client-test", public_url=url, shutdown_grace_s=0.2,
                    workers={w.name: w for w in workers})
    server = uvicorn.Server(uvicorn.Config(create_app(Coordinator(config)), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the coordinator did not start"
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def coordinator_url(real_redis: Any, redis_url: str) -> Iterator[str]:
    """A coordinator whose worker `send-email` refuses connections."""
    with running_coordinator(redis_url, WorkerConfig(name="send-email", url="http://127.0.0.1:1/")) as url:
        yield url


def test_the_blocking_client_against_a_real_coordinator(coordinator_url):
    with Client(coordinator_url) as client:
        job = client.enqueue("send-email", {"to": "ada@example.com"}, delay=3600, id="later-1")
        assert (job.id, job.state, job.created) == ("send-email:later-1", "scheduled", True)
        assert client.enqueue("send-email", {"to": "ada@example.com"}, delay=3600, id="later-1").created is False
        assert job.run_at is not None and job.created_at is not None
        assert 3599 <= (job.run_at - job.created_at).total_seconds() <= 3601
        batch = client.enqueue_many([{"worker": "send-email", "delay": 3600, "id": f"b{i}"} for i in range(3)])
        assert [j.id for j in batch] == ["send-email:b0", "send-email:b1", "send-email:b2"]
        assert client.get("send-email:b1").state == "scheduled"
        assert client.cancel("send-email:b1").state == "cancelled"
        with pytest.raises(ConflictError, match="already finished"):
            client.cancel("send-email:b1")
        with pytest.raises(ValidationError) as invalid:
            client.enqueue("send-sms", {})
        assert invalid.value.field == "worker" and "unknown worker" in invalid.value.message
        with pytest.raises(NotFoundError):
            client.get("send-email:nope")


def test_a_cron_enqueue_against_a_real_coordinator_answers_the_schedule(coordinator_url):
    with Client(coordinator_url) as client:
        schedule = client.enqueue("send-email", {"to": "ada@example.com"}, cron="0 9 * * *", timezone="Europe/Paris",
                                  id="daily", catch_up=True, throttle_key="shop-1", cost=2)
        assert isinstance(schedule, ScheduleInfo) and not isinstance(schedule, JobInfo)
        assert (schedule.id, schedule.worker, schedule.cron, schedule.timezone) == (
            "send-email:daily", "send-email", "0 9 * * *", "Europe/Paris")
        assert schedule.created is True and schedule.paused is False
        assert schedule.next_run_at is not None and schedule.next_run_at > datetime.now(UTC)
        assert len(schedule.next_run_times) == 5 and schedule.next_run_times[0] == schedule.next_run_at
        assert all(t.astimezone(ZoneInfo("Europe/Paris")).hour == 9 for t in schedule.next_run_times)
        assert (schedule.raw["catchUp"], schedule.raw["throttleKey"], schedule.raw["cost"]) == (True, "shop-1", 2)
        again = client.enqueue("send-email", {"to": "ada@example.com"}, cron="30 9 * * *", id="daily")
        assert again.created is False and again.cron == "30 9 * * *" and again.raw["catchUp"] is False
        with pytest.raises(ValidationError) as invalid:
            client.enqueue("send-email", cron="0 9 * * *", delay=5)
        assert invalid.value.field == "delay"


# -- operators' methods: listing, retry, delete, wait, schedules ---------------------------------

HISTORY = [{"attempt": 1, "startedAt": "2030-01-01T09:00:00.000Z", "endedAt": "2030-01-01T09:00:00.250Z",
            "durationMs": 250, "outcome": "failed", "status": 404, "error": "HTTP 404: not found",
            "coordinator": "c1"},
           {"attempt": 2, "startedAt": "2030-01-01T09:00:01.000Z", "endedAt": None, "durationMs": None,
            "outcome": "running", "status": None, "error": None, "coordinator": "c2"}]


def routed(answers: dict[tuple[str, str], list[tuple[int, Any]]]) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport answering each (method, path) with its answers in turn (the last one again)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        queue = answers[(request.method, request.url.path)]
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(status, json=body)

    return seen, httpx.MockTransport(handler)


def job(n: int, **fields: Any) -> dict[str, Any]:
    return {**JOB, "id": f"send-email:j{n}", **fields}


async def test_list_jobs_fetches_every_page_by_cursor_as_it_goes():
    pages = [(200, {"jobs": [job(1), job(2)], "next": "c2", "counts": {"dead": 5}}),
             (200, {"jobs": [job(3), job(4)], "next": "c4", "counts": {"dead": 5}}),
             (200, {"jobs": [job(5)], "next": None, "counts": {"dead": 5}})]
    seen, transport = routed({("GET", "/jobs"): list(pages)})
    with Client(transport=transport) as client:
        listed = client.list_jobs("send-email", "dead", throttle_key="shop-1", page_size=2)
        assert seen == []  # nothing is fetched before the iteration asks
        first = next(listed)
        assert first.id == "send-email:j1" and len(seen) == 1
        assert [j.id for j in listed] == [f"send-email:j{n}" for n in range(2, 6)]
    assert [dict(r.url.params) for r in seen] == [
        {"worker": "send-email", "state": "dead", "limit": "2", "throttleKey": "shop-1"},
        {"worker": "send-email", "state": "dead", "limit": "2", "throttleKey": "shop-1", "cursor": "c2"},
        {"worker": "send-email", "state": "dead", "limit": "2", "throttleKey": "shop-1", "cursor": "c4"}]

    seen, transport = routed({("GET", "/jobs"): list(pages)})
    async with AsyncClient(transport=transport) as aclient:
        assert [j.id async for j in aclient.list_jobs("send-email", "dead")] == [
            f"send-email:j{n}" for n in range(1, 6)]
    assert dict(seen[0].url.params) == {"worker": "send-email", "state": "dead", "limit": "100"}


def test_a_listing_refused_by_the_server_raises_when_iterated():
    _, transport = routed({("GET", "/jobs"): [(422, {"error": "state: must be one of ...", "field": "state"})]})
    with Client(transport=transport) as client, pytest.raises(ValidationError) as refused:
        list(client.list_jobs("send-email", "asleep"))
    assert refused.value.field == "state"


async def test_retry_sends_only_what_changes():
    seen, transport = recording(200, {**JOB, "state": "scheduled", "attempts": 0})
    with Client(transport=transport) as client:
        assert client.retry("send-email:a1").state == "scheduled"
        client.retry("send-email:a1", args={"to": "bob"}, delay=timedelta(minutes=1))
        client.retry("send-email:a1", args=None, run_at=datetime(2030, 1, 1, 9))
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/job/send-email:a1/retry")] * 3
    assert seen[0].content == b""  # no body: the job runs now with its args
    assert [json.loads(r.content) for r in seen[1:]] == [{"args": {"to": "bob"}, "delay": 60.0},
                                                         {"args": None, "runAt": "2030-01-01T09:00:00+00:00"}]
    async with AsyncClient(transport=transport) as aclient:
        await aclient.retry("send-email:a1", delay=5)
    assert json.loads(seen[-1].content) == {"delay": 5}
    with Client(transport=transport) as client, pytest.raises(ValidationError) as refused:
        client.retry("send-email:a1", delay=float("nan"))
    assert refused.value.field == "delay" and len(seen) == 4


async def test_retry_many_and_delete_many_wait_for_the_operation_to_finish(monkeypatch):
    monkeypatch.setattr("redisq.client.OPERATION_POLL_S", 0.01)
    answers: dict[tuple[str, str], list[tuple[int, Any]]] = {
        ("POST", "/jobs/retry"): [(202, {"retried": 500, "done": False, "operation": "op-1"})],
        ("GET", "/operations/op-1"): [
            (200, {"operation": "op-1", "kind": "retry", "retried": 1000, "total": 1500, "done": False, "error": None}),
            (200, {"operation": "op-1", "kind": "retry", "retried": 1500, "total": 1500, "done": True, "error": None})],
        ("POST", "/jobs/delete"): [(200, {"deleted": 3, "done": True})],
    }
    seen, transport = routed(answers)
    with Client(transport=transport) as client:
        assert client.retry_many("send-email", all=True, limit=2000) == 1500
        assert client.delete_many("send-email", "succeeded", ids=["send-email:a", "send-email:b"]) == 3
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/jobs/retry"), ("GET", "/operations/op-1"), ("GET", "/operations/op-1"), ("POST", "/jobs/delete")]
    assert json.loads(seen[0].content) == {"worker": "send-email", "state": "dead", "all": True, "limit": 2000}
    assert json.loads(seen[3].content) == {"worker": "send-email", "state": "succeeded",
                                           "ids": ["send-email:a", "send-email:b"]}

    answers[("POST", "/jobs/retry")] = [(202, {"retried": 0, "done": False, "operation": "op-2"})]
    answers[("GET", "/operations/op-2")] = [
        (200, {"operation": "op-2", "retried": 500, "done": True, "error": "redis unavailable: refused"})]
    async with AsyncClient(transport=transport) as aclient:
        with pytest.raises(OperationFailedError, match="stopped after 500: redis unavailable") as failed:
            await aclient.retry_many("send-email", state="cancelled", all=True)
    assert (failed.value.operation, failed.value.done) == ("op-2", 500)


def test_retry_many_sends_new_args_and_times_as_retry_does():
    seen, transport = recording(200, {"retried": 1, "done": True, "skipped": []})
    with Client(transport=transport) as client:
        assert client.retry_many("send-email", ids=["send-email:a"], args=None, delay=timedelta(seconds=5)) == 1
        client.retry_many("send-email", "cancelled", all=True, run_at=datetime(2030, 1, 1))
    assert [json.loads(r.content) for r in seen] == [
        {"worker": "send-email", "state": "dead", "ids": ["send-email:a"], "args": None, "delay": 5.0},
        {"worker": "send-email", "state": "cancelled", "all": True, "runAt": "2030-01-01T00:00:00+00:00"}]


@pytest.mark.parametrize("options", [{}, {"all": True, "ids": ["send-email:a"]}])
def test_a_bulk_call_takes_ids_or_all_and_says_so_before_sending(options):
    seen, transport = recording()
    with Client(transport=transport) as client, pytest.raises(ValidationError, match="ids=.* or all=True"):
        client.retry_many("send-email", **options)
    assert seen == []


def test_wait_reads_the_job_until_it_has_finished_and_times_out_clearly():
    running, done = {**JOB, "state": "running", "attempts": 2}, {**JOB, "state": "dead", "history": HISTORY}
    seen, transport = routed({("GET", "/job/send-email:a1"): [(200, running), (200, running), (200, done)]})
    with Client(transport=transport) as client:
        finished = client.wait("send-email:a1", timeout_s=5)
    assert finished.state == "dead" and len(seen) == 3
    assert finished.history[0] == AttemptInfo(
        attempt=1, started_at=datetime(2030, 1, 1, 9, tzinfo=UTC),
        ended_at=datetime(2030, 1, 1, 9, 0, 0, 250000, tzinfo=UTC), duration_ms=250, outcome="failed", status=404,
        error="HTTP 404: not found", coordinator="c1")
    assert (finished.history[1].outcome, finished.history[1].ended_at) == ("running", None)

    _, transport = routed({("GET", "/job/send-email:a1"): [(200, running)]})
    started = time.monotonic()
    with Client(transport=transport) as client, pytest.raises(WaitTimeoutError) as late:
        client.wait("send-email:a1", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert str(late.value) == "job 'send-email:a1' has not finished within 0.3 s (it is running, after 2 attempts)"
    assert isinstance(late.value, TimeoutError) and isinstance(late.value, RedisqError)
    assert late.value.job.state == "running"


async def test_delete_reads_the_job_then_deletes_it_by_id():
    finished = {**JOB, "state": "succeeded"}
    seen, transport = routed({("GET", "/job/send-email:a1"): [(200, finished)],
                              ("POST", "/jobs/delete"): [(200, {"deleted": 1, "done": True})]})
    async with AsyncClient(transport=transport) as aclient:
        assert await aclient.delete("send-email:a1") is None
    assert json.loads(seen[1].content) == {"worker": "send-email", "state": "succeeded", "ids": ["send-email:a1"]}

    seen, transport = routed({("GET", "/job/send-email:a1"): [(200, JOB)]})  # scheduled: not finished
    with Client(transport=transport) as client, pytest.raises(ConflictError, match="cancel it first"):
        client.delete("send-email:a1")
    assert len(seen) == 1


def test_schedule_methods_use_their_routes():
    seen, transport = recording(200, SCHEDULE)
    with Client(transport=transport) as client:
        assert client.get_schedule("send-email:daily").cron == "0 9 * * *"
        client.pause_schedule("send-email:daily")
        client.resume_schedule("send-email:daily")
        assert client.delete_schedule("send-email:daily").id == "send-email:daily"
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/schedule/send-email:daily"), ("POST", "/schedule/send-email:daily/pause"),
        ("POST", "/schedule/send-email:daily/resume"), ("DELETE", "/schedule/send-email:daily")]
    seen, transport = recording(200, {"schedules": [SCHEDULE]})
    with Client(transport=transport) as client:
        assert [s.id for s in client.list_schedules("send-email")] == ["send-email:daily"]
        client.list_schedules()
    assert [str(r.url.params) for r in seen] == ["worker=send-email", ""]


async def test_schedule_methods_against_a_real_coordinator(coordinator_url):
    with Client(coordinator_url) as client:
        client.enqueue("send-email", cron="0 9 * * *", id="daily")
        client.enqueue("send-email", cron="@hourly", id="hourly")
        assert [s.id for s in client.list_schedules()] == ["send-email:daily", "send-email:hourly"]
        assert [s.id for s in client.list_schedules("send-email")] == ["send-email:daily", "send-email:hourly"]
        paused = client.pause_schedule("send-email:daily")
        assert (paused.paused, paused.next_run_at) == (True, None)
        assert client.get_schedule("send-email:daily").paused is True
        with pytest.raises(ValidationError) as unknown:
            client.list_schedules("send-sms")
        assert unknown.value.field == "worker"
    async with AsyncClient(coordinator_url) as aclient:
        resumed = await aclient.resume_schedule("send-email:daily")
        assert resumed.paused is False and resumed.next_run_at is not None
        assert (await aclient.delete_schedule("send-email:hourly")).id == "send-email:hourly"
        assert [s.id for s in await aclient.list_schedules()] == ["send-email:daily"]
        with pytest.raises(NotFoundError):
            await aclient.get_schedule("send-email:hourly")


def test_wait_for_a_job_that_dies_against_a_real_coordinator(coordinator_url):
    """The fixture's worker URL refuses connections: with max_attempts 1 the job is dead at once."""
    with Client(coordinator_url) as client:
        job = client.enqueue("send-email", {"n": 1}, max_attempts=1)
        finished = client.wait(job.id, timeout_s=10)
        assert finished.state == "dead" and finished.attempts == 1 and finished.last_error
        later = client.enqueue("send-email", {"n": 2}, delay=3600)
        with pytest.raises(WaitTimeoutError, match="it is scheduled"):
            client.wait(later.id, timeout_s=0.2)


@pytest.fixture
def coordinator_and_worker(real_redis: Any, redis_url: str) -> Iterator[tuple[str, StandInWorker]]:
    """A coordinator whose worker `send-email` is a stand-in that answers 404 until told
    otherwise, with 1 attempt per job (so a 404 is dead at once)."""
    with StandInWorker(404) as worker, running_coordinator(
            redis_url, WorkerConfig(name="send-email", url=worker.url, max_attempts=1)) as url:
        yield url, worker


def dead_jobs(client: Client, n: int, **options: Any) -> list[str]:
    ids = [j.id for j in client.enqueue_many([{"worker": "send-email", "id": f"d{i}", **options} for i in range(n)])]
    for job_id in ids:
        assert client.wait(job_id, timeout_s=10).state == "dead"
    return ids


def test_list_retry_and_delete_against_a_real_coordinator(coordinator_and_worker):
    url, worker = coordinator_and_worker
    with Client(url) as client:
        ids = dead_jobs(client, 5, throttle_key="shop-1")
        dead = client.get(ids[0])
        assert [(a.attempt, a.outcome, a.status) for a in dead.history] == [(1, "failed", 404)]
        assert dead.history[0].started_at is not None and dead.history[0].coordinator
        listed = list(client.list_jobs("send-email", "dead", page_size=2))
        assert sorted(j.id for j in listed) == sorted(ids) and all(j.state == "dead" for j in listed)
        assert [j.id for j in client.list_jobs("send-email", "dead", throttle_key="shop-2")] == []

        retried = client.retry(ids[0], args={"n": 2}, delay=3600)
        assert (retried.state, retried.attempts, retried.args) == ("scheduled", 0, {"n": 2})
        with pytest.raises(ConflictError):
            client.retry(ids[0])  # scheduled: not dead or cancelled
        with pytest.raises(NotFoundError):
            client.retry("send-email:nope")

        worker.status = 200
        assert client.retry_many("send-email", ids=[ids[1], "send-email:nope"]) == 1
        assert client.wait(ids[1], timeout_s=10).state == "succeeded"
        assert client.retry_many("send-email", all=True, limit=2) == 2
        assert client.retry_many("send-email", all=True) == 1
        for job_id in ids[2:]:
            assert client.wait(job_id, timeout_s=10).state == "succeeded"

        client.delete(ids[1])
        with pytest.raises(NotFoundError):
            client.get(ids[1])
        with pytest.raises(NotFoundError):
            client.delete(ids[1])
        with pytest.raises(ConflictError, match="has not finished"):
            client.delete(ids[0])  # scheduled an hour from now
        assert client.delete_many("send-email", "succeeded", all=True) == 3
        assert list(client.list_jobs("send-email", "succeeded")) == []


async def test_a_bulk_retry_that_goes_on_in_the_background_is_waited_for(coordinator_and_worker, monkeypatch):
    monkeypatch.setattr("redisq.operations.WAIT_S", 0.0)  # every operation answers 202 at once
    monkeypatch.setattr("redisq.operations.SLICE_JOBS", 2)
    url, worker = coordinator_and_worker
    async with AsyncClient(url) as aclient:
        ids = [j.id for j in await aclient.enqueue_many([{"worker": "send-email", "id": f"b{i}"} for i in range(7)])]
        for job_id in ids:
            assert (await aclient.wait(job_id, timeout_s=10)).state == "dead"
        assert await aclient.retry_many("send-email", all=True, delay=3600) == 7
        assert [j.state async for j in aclient.list_jobs("send-email", "scheduled")] == ["scheduled"] * 7
        assert await aclient.delete_many("send-email", "dead", all=True) == 0  # none left
        for job_id in ids:
            await aclient.cancel(job_id)
        assert await aclient.delete_many("send-email", "cancelled", ids=ids) == 7
