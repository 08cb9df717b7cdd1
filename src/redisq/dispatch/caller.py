"""One HTTP call of one attempt: the dispatch body, its signed headers, and what came back
(the worker's response, or the transport's failure) as the attempt's receipt."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial

from ..config import DEFAULT_PERMANENT_STATUSES, Config, WorkerConfig
from ..engine import ClaimedJob, Receipt
from ..security import receipt_token, signed_headers
from ..signals import CallFacts, Signals
from ..transport import NotSentError, Response, SendWindow, Transport, TransportError
from ..worker import AVAILABLE_HEADER, BUCKET_SIZE_HEADER, COST_HEADER, PERMANENT_HEADER
from .deadline import AnswerDeadline

log = logging.getLogger("redisq.dispatch")

ERROR_BODY_CHARS = 300
RESULT_MAX_BYTES = 16 * 1024
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_RETRY_AFTER_S = 86400.0

# observer(event, job_id, attempt, detail): "dispatched" (a throttled call: when it is
# written), "accepted" (202), "settled" ("returned (...)" for one that was never sent)
# ("settled" with "returned (...)" for a throttled job that was not sent within send_window)
Observer = Callable[[str, str, int, str], None]
# (worker, job) -> ms the attempt's lease has left, 0 = ended (Engine.lease_left_ms)
LeaseReader = Callable[[WorkerConfig, ClaimedJob], Awaitable[int]]


def retry_after_ms(value: str | None) -> int:
    """``Retry-After`` (seconds, or an HTTP date) in ms, at most a day; -1 when absent or unreadable."""
    if not value:
        return -1
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return -1
    if not math.isfinite(seconds):
        return -1
    return int(min(max(0.0, seconds), MAX_RETRY_AFTER_S) * 1000)


def _error_text(resp: Response) -> str:
    snippet = resp.body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    return f"HTTP {resp.status}" + (f": {snippet}" if snippet else "")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def receipt_from_response(job: ClaimedJob, resp: Response,
                          permanent_statuses: frozenset[int] = DEFAULT_PERMANENT_STATUSES) -> Receipt | None:
    """The worker's HTTP response as a receipt; None for 202 (the receipt comes later).

    Any answer may carry ``X-Redisq-Cost``, ``X-Redisq-Available`` and ``X-Redisq-Bucket-Size``: what the downstream
    said of the call (``lua/report_cost.lua``).

    2xx = success (a small JSON body is kept as the result); an answer marked
    ``X-Redisq-Permanent: true`` (the SDK's PermanentFailure) = permanent failure, whatever
    its status; a status in the worker's ``permanent_statuses`` (by default 400, 410, 422:
    the payload can never succeed) = permanent failure; 429 and 503 = failure, and with
    Retry-After back-pressure (settle pauses the key and does not count the attempt);
    anything else (404, 403, 408, 409, 401, 5xx, 3xx) = failure, retried with backoff."""
    status = resp.status
    if status == 202:
        return None

    receipt = partial(Receipt, job.suffix, job.attempt, seq=job.seq, status=status,  # then the outcome, its fields
                      actual_cost=reported_number(resp.headers.get(COST_HEADER.lower())),
                      available=reported_number(resp.headers.get(AVAILABLE_HEADER.lower())),
                      bucket_size=reported_number(resp.headers.get(BUCKET_SIZE_HEADER.lower())))

    if 200 <= status < 300:
        return receipt("success", result_json=result_json(resp.body) if not resp.truncated else "")
    if (resp.headers.get(PERMANENT_HEADER.lower()) or "").strip().lower() == "true" or status in permanent_statuses:
        return receipt("permanent", error=_error_text(resp))
    if status in (429, 503):
        return receipt("failure", error=_error_text(resp),
                       retry_after_ms=retry_after_ms(resp.headers.get("retry-after")))
    return receipt("failure", error=_error_text(resp))


def reported_number(value: str | None) -> float | None:
    """A report header (``X-Redisq-Cost``, ...): a number >= 0; None when absent or not one."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


def result_json(body: bytes) -> str:
    """``body`` as the job's result: UTF-8 JSON up to ``RESULT_MAX_BYTES``; "" (no result) otherwise."""
    if not body or len(body) > RESULT_MAX_BYTES:
        return ""
    try:
        text = body.decode("utf-8")
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # not UTF-8 JSON (or NaN/Infinity): not kept
        return ""
    return text


class Caller:
    """Calls a worker's URL for one claimed job and answers the attempt's receipt."""

    def __init__(self, config: Config, transport: Transport, secret: bytes, signing_key: bytes,
                 observer: Observer | None = None, lease_left_ms: LeaseReader | None = None,
                 signals: Signals | None = None):
        self.transport = transport
        self.signals = signals or Signals(config)
        self.lease_left_ms = lease_left_ms  # None: a call ends at its timeout, heartbeats or not
        self.secret = secret  # signs receipt tokens
        self.signing_key = signing_key  # signs X-Redisq-Signature
        self.observer = observer
        self._receipt_url_json_prefix = json.dumps(f"{config.base_url}/job/")[:-1]  # without the closing quote

    def dispatch_body(self, job: ClaimedJob) -> bytes:
        # Worker names and job ids are drawn from [A-Za-z0-9._~:-] (keys.py), so they need no
        # JSON escaping; args are already JSON text.
        job_id = job.id
        return (
            f'{{"jobId":"{job_id}","worker":"{job.worker}","attempt":{job.attempt},"args":{job.args_json},'
            f'"receiptUrl":{self._receipt_url_json_prefix}{job_id}/receipt","receiptToken":'
            f'"{receipt_token(self.secret, job_id, job.attempt, job.seq)}"}}'
        ).encode()

    def request_headers(self, body: bytes) -> dict[str, str]:
        """Content type and the signature headers (``security.signed_headers``)."""
        return {**JSON_HEADERS, **signed_headers(self.signing_key, body)}

    def _observe_dispatch(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None) -> None:
        """"dispatched" now, or for a throttled call the moment it is written (one returned
        unsent was never dispatched): to the signals, and to the observer."""
        observer, signals = self.observer, self.signals

        def dispatched() -> None:
            signals.dispatched(worker.name)
            if job.run_at_ms:  # this machine's clock against Redis's: the same clock on one host
                signals.dispatch_lag(worker.name, time.time() - job.run_at_ms / 1000)
            if observer is not None:
                observer("dispatched", job.id, job.attempt, worker.url)

        if window is None:
            dispatched()
            return
        on_written = window.on_written

        def written(at: float) -> None:
            dispatched()
            if on_written is not None:
                on_written(at)

        window.on_written = written

    async def _post(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None) -> Response:
        """The worker's answer, read whole, within the job's timeout or, past it, while its
        lease runs (``AnswerDeadline``); TransportError when none came in that time."""
        body = self.dispatch_body(job)
        timeout_s = job.timeout_ms / 1000
        lease_left_ms = self.lease_left_ms
        deadline = AnswerDeadline(timeout_s, None if lease_left_ms is None else partial(lease_left_ms, worker, job))
        try:
            async with deadline:
                return await self.transport.post(worker.url, body, self.request_headers(body), None, window=window)
        except TimeoutError:
            if deadline.extended:
                raise TransportError(f"timed out after {deadline.waited_s:.1f} s (timeout {timeout_s:g} s, "
                                     "extended by heartbeats until the lease ended)") from None
            raise TransportError(f"timed out after {timeout_s:g} s") from None

    async def call(self, worker: WorkerConfig, job: ClaimedJob, window: SendWindow | None = None) -> Receipt | None:
        """The attempt's receipt: the worker's answer, a failure when none came, "unsent" when
        its send window passed before it could be written; None for a 202 (it comes later)."""
        receipt, _ = await self.call_with_facts(worker, job, window)
        return receipt

    async def call_with_facts(self, worker: WorkerConfig, job: ClaimedJob,
                              window: SendWindow | None = None) -> tuple[Receipt | None, CallFacts]:
        """``call``'s receipt, and what the call knew beside it (for the signals)."""
        self._observe_dispatch(worker, job, window)
        receipt: Receipt | None
        status: int | None = None
        started = time.monotonic()
        try:
            resp = await self._post(worker, job, window)
            status = resp.status
            receipt = receipt_from_response(job, resp, worker.permanent_statuses)  # (its status: for the history)
        except NotSentError as e:
            receipt = Receipt(job.suffix, job.attempt, "unsent", error=str(e), seq=job.seq)
            return receipt, CallFacts(job.throttle_key)
        except TransportError as e:
            receipt = Receipt(job.suffix, job.attempt, "failure", error=str(e), seq=job.seq)
        except Exception as e:  # never lose the attempt to a bug: it fails and is retried
            log.exception("dispatching %s failed unexpectedly", job.id)
            receipt = Receipt(job.suffix, job.attempt, "failure", error=f"dispatch error: {type(e).__name__}: {e}",
                              seq=job.seq)
        self.signals.call_ended(worker.name, time.monotonic() - started)
        if receipt is None and self.observer:
            self.observer("accepted", job.id, job.attempt, "202: waiting for the worker's receipt")
        return receipt, CallFacts(job.throttle_key, status)
