"""Workers, for operators: each worker's state and its live limits, changed by PATCH or by
pausing and resuming it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..limits import Limits, parse_limits_patch, patched_fields
from .http import coordinator_of, read_json


async def list_workers(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    states = [await coordinator.store.worker_state(name) for name in coordinator.config.workers]
    return JSONResponse({"workers": [state.to_json() for state in states]})


async def get_worker(request: Request) -> JSONResponse:
    return JSONResponse((await coordinator_of(request).store.worker_state(request.path_params["name"])).to_json())


async def patch_worker(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    store = coordinator.store
    name: str = request.path_params["name"]
    store.worker(name)  # 404 before reading the body
    body = await read_json(request, coordinator.config.max_body_bytes)
    current = await store.limits(name)
    await store.set_limits(name, parse_limits_patch(body, current), fields=patched_fields(body))
    await coordinator.enqueued({name})  # a higher rate or cap may let jobs go now
    return JSONResponse((await store.worker_state(name)).to_json())


async def set_paused(request: Request, paused: bool) -> JSONResponse:
    coordinator = coordinator_of(request)
    name: str = request.path_params["name"]
    await coordinator.store.set_limits(name, Limits(paused=paused), fields={"paused"})  # only the flag is written
    if not paused:
        await coordinator.enqueued({name})
    return JSONResponse((await coordinator.store.worker_state(name)).to_json())


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
