"""The Python client of the HTTP API, on httpx: ``Client`` (blocking) and ``AsyncClient``.

    from redisq import Client

    with Client("http://127.0.0.1:7575", token="...") as redisq:
        job = redisq.enqueue("send-email", {"to": "ada@example.com"}, delay=60, id="welcome-ada")
        redisq.get(job.id).state          # "scheduled"
        redisq.cancel(job.id)
        redisq.wait(job.id, timeout_s=60).state          # "succeeded", "dead" or "cancelled"
        redisq.enqueue("daily-report", cron="0 9 * * *", timezone="Europe/Paris", id="daily")  # a ScheduleInfo

    Operators' calls: ``list_jobs`` (every job of a worker in a state, page by page),
    ``retry``/``retry_many`` (dead or cancelled jobs run again), ``delete``/``delete_many``
    (finished jobs), and the schedules' ``get_schedule``, ``list_schedules``,
    ``pause_schedule``, ``resume_schedule``, ``delete_schedule``.

Errors are those of ``redisq.errors``, chosen by the API's status code and carrying its
message (and ``field``/``index`` for a 422)::

    RedisqError                  any other status (its ``status_code`` says which)
    +-- BadRequestError          400
    +-- UnauthorizedError        401 missing or wrong API token
    +-- NotFoundError            404 no such job
    +-- ConflictError            409 e.g. cancelling a finished job
    +-- PayloadTooLargeError     413
    +-- ValidationError          422 a field is wrong (unknown worker, bad runAt, a field this server does not know)
    +-- UnavailableError         503 Redis is down; also: the coordinator cannot be reached, or
                                 gave no answer within ``timeout_s`` (an enqueue may then have
                                 been done: enqueue again with the same ``id`` to make it safe)
    +-- WaitTimeoutError         ``wait``: the job had not finished within its ``timeout_s``
                                 (also a ``TimeoutError``; ``job`` is the job as last read)
    +-- OperationFailedError     ``retry_many``/``delete_many``: the bulk operation stopped with
                                 an error (``done`` says how many it had done by then)

Bad values that cannot be sent as JSON (``delay=float("nan")``, NaN in ``args``) raise
``ValidationError`` naming the field, before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias, TypedDict, TypeVar, overload

import httpx

from .errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RedisqError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)

DEFAULT_URL = "http://127.0.0.1:7575"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PAGE_SIZE = 100  # jobs per GET /jobs page, as the server's default (at most 1000)
WAIT_FIRST_POLL_S = 0.05  # wait() reads the job again after this, doubling up to WAIT_POLL_MAX_S
WAIT_POLL_MAX_S = 0.5
OPERATION_POLL_S = 0.25  # retry_many/delete_many read a bulk operation's progress this often

ERRORS_BY_STATUS: dict[int, type[RedisqError]] = {
    400: BadRequestError, 401: UnauthorizedError, 404: NotFoundError, 409: ConflictError,
    413: PayloadTooLargeError, 422: ValidationError, 503: UnavailableError,
}


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt of a job, as ``GET /job/{id}``'s ``history`` has it (oldest first, the
    last 25 kept). ``outcome`` is "succeeded", "failed", "timed out", "throttled", "unsent"
    or "running"; ``status`` the worker's HTTP status when it answered one."""

    attempt: int
    started_at: datetime | None
    ended_at: datetime | None
    duration_ms: int | None
    outcome: str
    status: int | None
    error: str | None
    coordinator: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptInfo:
        return cls(attempt=data.get("attempt", 0), started_at=_time(data.get("startedAt")),
                   ended_at=_time(data.get("endedAt")), duration_ms=data.get("durationMs"),
                   outcome=data.get("outcome", ""), status=data.get("status"), error=data.get("error"),
                   coordinator=data.get("coordinator"))


@dataclass(frozen=True)
class JobInfo:
    """A job as the API answers it. ``raw`` holds the whole answer, fields added by newer
    servers included."""

    id: str
    worker: str
    state: str
    args: Any
    run_at: datetime | None
    attempts: int
    max_attempts: int
    last_error: str | None
    result: Any
    created_at: datetime | None
    finished_at: datetime | None
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    created: bool | None = None  # enqueue: True when new, False when the id existed; None elsewhere
    history: tuple[AttemptInfo, ...] = ()  # get() and wait() only: every attempt, oldest first (the last 25)

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "dead", "cancelled")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], created: bool | None = None) -> JobInfo:
        return cls(
            id=data["id"], worker=data["worker"], state=data["state"], args=data.get("args"),
            run_at=_time(data.get("runAt")), attempts=data.get("attempts", 0), max_attempts=data.get("maxAttempts", 0),
            last_error=data.get("lastError"), result=data.get("result"), created_at=_time(data.get("createdAt")),
            finished_at=_time(data.get("finishedAt")), raw=dict(data), created=created,
            history=tuple(AttemptInfo.from_json(a) for a in data.get("history") or ()),
        )


@dataclass(frozen=True)
class ScheduleInfo:
    """A cron schedule as the API answers it (``enqueue(..., cron=...)`` creates or updates
    one). ``next_run_at`` is None while paused; ``raw`` holds the whole answer (``args``,
    ``catchUp``, ``lastJobs``, ...)."""

    id: str
    worker: str
    cron: str
    timezone: str
    next_run_at: datetime | None
    next_run_times: tuple[datetime, ...]
    paused: bool
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    created: bool | None = None  # enqueue: True when new, False when the id existed (updated in place)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], created: bool | None = None) -> ScheduleInfo:
        return cls(
            id=data["id"], worker=data["worker"], cron=data["cron"], timezone=data.get("timezone", "UTC"),
            next_run_at=_time(data.get("nextRunAt")),
            next_run_times=tuple(t for t in map(_time, data.get("nextRunTimes") or ()) if t is not None),
            paused=bool(data.get("paused", False)), raw=dict(data), created=created,
        )


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _run_at_text(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:  # naive: UTC, as the server reads a time without offset
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _time_fields(run_at: datetime | float | str | None, delay: float | timedelta | None) -> dict[str, Any]:
    """``runAt`` and ``delay`` as a body sends them, those given."""
    fields: dict[str, Any] = {}
    if run_at is not None:
        fields["runAt"] = _run_at_text(run_at) if isinstance(run_at, datetime) else run_at
    if delay is not None:
        fields["delay"] = _seconds(delay)
    return fields


def _check_json(body: Mapping[str, Any]) -> None:
    """A ValidationError naming the first field that cannot be sent as JSON (NaN, infinity,
    an object JSON has no form for), before anything is sent."""
    for name, value in body.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"{name}: must be a finite number, got {value!r}", field=name)
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValidationError(f"{name}: must be JSON (no NaN or Infinity)", field=name) from None
        except TypeError as e:
            raise ValidationError(f"{name}: cannot be sent as JSON: {e}", field=name) from None


def enqueue_body(worker: str, args: Any = None, *, run_at: datetime | float | str | None = None,
                 delay: float | timedelta | None = None, cron: str | None = None, timezone: str | None = None,
                 catch_up: bool | None = None, id: str | None = None, max_attempts: int | None = None,
                 timeout: float | timedelta | None = None, throttle_key: str | None = None, cost: float | None = None,
                 **extra: Any) -> dict[str, Any]:
    """The ``POST /job`` body; fields left as None are left out (the server's defaults
    apply). ``extra`` passes further API fields as they are spelled there.

    ``run_at``: a ``datetime`` (a naive one is taken as UTC, not local time, and sent with
    its ``+00:00`` offset), unix seconds, or a string the server parses. ``cron`` (with
    ``timezone``, ``catch_up``) makes the body a schedule's: ``run_at``/``delay`` do not
    apply to it, ``id``, ``args``, ``max_attempts``, ``timeout``, ``throttle_key`` and ``cost``
    do (for each job it fires). A value that cannot be sent as JSON (NaN, infinity) raises
    ``ValidationError`` naming the field."""
    body: dict[str, Any] = {"worker": worker}
    if args is not None:
        body["args"] = args
    body.update(_time_fields(run_at, delay))
    if timeout is not None:
        body["timeout"] = _seconds(timeout)
    for name, value in (("cron", cron), ("timezone", timezone), ("catchUp", catch_up), ("id", id),
                        ("maxAttempts", max_attempts), ("throttleKey", throttle_key), ("cost", cost)):
        if value is not None:
            body[name] = value
    body.update(extra)
    if "catchUp" in body and body.get("cron") is None:
        raise ValidationError("catchUp: only a schedule takes it (give cron=...)", field="catchUp")
    _check_json(body)
    return body


def _is_schedule(body: Mapping[str, Any]) -> bool:
    return body.get("cron") is not None  # as the server tells a schedule from a job


def _batch_body(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each job is a mapping of ``enqueue``'s keyword arguments (``worker`` included)."""
    bodies = []
    for i, job in enumerate(jobs):
        try:
            bodies.append(enqueue_body(**dict(job)))
        except ValidationError as e:
            raise ValidationError(f"jobs[{i}].{e.message}", field=e.field, index=i) from None
    return {"jobs": bodies}


def _enqueued(resp: httpx.Response, body: Mapping[str, Any]) -> JobInfo | ScheduleInfo:
    data = _answer(resp)
    info = ScheduleInfo if _is_schedule(body) else JobInfo
    return info.from_json(data, created=resp.status_code == 201)


def error_from_response(resp: httpx.Response) -> RedisqError:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        message = data["error"]
        field_name, index = data.get("field"), data.get("index")
    else:
        message = resp.text.strip()[:300] or resp.reason_phrase or "no message"
        field_name, index = None, None
    cls = ERRORS_BY_STATUS.get(resp.status_code, RedisqError)
    error = cls(f"{resp.request.method} {resp.request.url.path}: HTTP {resp.status_code}: {message}",
                field=field_name if isinstance(field_name, str) else None,
                index=index if isinstance(index, int) else None)
    if cls is RedisqError:
        error.status_code = resp.status_code
    error.message = message
    return error


def _answer(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise error_from_response(resp)
    return resp.json()


class WaitTimeoutError(RedisqError, TimeoutError):
    """``wait``: the job had not finished within ``timeout_s``; ``job`` is the job as last read."""

    def __init__(self, message: str, job: JobInfo):
        super().__init__(message)
        self.job = job


class OperationFailedError(RedisqError):
    """A bulk retry or delete that stopped with an error; ``done`` jobs had been handled by then."""

    def __init__(self, message: str, *, operation: str | None, done: int):
        super().__init__(message)
        self.operation = operation
        self.done = done


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()  # retry(args=...) left out: the job keeps its args (None would send null)


def _retry_body(args: Any, run_at: datetime | float | str | None, delay: float | timedelta | None
                ) -> dict[str, Any] | None:
    """``POST /job/{id}/retry``'s body (None: no body, the job runs now with its args)."""
    body: dict[str, Any] = {} if args is UNCHANGED else {"args": args}
    body.update(_time_fields(run_at, delay))
    _check_json(body)
    return body or None


def _bulk_body(worker: str, state: str, ids: Sequence[str] | None, all: bool, limit: int | None) -> dict[str, Any]:
    """``POST /jobs/retry`` and ``/jobs/delete``'s body: the jobs named by ``ids``, or ``all``."""
    if (ids is None) == (not all):
        raise ValidationError("ids: give either ids=[...] or all=True", field="ids")
    body: dict[str, Any] = {"worker": worker, "state": state}
    if ids is not None:
        body["ids"] = list(ids)
    else:
        body["all"] = True
    if limit is not None:
        body["limit"] = limit
    return body


def _page_params(worker: str, state: str, throttle_key: str | None, page_size: int,
                 cursor: str | None) -> dict[str, str]:
    params = {"worker": worker, "state": state, "limit": str(page_size)}
    if throttle_key is not None:
        params["throttleKey"] = throttle_key
    if cursor is not None:
        params["cursor"] = cursor
    return params


@dataclass(frozen=True)
class _Call:
    """One request of a call that takes several (``wait``, the bulk operations)."""

    method: str
    path: str
    json: Any = None


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_T = TypeVar("_T")
# A call of several requests, written once for both clients: it yields what to do next and is
# sent each request's answer (None after a sleep); its return value is the call's.
_Steps: TypeAlias = Generator[_Call | _Sleep, httpx.Response | None, _T]


def _answered(resp: httpx.Response | None) -> Any:
    assert resp is not None, "a _Call is answered with its response"
    return _answer(resp)


def _wait_steps(job_id: str, timeout_s: float) -> _Steps[JobInfo]:
    deadline = time.monotonic() + timeout_s
    pause_s = WAIT_FIRST_POLL_S
    while True:
        job = JobInfo.from_json(_answered((yield _Call("GET", f"/job/{job_id}"))))
        if job.finished:
            return job
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            raise WaitTimeoutError(f"job {job_id!r} has not finished within {timeout_s:g} s "
                                   f"(it is {job.state}, after {job.attempts} attempts)", job)
        yield _Sleep(min(pause_s, left_s))
        pause_s = min(pause_s * 2, WAIT_POLL_MAX_S)


def _delete_one_steps(job_id: str) -> _Steps[None]:
    """Read the job (404 unknown), refuse one that has not finished, then delete it by id."""
    job = JobInfo.from_json(_answered((yield _Call("GET", f"/job/{job_id}"))))
    if not job.finished:
        raise ConflictError(f"job {job_id!r} has not finished ({job.state}): cancel it first")
    body = {"worker": job.worker, "state": job.state, "ids": [job_id]}
    answer = _answered((yield _Call("POST", "/jobs/delete", body)))
    for skipped in answer.get("skipped") or ():
        reason = skipped.get("reason", "skipped")
        error = NotFoundError if reason == "not found" else ConflictError
        raise error(f"job {job_id!r} was not deleted: {reason}")


def _bulk_steps(kind: Literal["retry", "delete"], body: dict[str, Any]) -> _Steps[int]:
    """POST /jobs/{kind}, then (when it goes on in the background) its operation until done."""
    count = "retried" if kind == "retry" else "deleted"
    answer = _answered((yield _Call("POST", f"/jobs/{kind}", body)))
    while not answer.get("done", True):
        yield _Sleep(OPERATION_POLL_S)
        answer = _answered((yield _Call("GET", f"/operations/{answer['operation']}")))
    if answer.get("error"):
        raise OperationFailedError(f"{kind} of {body['worker']}'s {body['state']} jobs stopped after "
                                   f"{answer.get(count, 0)}: {answer['error']}",
                                   operation=answer.get("operation"), done=answer.get(count, 0))
    return int(answer.get(count, 0))


# Errors after which the request may have reached the coordinator (it was sent, or being
# sent, when the answer failed to come). The others (ConnectError, ConnectTimeout,
# PoolTimeout, ...) happen before anything is sent.
_AFTER_SENDING = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def _transport_error(base_url: str, timeout_s: float, method: str, path: str, json_body: Any,
                     error: httpx.TransportError) -> UnavailableError:
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if not isinstance(error, _AFTER_SENDING):
        return UnavailableError(f"cannot reach redisq at {base_url}: {what}")
    if isinstance(error, httpx.TimeoutException):
        message = f"{method} {path}: no answer from redisq at {base_url} within timeout_s={timeout_s:g}s ({what})"
    else:
        message = f"{method} {path}: the connection to redisq at {base_url} was lost before an answer came ({what})"
    if method == "POST" and path in ("/job", "/jobs"):
        one = path == "/job"
        kind = "schedule" if one and isinstance(json_body, Mapping) and _is_schedule(json_body) else "job"
        items = [json_body] if one else (json_body.get("jobs") or []) if isinstance(json_body, Mapping) else []
        given = bool(items) and all(isinstance(j, Mapping) and j.get("id") is not None for j in items)
        if one:
            message += (f"; the {kind} may have been created: "
                        + ("enqueue again with the same id, which creates it at most once" if given else
                           "enqueueing again without an id could create a second one; give id=... so that a "
                           "retry is safe"))
        else:
            message += ("; the jobs may have been created: "
                        + ("enqueue them again with the same ids, which create each at most once" if given else
                           "enqueueing again without an id on each job could create them twice; give each an "
                           "id so that a retry is safe"))
    return UnavailableError(message)


class _ClientSettings(TypedDict):
    """What ``Client`` and ``AsyncClient`` give their httpx client."""

    base_url: str
    headers: dict[str, str]
    timeout: float


def _client_settings(base_url: str, token: str | None, timeout_s: float) -> _ClientSettings:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": base_url.rstrip("/"), "headers": headers, "timeout": timeout_s}


class Client:
    """Blocking client. ``token`` is one of the coordinator's ``api_tokens``; ``transport``
    replaces the network (``httpx.MockTransport`` in tests)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(transport=transport, **_client_settings(base_url, token, timeout_s))

    def _request(self, method: str, path: str, json: Any = None,
                 params: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as e:
            raise _transport_error(self.base_url, self.timeout_s, method, path, json, e) from e

    def _run(self, steps: _Steps[_T]) -> _T:
        reply: httpx.Response | None = None
        try:
            while True:
                step = steps.send(reply)
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                    reply = None
                else:
                    reply = self._request(step.method, step.path, step.json)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]

    @overload
    def enqueue(self, worker: str, args: Any = None, *, cron: None = None, **options: Any) -> JobInfo: ...
    @overload
    def enqueue(self, worker: str, args: Any = None, *, cron: str, **options: Any) -> ScheduleInfo: ...

    def enqueue(self, worker: str, args: Any = None, **options: Any) -> JobInfo | ScheduleInfo:
        """Enqueue one job (a ``JobInfo``), or with ``cron=`` create or update a schedule (a
        ``ScheduleInfo``); see ``enqueue_body`` for the options."""
        body = enqueue_body(worker, args, **options)
        return _enqueued(self._request("POST", "/job", body), body)

    def enqueue_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JobInfo]:
        """Enqueue up to 1000 jobs in one call, each a mapping of ``enqueue``'s arguments."""
        data = _answer(self._request("POST", "/jobs", _batch_body(jobs)))
        return [JobInfo.from_json(job) for job in data["jobs"]]

    def get(self, job_id: str) -> JobInfo:
        return JobInfo.from_json(_answer(self._request("GET", f"/job/{job_id}")))

    def cancel(self, job_id: str) -> JobInfo:
        return JobInfo.from_json(_answer(self._request("DELETE", f"/job/{job_id}")))

    def wait(self, job_id: str, timeout_s: float | timedelta = 60.0) -> JobInfo:
        """The job once it has finished (succeeded, dead or cancelled), read every 50 ms at
        first and at most every 0.5 s; ``WaitTimeoutError`` when it has not within ``timeout_s``."""
        return self._run(_wait_steps(job_id, _seconds(timeout_s)))

    def list_jobs(self, worker: str, state: str, throttle_key: str | None = None,
                  page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[JobInfo]:
        """Every job of ``worker`` in ``state`` (only ``throttle_key``'s, when given): newest
        first for finished states, soonest first for waiting ones, fetched ``page_size`` (1 to
        1000) at a time as the iteration goes."""
        cursor: str | None = None
        while True:
            params = _page_params(worker, state, throttle_key, page_size, cursor)
            page = _answer(self._request("GET", "/jobs", params=params))
            yield from (JobInfo.from_json(job) for job in page["jobs"])
            cursor = page.get("next")
            if cursor is None:
                return

    def retry(self, job_id: str, *, args: Any = UNCHANGED, run_at: datetime | float | str | None = None,
              delay: float | timedelta | None = None) -> JobInfo:
        """Run a dead or cancelled job again (now, or at ``run_at`` / after ``delay``), its
        attempts counted from 0, with new ``args`` when given. ``ConflictError`` for a job
        that is not dead or cancelled."""
        body = _retry_body(args, run_at, delay)
        return JobInfo.from_json(_answer(self._request("POST", f"/job/{job_id}/retry", body)))

    def retry_many(self, worker: str, state: str = "dead", ids: Sequence[str] | None = None, all: bool = False,
                   limit: int | None = None, *, args: Any = UNCHANGED, run_at: datetime | float | str | None = None,
                   delay: float | timedelta | None = None) -> int:
        """Retry the worker's jobs in ``state`` ("dead" or "cancelled") named by ``ids``, or
        ``all`` of them (at most ``limit``), as ``retry`` does each; waits until the server
        has done them all and answers how many it retried (ids not found or not in that
        state are skipped)."""
        body = {**_bulk_body(worker, state, ids, all, limit), **(_retry_body(args, run_at, delay) or {})}
        return self._run(_bulk_steps("retry", body))

    def delete(self, job_id: str) -> None:
        """Delete a finished job now, before its retention ends. ``NotFoundError`` unknown,
        ``ConflictError`` a job that has not finished (cancel it first)."""
        self._run(_delete_one_steps(job_id))

    def delete_many(self, worker: str, state: str, ids: Sequence[str] | None = None, all: bool = False,
                    limit: int | None = None) -> int:
        """Delete the worker's finished jobs in ``state`` (succeeded, dead or cancelled) named
        by ``ids``, or ``all`` of them (at most ``limit``); answers how many, once done."""
        return self._run(_bulk_steps("delete", _bulk_body(worker, state, ids, all, limit)))

    def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(self._request("GET", f"/schedule/{schedule_id}")))

    def list_schedules(self, worker: str | None = None) -> list[ScheduleInfo]:
        """Every schedule (of ``worker``, when given)."""
        params = {"worker": worker} if worker is not None else None
        data = _answer(self._request("GET", "/schedules", params=params))
        return [ScheduleInfo.from_json(s) for s in data["schedules"]]

    def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(self._request("POST", f"/schedule/{schedule_id}/pause")))

    def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(self._request("POST", f"/schedule/{schedule_id}/resume")))

    def delete_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Delete a schedule (the jobs it created stay); answers it as it was."""
        return ScheduleInfo.from_json(_answer(self._request("DELETE", f"/schedule/{schedule_id}")))

    def health(self) -> dict[str, Any]:
        return dict(_answer(self._request("GET", "/health")))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """``Client`` for asyncio code: the same methods, awaited."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(transport=transport, **_client_settings(base_url, token, timeout_s))

    async def _request(self, method: str, path: str, json: Any = None,
                       params: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            return await self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as e:
            raise _transport_error(self.base_url, self.timeout_s, method, path, json, e) from e

    async def _run(self, steps: _Steps[_T]) -> _T:
        reply: httpx.Response | None = None
        try:
            while True:
                step = steps.send(reply)
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                    reply = None
                else:
                    reply = await self._request(step.method, step.path, step.json)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]

    @overload
    async def enqueue(self, worker: str, args: Any = None, *, cron: None = None, **options: Any) -> JobInfo: ...
    @overload
    async def enqueue(self, worker: str, args: Any = None, *, cron: str, **options: Any) -> ScheduleInfo: ...

    async def enqueue(self, worker: str, args: Any = None, **options: Any) -> JobInfo | ScheduleInfo:
        body = enqueue_body(worker, args, **options)
        return _enqueued(await self._request("POST", "/job", body), body)

    async def enqueue_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JobInfo]:
        data = _answer(await self._request("POST", "/jobs", _batch_body(jobs)))
        return [JobInfo.from_json(job) for job in data["jobs"]]

    async def get(self, job_id: str) -> JobInfo:
        return JobInfo.from_json(_answer(await self._request("GET", f"/job/{job_id}")))

    async def cancel(self, job_id: str) -> JobInfo:
        return JobInfo.from_json(_answer(await self._request("DELETE", f"/job/{job_id}")))

    async def wait(self, job_id: str, timeout_s: float | timedelta = 60.0) -> JobInfo:
        return await self._run(_wait_steps(job_id, _seconds(timeout_s)))

    async def list_jobs(self, worker: str, state: str, throttle_key: str | None = None,
                        page_size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[JobInfo]:
        cursor: str | None = None
        while True:
            params = _page_params(worker, state, throttle_key, page_size, cursor)
            page = _answer(await self._request("GET", "/jobs", params=params))
            for job in page["jobs"]:
                yield JobInfo.from_json(job)
            cursor = page.get("next")
            if cursor is None:
                return

    async def retry(self, job_id: str, *, args: Any = UNCHANGED, run_at: datetime | float | str | None = None,
                    delay: float | timedelta | None = None) -> JobInfo:
        body = _retry_body(args, run_at, delay)
        return JobInfo.from_json(_answer(await self._request("POST", f"/job/{job_id}/retry", body)))

    async def retry_many(self, worker: str, state: str = "dead", ids: Sequence[str] | None = None,
                         all: bool = False, limit: int | None = None, *, args: Any = UNCHANGED,
                         run_at: datetime | float | str | None = None, delay: float | timedelta | None = None) -> int:
        body = {**_bulk_body(worker, state, ids, all, limit), **(_retry_body(args, run_at, delay) or {})}
        return await self._run(_bulk_steps("retry", body))

    async def delete(self, job_id: str) -> None:
        await self._run(_delete_one_steps(job_id))

    async def delete_many(self, worker: str, state: str, ids: Sequence[str] | None = None, all: bool = False,
                          limit: int | None = None) -> int:
        return await self._run(_bulk_steps("delete", _bulk_body(worker, state, ids, all, limit)))

    async def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(await self._request("GET", f"/schedule/{schedule_id}")))

    async def list_schedules(self, worker: str | None = None) -> list[ScheduleInfo]:
        params = {"worker": worker} if worker is not None else None
        data = _answer(await self._request("GET", "/schedules", params=params))
        return [ScheduleInfo.from_json(s) for s in data["schedules"]]

    async def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(await self._request("POST", f"/schedule/{schedule_id}/pause")))

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(await self._request("POST", f"/schedule/{schedule_id}/resume")))

    async def delete_schedule(self, schedule_id: str) -> ScheduleInfo:
        return ScheduleInfo.from_json(_answer(await self._request("DELETE", f"/schedule/{schedule_id}")))

    async def health(self) -> dict[str, Any]:
        return dict(_answer(await self._request("GET", "/health")))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
