"""Limits shared by workers (``[limits.NAME]``), for operators: each limit's live fields,
the workers that name it, its attempts in flight and paused keys; changed by PATCH, paused
and resumed whole or for one throttle key (a shop that uninstalled the app)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..errors import ValidationError, shown
from ..keys import THROTTLE_KEY_MAX_CHARS
from ..limits import SHARED_PATCH_FIELDS, parse_limits_patch, patched_fields
from .http import coordinator_of, query_of, read_json
from .workers import limits_changed


def throttle_key_of(value: Any, field: str = "key") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= THROTTLE_KEY_MAX_CHARS or not value.isprintable():
        raise ValidationError(f"{field}: must be a throttle key, 1 to {THROTTLE_KEY_MAX_CHARS} printable characters, "
                              f"got {shown(value)}", field=field)
    return value


async def list_limits(request: Request) -> JSONResponse:
    engine = coordinator_of(request).engine
    return JSONResponse({"limits": [(await limit.state()).to_json() for limit in engine.limits.values()]})


async def get_limit(request: Request) -> JSONResponse:
    """``GET /limits/{name}[?key=K]``: with a key, that key's bucket too."""
    limit = coordinator_of(request).engine.limit(request.path_params["name"])
    key = query_of(request, ("key",)).get("key")
    return JSONResponse((await limit.state(None if key is None else throttle_key_of(key))).to_json())


async def patch_limit(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    limit = coordinator.engine.limit(request.path_params["name"])  # 404 before reading the body
    body = await read_json(request, coordinator.config.max_body_bytes)
    if isinstance(body, dict):
        unknown = [k for k in body if k not in SHARED_PATCH_FIELDS]
        if unknown:
            raise ValidationError(f"{unknown[0]}: unknown field (expected {', '.join(SHARED_PATCH_FIELDS)})",
                                  field=unknown[0])
    current = (await limit.state()).limits
    changed = parse_limits_patch(body, current)
    if changed.rate is None and changed.total_rate is None and changed.concurrency is None:
        raise ValidationError("body: a shared limit needs a rate, a totalRate or a concurrency (pause it instead)")
    await limit.set_limits(changed, patched_fields(body))
    after = await limit.state()
    limits_changed(request, f"limit {limit.name}", current, after.limits)
    return JSONResponse(after.to_json())


async def set_paused(request: Request, paused: bool) -> JSONResponse:
    """Pause or resume the limit, or with a body ``{"key": K}`` one of its throttle keys."""
    coordinator = coordinator_of(request)
    limit = coordinator.engine.limit(request.path_params["name"])
    body = await read_json(request, coordinator.config.max_body_bytes) if await request.body() else {}
    if not isinstance(body, dict) or set(body) - {"key"}:
        raise ValidationError('body: none (the whole limit) or {"key": "<throttle key>"}')
    if "key" in body:
        key = throttle_key_of(body["key"])
        await limit.pause_key(key, paused)
        return JSONResponse((await limit.state(key)).to_json())
    current = (await limit.state()).limits
    await limit.set_limits(replace(current, paused=paused), {"paused"})
    after = await limit.state()
    limits_changed(request, f"limit {limit.name}", current, after.limits)
    return JSONResponse(after.to_json())


async def pause_limit(request: Request) -> JSONResponse:
    return await set_paused(request, True)


async def resume_limit(request: Request) -> JSONResponse:
    return await set_paused(request, False)


routes = [
    Route("/limits", list_limits, methods=["GET"]),
    Route("/limits/{name}", get_limit, methods=["GET"]),
    Route("/limits/{name}", patch_limit, methods=["PATCH"]),
    Route("/limits/{name}/pause", pause_limit, methods=["POST"]),
    Route("/limits/{name}/resume", resume_limit, methods=["POST"]),
]
