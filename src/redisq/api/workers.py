"""Workers, for operators: each worker's state and its live limits, changed by PATCH or by
pausing and resuming it (each change logged with the API token that made it)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..engine import WorkerState
from ..limits import Limits, parse_limits_patch, patched_fields
from ..security import token_name
from .http import coordinator_of, read_json


def worker_json(state: WorkerState) -> dict[str, Any]:
    """A worker's state as ``GET /workers`` answers it."""
    return {
        "name": state.name, "url": state.url, "limits": state.limits.to_json(),
        "jobs": {"scheduled": state.scheduled, "retrying": state.retrying, "running": state.running,
                 "succeeded": state.succeeded, "dead": state.dead, "cancelled": state.cancelled},
        "throttleKeysWaiting": state.throttle_keys, "tokens": state.tokens, "totalTokens": state.total_tokens,
        "backPressureFor": state.back_pressure_s,
        "dispatchedLastMinute": state.dispatched_last_minute,
        "dispatchRate": round(state.dispatched_last_minute / 60, 3),
    }


async def list_workers(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    states = [await engine.state() for engine in coordinator.engine.workers.values()]
    return JSONResponse({"workers": [worker_json(state) for state in states]})


async def get_worker(request: Request) -> JSONResponse:
    engine = coordinator_of(request).engine.worker(request.path_params["name"])
    return JSONResponse(worker_json(await engine.state()))


async def patch_worker(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    name: str = request.path_params["name"]
    engine = coordinator.engine.worker(name)  # 404 before reading the body
    body = await read_json(request, coordinator.config.max_body_bytes)
    current = await engine.limits()
    changed = await engine.set_limits(parse_limits_patch(body, current), fields=patched_fields(body))
    limits_changed(request, name, current, changed)
    return JSONResponse(worker_json(await engine.state()))


async def set_paused(request: Request, paused: bool) -> JSONResponse:
    coordinator = coordinator_of(request)
    name: str = request.path_params["name"]
    engine = coordinator.engine.worker(name)
    current = await engine.limits()
    changed = await engine.set_limits(Limits(paused=paused), fields={"paused"})  # only the flag is written
    limits_changed(request, name, current, changed)
    return JSONResponse(worker_json(await engine.state()))


def limits_changed(request: Request, worker: str, before: Limits, after: Limits) -> None:
    """Tell the signals who changed what (the API token's name, the client's address)."""
    client = f"{request.client.host}" if request.client else None
    coordinator_of(request).signals.limits_changed(worker, before, after, token_name(request.scope), client)


async def pause_worker(request: Request) -> JSONResponse:
    return await set_paused(request, True)


async def resume_worker(request: Request) -> JSONResponse:
    return await set_paused(request, False)


routes = [
    Route("/workers", list_workers, methods=["GET"]),
    Route("/workers/{name}", get_worker, methods=["GET"]),
    Route("/workers/{name}", patch_worker, methods=["PATCH"]),
    Route("/workers/{name}/pause", pause_worker, methods=["POST"]),
    Route("/workers/{name}/resume", resume_worker, methods=["POST"]),
]
