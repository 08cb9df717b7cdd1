"""Schedules (recurring cron jobs): saved through POST /job with a cron, then listed, read,
paused, resumed and deleted here."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..coordinator import Coordinator
from ..cron import parse_schedule
from ..errors import ValidationError
from .http import coordinator_of


async def save_schedule(coordinator: Coordinator, body: Any) -> JSONResponse:
    """POST /job's answer for a body that is a schedule (see ``cron.is_schedule_body``)."""
    schedule, created = await coordinator.schedules.save(parse_schedule(body, coordinator.config.workers))
    coordinator.schedules_changed(schedule.worker)
    return JSONResponse(schedule.to_json(), status_code=201 if created else 200)


async def list_schedules(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    workers = coordinator.config.workers
    worker = request.query_params.get("worker")
    if worker is not None and worker not in workers:
        known = ", ".join(sorted(workers)) or "none are configured"
        raise ValidationError(f"worker: unknown worker {worker!r} (known: {known})", field="worker")
    schedules = await coordinator.schedules.list(worker)
    return JSONResponse({"schedules": [s.to_json() for s in schedules]})


async def get_schedule(request: Request) -> JSONResponse:
    return JSONResponse((await coordinator_of(request).schedules.get(request.path_params["id"])).to_json())


async def delete_schedule(request: Request) -> JSONResponse:
    return JSONResponse((await coordinator_of(request).schedules.delete(request.path_params["id"])).to_json())


async def pause_schedule(request: Request) -> JSONResponse:
    schedule = await coordinator_of(request).schedules.set_paused(request.path_params["id"], True)
    return JSONResponse(schedule.to_json())


async def resume_schedule(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    schedule = await coordinator.schedules.set_paused(request.path_params["id"], False)
    coordinator.schedules_changed(schedule.worker)
    return JSONResponse(schedule.to_json())


routes = [
    Route("/schedules", list_schedules, methods=["GET"]),
    Route("/schedule/{id}", get_schedule, methods=["GET"]),
    Route("/schedule/{id}", delete_schedule, methods=["DELETE"]),
    Route("/schedule/{id}/pause", pause_schedule, methods=["POST"]),
    Route("/schedule/{id}/resume", resume_schedule, methods=["POST"]),
]
