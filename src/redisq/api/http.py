"""What every resource's endpoints share: the coordinator on the app's state, reading a JSON
body within the limit, job and error responses, and the handlers that turn errors into them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..coordinator import Coordinator
from ..errors import BadRequestError, PayloadTooLargeError, RedisqError, ValidationError, shown
from ..json_text import read_json_text
from ..model import Job

log = logging.getLogger("redisq.api")


def coordinator_of(request: Request) -> Coordinator:
    """The coordinator that ``create_app`` put on the app's state."""
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator


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
        return read_json_text(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequestError("request body is nested too deeply") from None


def query_of(request: Request, known: tuple[str, ...]) -> Mapping[str, str]:
    """The request's query parameters; 422 naming the first one not in ``known``."""
    query = request.query_params
    unknown = [name for name in query if name not in known]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown parameter (expected {', '.join(known)})", field=unknown[0])
    return query


def known_worker(coordinator: Coordinator, name: str, field: str = "worker") -> str:
    """``name`` when it is a configured worker; else 422 naming ``field`` and the known ones."""
    if name not in coordinator.config.workers:
        known = ", ".join(sorted(coordinator.config.workers)) or "none are configured"
        raise ValidationError(f"{field}: unknown worker {shown(name)} (known: {known})", field=field)
    return name


def job_response(job: Job, status_code: int = 200) -> Response:
    return Response(job.json_text(), status_code=status_code, media_type="application/json")


def error_response(error: RedisqError) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.status_code)


async def on_redisq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RedisqError)
    return error_response(exc)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
