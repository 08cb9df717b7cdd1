"""Receipts: a worker reports an attempt's outcome or extends its lease, proving the attempt
with the receipt token the dispatcher gave it (no API token needed; see security.OPEN_ROUTES)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..coordinator import Coordinator
from ..dispatch import MAX_RETRY_AFTER_S, RESULT_MAX_BYTES
from ..engine import ACCEPTED, Receipt
from ..errors import RedisqError, UnauthorizedError, ValidationError, escaped
from ..inputs import MAX_AMOUNT, NumberRule, object_with
from ..keys import split_job_id
from ..model import iso_from_ms
from ..security import ReceiptGrant, bearer_token, verify_receipt_token
from .http import coordinator_of, read_json

RECEIPT_FIELDS = ("status", "error", "result", "retry", "retryAfter", "cost", "available", "bucketSize")
RETRY_AFTER_S = NumberRule(0, MAX_RETRY_AFTER_S, unit="seconds")
REPORTED = NumberRule(0, MAX_AMOUNT)  # cost, available: what the downstream said (tokens)


def receipt_grant(request: Request) -> ReceiptGrant:
    """The attempt (and job sequence) that the request's bearer token was signed for, for the
    job in the path; a missing or bad token is refused before the body is read."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise UnauthorizedError("missing receipt token: send Authorization: Bearer <receiptToken>")
    grant = verify_receipt_token(coordinator_of(request).secret, request.path_params["id"], token)
    if grant is None:
        raise UnauthorizedError("bad receipt token for this job")
    return grant


async def post_receipt(request: Request) -> JSONResponse:
    coordinator = coordinator_of(request)
    job_id: str = request.path_params["id"]
    grant = receipt_grant(request)
    body = await read_json(request, coordinator.config.max_body_bytes)
    receipt = parse_receipt(body, job_id, grant.attempt, grant.seq)
    word = await coordinator.engine.receipt(job_id, receipt)
    await report(coordinator, job_id, receipt, word)
    if word == "cancelled":
        return JSONResponse({"accepted": False, "state": "cancelled",
                             "message": "the job was cancelled; the receipt changes nothing"})
    # An accepted receipt's word is the job's new state; only a repeat needs a look.
    state = word if word in ACCEPTED else (await coordinator.engine.get(job_id)).state.value
    return JSONResponse({"accepted": True, "duplicate": word == "duplicate", "state": state})


async def report(coordinator: Coordinator, job_id: str, receipt: Receipt, word: str) -> None:
    """The settled receipt to the signals; for a retry, its next run and throttle key read
    back when its line is written (the dispatcher's calls know the key from their claim)."""
    worker, _ = split_job_id(job_id) or ("", "")
    job = None
    if word == "retrying" and coordinator.signals.logs_retries:
        with contextlib.suppress(RedisqError):  # purged, or Redis failing: its line says less
            job = await coordinator.engine.get(job_id)
    back_pressure = receipt.retry_after_ms >= 0
    coordinator.signals.attempt_ended(
        worker, job_id, receipt.attempt, word, error=receipt.error,
        next_run_at_ms=job.run_at_ms if job is not None and not back_pressure else None,
        paused_until_ms=round(time.time() * 1000) + receipt.retry_after_ms if back_pressure else None,
        throttle_key=(job.throttle_key or "") if job is not None else "")


async def heartbeat(request: Request) -> JSONResponse:
    job_id: str = request.path_params["id"]
    grant = receipt_grant(request)
    lease_deadline_ms = await coordinator_of(request).engine.heartbeat(job_id, grant.attempt, grant.seq)
    return JSONResponse({"extended": True, "attempt": grant.attempt, "leaseDeadline": iso_from_ms(lease_deadline_ms)})


def parse_receipt(body: Any, job_id: str, attempt: int, seq: int = 0) -> Receipt:
    body = object_with(body, RECEIPT_FIELDS)
    status = body.get("status")
    if status not in ("success", "failure"):
        raise ValidationError("status: must be \"success\" or \"failure\"", field="status")
    retry = body.get("retry", True)
    if not isinstance(retry, bool):
        raise ValidationError("retry: must be true or false", field="retry")
    error = body.get("error")
    if error is None:
        error_text = "" if status == "success" else "failed (the receipt gave no error)"
    elif isinstance(error, str):
        error_text = escaped(error)  # stored as UTF-8: a lone surrogate is kept as its escape
    else:
        error_text = json.dumps(error, separators=(",", ":"))
    result = body.get("result")
    try:
        result_json = "" if result is None else json.dumps(result, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValidationError("result: must be JSON (no NaN or Infinity)", field="result") from None
    if len(result_json) > RESULT_MAX_BYTES:  # not kept, as a larger JSON body of an HTTP answer
        result_json = ""
    retry_after = body.get("retryAfter")
    retry_after_ms = -1
    if retry_after is not None:
        retry_after = RETRY_AFTER_S.read(retry_after, "retryAfter")
        if status != "failure" or not retry:
            raise ValidationError("retryAfter: only a failure that is retried can carry it", field="retryAfter")
        retry_after_ms = int(retry_after * 1000)
    parts = split_job_id(job_id)
    suffix = parts[1] if parts else job_id
    outcome = "success" if status == "success" else ("failure" if retry else "permanent")
    cost, available, bucket_size = (None if body.get(name) is None else REPORTED.read(body[name], name)
                                    for name in ("cost", "available", "bucketSize"))
    return Receipt(suffix, attempt, outcome, error=error_text, result_json=result_json,
                   retry_after_ms=retry_after_ms, seq=seq, actual_cost=cost, available=available,
                   bucket_size=bucket_size)


routes = [
    Route("/job/{id}/receipt", post_receipt, methods=["POST"]),
    Route("/job/{id}/heartbeat", heartbeat, methods=["POST"]),
]
