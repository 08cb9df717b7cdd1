"""Jobs: enqueue one (or save a schedule, for a body with a cron), enqueue a batch, read one,
cancel one, list them by state, retry or delete finished ones (one, or many in a bulk
operation: ``operations.py``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cron import is_schedule_body, reject_cron_in_batch
from ..engine.listings import MAX_PAGE
from ..errors import ValidationError, shown
from ..inputs import object_with
from ..json_text import COMPACT_JSON
from ..keys import THROTTLE_KEY_MAX_CHARS
from ..model import JobState, parse_enqueue
from ..operations import RERUN_FIELDS, parse_bulk, parse_rerun
from .http import coordinator_of, job_response, known_worker, query_of, read_json
from .schedules import save_schedule

MAX_BATCH = 1000


async def enqueue_one(request: Request) -> Response:
    coordinator = coordinator_of(request)
    body = await read_json(request, coordinator.config.max_body_bytes)
    if is_schedule_body(body):
        return await save_schedule(coordinator, body)
    job_request = parse_enqueue(body, coordinator.config.workers)
    results, _ = await coordinator.engine.enqueue_many([job_request])
    job, created = results[0]
    return job_response(job, 201 if created else 200)


async def enqueue_batch(request: Request) -> Response:
    coordinator = coordinator_of(request)
    body = await read_json(request, coordinator.config.max_body_bytes)
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
    requests = [parse_enqueue(item, coordinator.config.workers, index=i) for i, item in enumerate(items)]
    results, _ = await coordinator.engine.enqueue_many(requests)
    created = sum(1 for _, was_created in results if was_created)
    text = '{"jobs":[' + ",".join(job.json_text() for job, _ in results) + f'],"created":{created}}}'
    return Response(text, status_code=201 if created else 200, media_type="application/json")


async def get_job(request: Request) -> Response:
    return job_response(await coordinator_of(request).engine.get(request.path_params["id"]))


async def cancel_job(request: Request) -> Response:
    return job_response(await coordinator_of(request).engine.cancel(request.path_params["id"]))


LIST_PARAMS = ("worker", "state", "throttleKey", "limit", "cursor")


async def list_jobs(request: Request) -> Response:
    """``GET /jobs?worker=W&state=S[&throttleKey=K][&limit=N][&cursor=C]``."""
    coordinator = coordinator_of(request)
    query = query_of(request, LIST_PARAMS)
    worker = known_worker(coordinator, query.get("worker") or "")
    states = [s.value for s in JobState]
    try:
        state = JobState(query.get("state", ""))
    except ValueError:
        raise ValidationError(f"state: must be one of {', '.join(states)}, got {shown(query.get('state'))}",
                              field="state") from None
    throttle_key = query.get("throttleKey", "")
    if "throttleKey" in query and not 1 <= len(throttle_key) <= THROTTLE_KEY_MAX_CHARS:
        raise ValidationError(f"throttleKey: must be 1 to {THROTTLE_KEY_MAX_CHARS} characters", field="throttleKey")
    limit_text = query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise ValidationError(f"limit: must be a whole number from 1 to {MAX_PAGE}, got {shown(limit_text)}",
                              field="limit")
    page = await coordinator.engine.worker(worker).list_jobs(state, throttle_key, int(limit_text),
                                                             query.get("cursor") or None)
    text = ('{"jobs":[' + ",".join(job.json_text() for job in page.jobs) + '],"next":'
            + ("null" if page.next_cursor is None else f'"{page.next_cursor}"')
            + ',"counts":' + COMPACT_JSON.encode(page.counts) + "}")
    return Response(text, media_type="application/json")


async def retry_job(request: Request) -> Response:
    """``POST /job/{id}/retry`` with an optional body ``{"args", "runAt" | "delay"}``."""
    coordinator = coordinator_of(request)
    body: object = {}
    if (await request.body()).strip():
        body = await read_json(request, coordinator.config.max_body_bytes)
    rerun = parse_rerun(object_with(body, RERUN_FIELDS))
    job = await coordinator.engine.retry(request.path_params["id"], rerun.args_json, rerun.run_at_ms, rerun.delay_ms)
    return job_response(job)


async def bulk(request: Request, kind: str) -> Response:
    coordinator = coordinator_of(request)
    body = await read_json(request, coordinator.config.max_body_bytes)
    bulk_request = parse_bulk(kind, body, coordinator.config.workers)
    progress, finished = await coordinator.operations.start(bulk_request)
    return JSONResponse(progress.to_json(), status_code=200 if finished else 202)


async def retry_jobs(request: Request) -> Response:
    return await bulk(request, "retry")


async def delete_jobs(request: Request) -> Response:
    return await bulk(request, "delete")


async def get_operation(request: Request) -> Response:
    return JSONResponse(await coordinator_of(request).operations.get(request.path_params["operation"]))


routes = [
    Route("/job", enqueue_one, methods=["POST"]),
    Route("/jobs", enqueue_batch, methods=["POST"]),
    Route("/job/{id}", get_job, methods=["GET"]),
    Route("/job/{id}", cancel_job, methods=["DELETE"]),
    Route("/job/{id}/retry", retry_job, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/retry", retry_jobs, methods=["POST"]),
    Route("/jobs/delete", delete_jobs, methods=["POST"]),
    Route("/operations/{operation}", get_operation, methods=["GET"]),
]
