"""Schedules (recurring cron jobs): saved through POST /job with a cron, then listed, read,
paused, resumed and deleted here."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..coordinator import Coordinator
from ..cron import parse_schedule
from ..engine import Schedule
from ..errors import ValidationError
from ..model import iso_from_ms, json_number
from .http import coordinator_of


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """A schedule as the API answers it."""
    return {
        "id": schedule.id, "worker": schedule.worker, "cron": schedule.cron, "timezone": schedule.timezone,
        "args": json.loads(schedule.args_json), "catchUp": schedule.catch_up,
        "maxAttempts": schedule.max_attempts,
        "timeout": None if schedule.timeout_ms is None else schedule.timeout_ms / 1000,
        "throttleKey": schedule.throttle_key, "cost": json_number(schedule.cost),
        "paused": schedule.paused,
        "nextRunAt": None if schedule.paused else iso_from_ms(schedule.next_fire_ms),
        "nextRunTimes": [iso_from_ms(ms) for ms in schedule.next_run_times()],
        "lastFireAt": iso_from_ms(schedule.last_fire_ms),
        "lastJobs": [{"id": j.id, "state": j.state, "runAt": iso_from_ms(j.run_at_ms)} for j in schedule.last_jobs],
        "createdAt": iso_from_ms(schedule.created_ms), "updatedAt": iso_from_ms(schedule.updated_ms),
    }


async def save_schedule(coordinator: Coordinator, body: Any) -> JSONResponse:
    """POST /job's answer for a body that is a schedule (see ``cron.is_schedule_body``)."""
    schedule, created = await coordinator.engine.schedules.save(parse_schedule(body, coordinator.config.workers))
    return JSONResponse(schedule_json(schedule), status_code=201 if created else 200)


async def list_schedules(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    workers = coordinator.config.workers
    worker = request.query_params.get("worker")
    if worker is not None and worker not in workers:
        known = ", ".join(sorted(workers)) or "none are configured"
        raise ValidationError(f"worker: unknown worker {worker!r} (known: {known})", field="worker")
    schedules = await coordinator.engine.schedules.list(worker)
    return JSONResponse({"schedules": [schedule_json(s) for s in schedules]})


async def get_schedule(request: Request) -> JSONResponse:
    return JSONResponse(schedule_json(await coordinator_of(request).engine.schedules.get(request.path_params["id"])))


async def delete_schedule(request: Request) -> JSONResponse:
    return JSONResponse(schedule_json(await coordinator_of(request).engine.schedules.delete(request.path_params["id"])))


async def pause_schedule(request: Request) -> JSONResponse:
    schedule = await coordinator_of(request).engine.schedules.set_paused(request.path_params["id"], True)
    return JSONResponse(schedule_json(schedule))


async def resume_schedule(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    schedule = await coordinator.engine.schedules.set_paused(request.path_params["id"], False)
    return JSONResponse(schedule_json(schedule))


routes = [
    Route("/schedules", list_schedules, methods=["GET"]),
    Route("/schedule/{id}", get_schedule, methods=["GET"]),
    Route("/schedule/{id}", delete_schedule, methods=["DELETE"]),
    Route("/schedule/{id}/pause", pause_schedule, methods=["POST"]),
    Route("/schedule/{id}/resume", resume_schedule, methods=["POST"]),
]
