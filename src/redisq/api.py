"""The HTTP API: a Starlette app whose routes call the store, with errors as status codes.

Every error body is ``{"error": "<what was wrong>"}`` plus ``field``/``index`` where they
apply (see ``errors.py`` for the status of each). Bodies are read up to
``max_body_bytes``; nothing is written unless the whole request is valid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .coordinator import Coordinator
from .dispatch import MAX_RETRY_AFTER_S
from .cron import is_schedule_body, parse_schedule, reject_cron_in_batch
from .errors import (BadRequestError, PayloadTooLargeError, RedisqError, UnauthorizedError,
                     UnavailableError, ValidationError)
from .keys import split_job_id
from .limits import Limits, parse_limits_patch, patched_fields
from .model import Job, iso_from_ms, parse_enqueue
from .security import ApiTokenMiddleware, ReceiptGrant, bearer_token, verify_receipt_token
from .store import ACCEPTED, Receipt

log = logging.getLogger("redisq.api")

MAX_BATCH = 1000
RECEIPT_FIELDS = ("status", "error", "result", "retry", "retryAfter")


async def read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"request body is {length} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    if not body:
        raise BadRequestError("request body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequestError("request body is nested too deeply") from None


def job_response(job: Job, status_code: int = 200) -> Response:
    return Response(job.json_text(), status_code=status_code, media_type="application/json")


def error_response(error: RedisqError) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.status_code)


def create_app(coordinator: Coordinator, *, manage_lifecycle: bool = True) -> Starlette:
    """The API over ``coordinator``; with ``manage_lifecycle`` the app's lifespan starts and
    stops it (dispatcher and poller included)."""
    config = coordinator.config
    store = coordinator.store

    async def enqueue_one(request: Request) -> Response:
        body = await read_json(request, config.max_body_bytes)
        if is_schedule_body(body):
            return await save_schedule(body)
        job_request = parse_enqueue(body, config.workers)
        results, wake = await store.enqueue_many([job_request])
        await coordinator.enqueued(wake)
        job, created = results[0]
        return job_response(job, 201 if created else 200)

    async def enqueue_batch(request: Request) -> Response:
        body = await read_json(request, config.max_body_bytes)
        if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
            raise ValidationError("body: expected {\"jobs\": [...]}", field="jobs")
        items = body["jobs"]
        extra = [k for k in body if k != "jobs"]
        if extra:
            raise ValidationError(f"{extra[0]}: unknown field (expected jobs)", field=extra[0])
        if not items:
            raise ValidationError("jobs: must hold at least one job", field="jobs")
        if len(items) > MAX_BATCH:
            raise ValidationError(f"jobs: at most {MAX_BATCH} jobs per call, got {len(items)}", field="jobs")
        reject_cron_in_batch(items)
        requests = [parse_enqueue(item, config.workers, index=i) for i, item in enumerate(items)]
        results, wake = await store.enqueue_many(requests)
        await coordinator.enqueued(wake)
        created = sum(1 for _, was_created in results if was_created)
        text = '{"jobs":[' + ",".join(job.json_text() for job, _ in results) + f'],"created":{created}}}'
        return Response(text, status_code=201 if created else 200, media_type="application/json")

    async def get_job(request: Request) -> Response:
        return job_response(await store.get(request.path_params["id"]))

    async def cancel_job(request: Request) -> Response:
        job = await store.cancel(request.path_params["id"])
        coordinator.settled(job.worker, ["cancelled"])  # a cancelled running job frees its slot
        return job_response(job)

    def receipt_grant(request: Request) -> ReceiptGrant:
        """The attempt (and job sequence) that the request's bearer token was signed for, for
        the job in the path; a missing or bad token is refused before the body is read."""
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise UnauthorizedError("missing receipt token: send Authorization: Bearer <receiptToken>")
        grant = verify_receipt_token(coordinator.secret, request.path_params["id"], token)
        if grant is None:
            raise UnauthorizedError("bad receipt token for this job")
        return grant

    async def post_receipt(request: Request) -> JSONResponse:
        job_id = request.path_params["id"]
        grant = receipt_grant(request)
        body = await read_json(request, config.max_body_bytes)
        receipt = parse_receipt(body, job_id, grant.attempt, grant.seq)
        word = await store.receipt(job_id, receipt)
        parts = split_job_id(job_id)
        if parts is not None:
            coordinator.settled(parts[0], [word])
        if word == "cancelled":
            return JSONResponse({"accepted": False, "state": "cancelled",
                                 "message": "the job was cancelled; the receipt changes nothing"})
        # An accepted receipt's word is the job's new state; only a repeat needs a look.
        state = word if word in ACCEPTED else (await store.get(job_id)).state.value
        return JSONResponse({"accepted": True, "duplicate": word == "duplicate", "state": state})

    # -- operators: workers and their live limits ------------------------------------------
    async def list_workers(request: Request) -> JSONResponse:
        states = [await store.worker_state(name) for name in config.workers]
        return JSONResponse({"workers": [state.to_json() for state in states]})

    async def get_worker(request: Request) -> JSONResponse:
        return JSONResponse((await store.worker_state(request.path_params["name"])).to_json())

    async def patch_worker(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        store.worker(name)  # 404 before reading the body
        body = await read_json(request, config.max_body_bytes)
        current = await store.limits(name)
        await store.set_limits(name, parse_limits_patch(body, current), fields=patched_fields(body))
        await coordinator.enqueued({name})  # a higher rate or cap may let jobs go now
        return JSONResponse((await store.worker_state(name)).to_json())

    async def set_paused(request: Request, paused: bool) -> JSONResponse:
        name = request.path_params["name"]
        await store.set_limits(name, Limits(paused=paused), fields={"paused"})  # only the flag is written
        if not paused:
            await coordinator.enqueued({name})
        return JSONResponse((await store.worker_state(name)).to_json())

    async def pause_worker(request: Request) -> JSONResponse:
        return await set_paused(request, True)

    async def resume_worker(request: Request) -> JSONResponse:
        return await set_paused(request, False)

    async def save_schedule(body: Any) -> JSONResponse:
        schedule, created = await coordinator.schedules.save(parse_schedule(body, config.workers))
        coordinator.schedules_changed(schedule.worker)
        return JSONResponse(schedule.to_json(), status_code=201 if created else 200)

    async def list_schedules(request: Request) -> JSONResponse:
        worker = request.query_params.get("worker")
        if worker is not None and worker not in config.workers:
            known = ", ".join(sorted(config.workers)) or "none are configured"
            raise ValidationError(f"worker: unknown worker {worker!r} (known: {known})", field="worker")
        schedules = await coordinator.schedules.list(worker)
        return JSONResponse({"schedules": [s.to_json() for s in schedules]})

    async def get_schedule(request: Request) -> JSONResponse:
        return JSONResponse((await coordinator.schedules.get(request.path_params["id"])).to_json())

    async def delete_schedule(request: Request) -> JSONResponse:
        return JSONResponse((await coordinator.schedules.delete(request.path_params["id"])).to_json())

    async def pause_schedule(request: Request) -> JSONResponse:
        return JSONResponse((await coordinator.schedules.set_paused(request.path_params["id"], True)).to_json())

    async def resume_schedule(request: Request) -> JSONResponse:
        schedule = await coordinator.schedules.set_paused(request.path_params["id"], False)
        coordinator.schedules_changed(schedule.worker)
        return JSONResponse(schedule.to_json())

    async def heartbeat(request: Request) -> JSONResponse:
        job_id = request.path_params["id"]
        grant = receipt_grant(request)
        lease_deadline_ms = await store.heartbeat(job_id, grant.attempt, grant.seq)
        return JSONResponse({"extended": True, "attempt": grant.attempt, "leaseDeadline": iso_from_ms(lease_deadline_ms)})

    async def health(request: Request) -> JSONResponse:
        try:
            await store.ping()
        except UnavailableError as e:
            return JSONResponse({"redis": "down", "error": e.message}, status_code=503)
        return JSONResponse({"redis": "up", "store": "embedded" if coordinator.embedded else "redis"})

    async def on_redisq_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RedisqError)
        return error_response(exc)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await coordinator.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await coordinator.stop()

    routes = [
        Route("/job", enqueue_one, methods=["POST"]),
        Route("/jobs", enqueue_batch, methods=["POST"]),
        Route("/job/{id}", get_job, methods=["GET"]),
        Route("/job/{id}", cancel_job, methods=["DELETE"]),
        Route("/job/{id}/receipt", post_receipt, methods=["POST"]),
        Route("/workers", list_workers, methods=["GET"]),
        Route("/workers/{name}", get_worker, methods=["GET"]),
        Route("/workers/{name}", patch_worker, methods=["PATCH"]),
        Route("/workers/{name}/pause", pause_worker, methods=["POST"]),
        Route("/workers/{name}/resume", resume_worker, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/schedules", list_schedules, methods=["GET"]),
        Route("/schedule/{id}", get_schedule, methods=["GET"]),
        Route("/schedule/{id}", delete_schedule, methods=["DELETE"]),
        Route("/schedule/{id}/pause", pause_schedule, methods=["POST"]),
        Route("/schedule/{id}/resume", resume_schedule, methods=["POST"]),
        Route("/job/{id}/heartbeat", heartbeat, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={RedisqError: on_redisq_error, Exception: on_unexpected})
    if config.api_tokens:  # every route but security.OPEN_ROUTES needs a token, routes added later too
        app.add_middleware(ApiTokenMiddleware, tokens=config.api_tokens)
    return app


def parse_receipt(body: Any, job_id: str, attempt: int, seq: int = 0) -> Receipt:
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object")
    unknown = [k for k in body if k not in RECEIPT_FIELDS]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown field (expected {', '.join(RECEIPT_FIELDS)})", field=unknown[0])
    status = body.get("status")
    if status not in ("success", "failure"):
        raise ValidationError("status: must be \"success\" or \"failure\"", field="status")
    retry = body.get("retry", True)
    if not isinstance(retry, bool):
        raise ValidationError("retry: must be true or false", field="retry")
    error = body.get("error")
    if error is None:
        error_text = "" if status == "success" else "failed (the receipt gave no error)"
    elif isinstance(error, str):
        error_text = error
    else:
        error_text = json.dumps(error, separators=(",", ":"))
    result = body.get("result")
    try:
        result_json = "" if result is None else json.dumps(result, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValidationError("result: must be JSON (no NaN or Infinity)", field="result") from None
    retry_after = body.get("retryAfter")
    retry_after_ms = -1
    if retry_after is not None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)) or not math.isfinite(retry_after) \
                or not 0 <= retry_after <= MAX_RETRY_AFTER_S:
            raise ValidationError(f"retryAfter: must be a number of seconds from 0 to {MAX_RETRY_AFTER_S:g}, "
                                  f"got {retry_after!r}", field="retryAfter")
        if status != "failure" or not retry:
            raise ValidationError("retryAfter: only a failure that is retried can carry it", field="retryAfter")
        retry_after_ms = int(retry_after * 1000)
    parts = split_job_id(job_id)
    suffix = parts[1] if parts else job_id
    outcome = "success" if status == "success" else ("failure" if retry else "permanent")
    return Receipt(suffix, attempt, outcome, error=error_text, result_json=result_json,
                   retry_after_ms=retry_after_ms, seq=seq)
