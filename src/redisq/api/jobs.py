"""Jobs: enqueue one (or save a schedule, for a body with a cron), enqueue a batch, read one,
cancel one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..cron import is_schedule_body, reject_cron_in_batch
from ..errors import ValidationError
from ..model import parse_enqueue
from .http import coordinator_of, job_response, read_json
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


routes = [
    Route("/job", enqueue_one, methods=["POST"]),
    Route("/jobs", enqueue_batch, methods=["POST"]),
    Route("/job/{id}", get_job, methods=["GET"]),
    Route("/job/{id}", cancel_job, methods=["DELETE"]),
]
