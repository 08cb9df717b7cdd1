"""Workers, for operators: each worker's state and its live limits, changed by PATCH or by
pausing and resuming it (each change logged with the API token that made it), and its
throttle keys that are paused or busiest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..engine import Engine, SharedLimitState, ThrottleKeys, WorkerEngine, WorkerState
from ..errors import ValidationError, shown
from ..limits import Limits, parse_limits_patch, patched_fields
from ..model import iso_from_ms
from ..security import token_name
from .http import coordinator_of, query_of, read_json

MAX_KEYS = 1000  # GET /workers/{name}/keys?limit=N


def worker_json(state: WorkerState, shared: Sequence[SharedLimitState] = ()) -> dict[str, Any]:
    """A worker's state as ``GET /workers`` answers it, with the shared limits it names."""
    return {
        "name": state.name, "url": state.url, "limits": state.limits.to_json(),
        "jobs": {"scheduled": state.scheduled, "retrying": state.retrying, "running": state.running,
                 "succeeded": state.succeeded, "dead": state.dead, "cancelled": state.cancelled},
        "throttleKeysWaiting": state.throttle_keys, "tokens": state.tokens, "totalTokens": state.total_tokens,
        "backPressureFor": state.back_pressure_s,
        "dispatchedLastMinute": state.dispatched_last_minute,
        "dispatchRate": round(state.dispatched_last_minute / 60, 3),
        "recentDispatchRate": round(state.dispatched_per_bucket[-1] / state.dispatch_bucket_s, 3)
        if state.dispatched_per_bucket else 0.0,
        "dispatchHistory": {"bucketSeconds": state.dispatch_bucket_s, "dispatched": list(state.dispatched_per_bucket)},
        "throttled": state.throttled,
        "sharedLimits": [{"name": limit.name, **limit.limits.shared_json()} for limit in shared],
    }


async def answer(engine: Engine, worker: WorkerEngine) -> dict[str, Any]:
    """One worker's ``worker_json``, its shared limits read live."""
    shared = [await engine.limit(name).state() for name in worker.config.limits]
    return worker_json(await worker.state(), shared)


def throttle_keys_json(found: ThrottleKeys) -> dict[str, Any]:
    return {
        "keysWaiting": found.waiting_keys,
        "keys": [{"key": state.key, "waiting": state.waiting, "running": state.running, "tokens": state.tokens,
                  "pausedFor": state.paused_s,
                  "readyAt": None if state.ready_ms is None else iso_from_ms(max(state.ready_ms, found.now_ms)),
                  "limits": {limit.limit: {"tokens": limit.tokens, "paused": limit.paused, "pausedFor": limit.paused_s}
                             for limit in state.limits}}
                 for state in found.keys],
    }


async def list_workers(request: Request) -> JSONResponse:
    engine = coordinator_of(request).engine
    shared = {name: await limit.state() for name, limit in engine.limits.items()}
    return JSONResponse({"workers": [worker_json(await worker.state(), [shared[n] for n in worker.config.limits])
                                     for worker in engine.workers.values()]})


async def get_worker(request: Request) -> JSONResponse:
    engine = coordinator_of(request).engine
    return JSONResponse(await answer(engine, engine.worker(request.path_params["name"])))


async def worker_keys(request: Request) -> JSONResponse:
    """``GET /workers/{name}/keys[?limit=N]``: its throttle keys with jobs waiting, each with
    its bucket in the shared limits the worker names; those paused first (in a shared limit,
    then by back-pressure), then the busiest."""
    engine = coordinator_of(request).engine.worker(request.path_params["name"])
    limit_text = query_of(request, ("limit",)).get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_KEYS:
        raise ValidationError(f"limit: must be a whole number from 1 to {MAX_KEYS}, got {shown(limit_text)}",
                              field="limit")
    return JSONResponse(throttle_keys_json(await engine.throttle_keys(int(limit_text))))


async def patch_worker(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    name: str = request.path_params["name"]
    engine = coordinator.engine.worker(name)  # 404 before reading the body
    body = await read_json(request, coordinator.config.max_body_bytes)
    current = await engine.limits()
    changed = await engine.set_limits(parse_limits_patch(body, current), fields=patched_fields(body))
    limits_changed(request, name, current, changed)
    return JSONResponse(await answer(coordinator.engine, engine))


async def set_paused(request: Request, paused: bool) -> JSONResponse:
    coordinator = coordinator_of(request)
    name: str = request.path_params["name"]
    engine = coordinator.engine.worker(name)
    current = await engine.limits()
    changed = await engine.set_limits(Limits(paused=paused), fields={"paused"})  # only the flag is written
    limits_changed(request, name, current, changed)
    return JSONResponse(await answer(coordinator.engine, engine))


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
    Route("/workers/{name}/keys", worker_keys, methods=["GET"]),
    Route("/workers/{name}/pause", pause_worker, methods=["POST"]),
    Route("/workers/{name}/resume", resume_worker, methods=["POST"]),
]
