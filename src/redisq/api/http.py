"""What every resource's endpoints share: the coordinator on the app's state, reading a JSON
body within the limit, job and error responses, and the handlers that turn errors into them."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..coordinator import Coordinator
from ..errors import BadRequestError, PayloadTooLargeError, RedisqError
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
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequestError("request body is nested too deeply") from None


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
