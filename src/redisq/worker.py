"""The worker SDK: Python functions as a redisq worker endpoint.

    from redisq.worker import PermanentFailure, Workers

    workers = Workers(secret="...")               # or signing_keys=["new", "old"]

    @workers.job("send-email")                    # the coordinator's worker name
    async def send_email(args, ctx):              # sync functions work too (run in a thread)
        if "to" not in args:
            raise PermanentFailure("args.to is required")
        return {"sent": True}                     # the job's result

One ``Workers`` object serves every job it holds, as

- an ASGI app (``uvicorn module:workers``, a Starlette ``Mount``, Cloud Run, Vercel),
- ``workers.lambda_handler(event, context)``: AWS Lambda behind API Gateway (REST v1,
  HTTP API v2) or a function URL,
- ``workers.gcf_handler(request)``: Google Cloud Functions (functions-framework's Flask request).

Each call is routed by the dispatch body's ``worker`` field (signed, always present), so
the path does not matter: one URL may serve every job. For each call the SDK checks the
coordinator's signature first (``X-Redisq-Timestamp``, ``X-Redisq-Signature``; bad, missing
or more than 5 minutes off: 401 and nothing runs), runs the function and answers with the
receipt, as the coordinator reads it (``dispatch.receipt_from_response``):

    the function                       answer                              the job
    returns a JSON value               200, the value                      succeeded, value kept as result
    raises PermanentFailure(msg)       422 "PermanentFailure: msg",        dead, no retry
                                       X-Redisq-Permanent: true
    raises RetryLater(after_s=30)      429, Retry-After: 30                retried after 30 s
    raises any other error             500 "<ErrorType>: <message>"        retried by backoff
    returns ctx.later(work)            202, then work runs; its outcome    succeeded / retried / dead
                                       is posted to the receipt URL
    returns ctx.later()                202; post the receipt yourself      as posted
                                       (ctx.succeed / ctx.fail)

``lastError`` then reads e.g. ``HTTP 500: ValueError: no such template``.

Standard library only: a serverless bundle needs nothing else. Receipts and heartbeats are
posted with ``urllib`` (in a thread, from async code).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn

from .security import SIGNATURE_TOLERANCE_S, SignatureError, verify_dispatch

if TYPE_CHECKING:  # the SDK runs without starlette: only its ASGI types are borrowed
    from starlette.types import Receive, Scope, Send

log = logging.getLogger("redisq.worker")

MAX_BODY_BYTES = 1024 * 1024
POST_TIMEOUT_S = 10.0
POST_TRIES = 3
ERROR_MESSAGE_CHARS = 250  # the coordinator keeps the first 300 characters of an error answer

JobFunction = Callable[..., Any]
# The work of a 202 answer: an awaitable, or a callable run in a thread; its value is the result.
LaterWork = Awaitable[Any] | Callable[[], Any]
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


# An answer with this header set to "true" fails the job for good, whatever its status
# (the coordinator's dispatch.receipt_from_response): the SDK marks its PermanentFailure so.
PERMANENT_HEADER = "X-Redisq-Permanent"
# What the downstream API told the job about its call (``ctx.report_cost``): its actual cost
# and the downstream's own level of the key's bucket, as numbers (README, Buckets that follow
# the downstream); a posted receipt carries them as ``cost`` and ``available``.
COST_HEADER = "X-Redisq-Cost"
AVAILABLE_HEADER = "X-Redisq-Available"
BUCKET_SIZE_HEADER = "X-Redisq-Bucket-Size"


class PermanentFailure(Exception):
    """Raise it to fail the job for good: the coordinator marks it dead, no more attempts
    (answered 422 with ``X-Redisq-Permanent: true``, permanent whatever the worker's
    ``permanent_statuses``)."""


class RetryLater(Exception):
    """Raise it to fail this attempt and ask for the next one after ``after_s`` seconds
    (answered 429 with ``Retry-After``), e.g. when a downstream API throttles you."""

    def __init__(self, message: str = "", after_s: float = 1.0):
        super().__init__(message or f"retry after {after_s:g} s")
        self.after_s = after_s


class CoordinatorError(Exception):
    """The coordinator refused (or could not be reached for) a receipt or a heartbeat.
    ``status`` is the HTTP status (0 when there was no answer); 409 means the attempt is no
    longer the running one (the job timed out, was cancelled or finished): stop working on it."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def error_text(error: BaseException) -> str:
    """``"<ErrorType>: <message>"`` (just the type when the message is empty)."""
    message = str(error).strip()
    if len(message) > ERROR_MESSAGE_CHARS:
        message = message[:ERROR_MESSAGE_CHARS] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@dataclass
class Later:
    """Returned by ``ctx.later``: answer 202 now; the receipt comes later."""

    work: LaterWork | None = None  # None = the receipt is posted by the caller
    ctx: JobContext | None = None  # set when the job function returns it


@dataclass(frozen=True)
class Answer:
    """One HTTP answer to the coordinator (or to whoever else called)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    later: Later | None = None

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> Answer:
        return cls(status, text.encode(), {"Content-Type": TEXT, **headers})


def _post_json(url: str, token: str, payload: Any, timeout_s: float) -> Any:
    """POST JSON with ``Authorization: Bearer <token>``; the decoded answer, or CoordinatorError.
    Connection errors and 5xx are tried ``POST_TRIES`` times."""
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": JSON, "Authorization": f"Bearer {token}", "User-Agent": "redisq-worker"})
    last: CoordinatorError | None = None
    for attempt in range(POST_TRIES):
        if attempt:
            threading.Event().wait(0.5 * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                text = resp.read().decode("utf-8", "replace")
                return json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            last = CoordinatorError(e.code, message or str(e.reason))
            if e.code < 500:
                raise last from None
        except (urllib.error.URLError, OSError) as e:
            last = CoordinatorError(0, f"could not reach the coordinator at {url}: {getattr(e, 'reason', e)}")
    assert last is not None
    raise last


class JobContext:
    """What a job function gets besides its args: who it is, and how to talk back.

    It can also be built by hand from a dispatch's ``receiptUrl`` and ``receiptToken``, in
    the process that finishes a job answered with ``ctx.later()``."""

    def __init__(self, *, job_id: str, attempt: int, receipt_url: str, receipt_token: str,
                 worker: str = "", args: Any = None, timeout_s: float = POST_TIMEOUT_S):
        self.job_id = job_id
        self.worker = worker or job_id.partition(":")[0]
        self.attempt = attempt
        self.args = args
        self.receipt_url = receipt_url
        self.receipt_token = receipt_token
        self.timeout_s = timeout_s
        self.answered = False  # True once the function's 202 has gone out (work after ctx.later)
        self.reported: dict[str, float] = {}  # ctx.report_cost: "cost", "available"

    def __repr__(self) -> str:
        return f"JobContext(job_id={self.job_id!r}, attempt={self.attempt})"

    @property
    def heartbeat_url(self) -> str:
        """``POST /job/{id}/heartbeat``, next to the receipt URL."""
        base, sep, _ = self.receipt_url.rpartition("/receipt")
        return (base if sep else self.receipt_url.rstrip("/")) + "/heartbeat"

    # -- heartbeats ---------------------------------------------------------------------------
    def heartbeat_sync(self) -> str:
        """Extend this attempt's lease by the job's timeout, from now; returns the new lease
        deadline (ISO 8601). Raises CoordinatorError 409 when the attempt is no longer
        running (timed out, cancelled, finished): stop then.

        The lease is what the poller watches. The coordinator's HTTP call still ends at the
        job's timeout, so a job longer than that answers 202 first: ``return ctx.later(work)``
        and heartbeat from ``work``."""
        if not self.answered:
            log.warning("%s: heartbeat before answering: the coordinator's call still ends at the job's "
                        "timeout; return ctx.later(work) for jobs longer than that", self.job_id)
        answer = _post_json(self.heartbeat_url, self.receipt_token, {}, self.timeout_s)
        return str(answer.get("leaseDeadline", "")) if isinstance(answer, dict) else ""

    async def heartbeat(self) -> str:
        """``heartbeat_sync`` for async code (the call runs in a thread)."""
        return await asyncio.to_thread(self.heartbeat_sync)

    # -- what the downstream said --------------------------------------------------------------
    def report_cost(self, actual: float | None = None, available: float | None = None,
                    bucket_size: float | None = None) -> None:
        """Tell redisq what the downstream API said of this call, so its buckets follow it:
        ``actual`` the call's real cost (Shopify GraphQL's ``extensions.cost.actualQueryCost``;
        redisq gives back or takes the difference from the cost it took at dispatch) and
        ``available`` the downstream's own level of the key's bucket (GraphQL's
        ``throttleStatus.currentlyAvailable``, or 40 - 32 of ``X-Shopify-Shop-Api-Call-Limit:
        32/40``), taken when lower than redisq's; ``bucket_size`` the size of the bucket it is
        of (40), so that redisq keeps its headroom below it (a burst of 39 keeps one call).
        Sent with the answer, whatever it is (or with the receipt of a job answered with
        ``ctx.later``)."""
        for name, value in (("cost", actual), ("available", available), ("bucketSize", bucket_size)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise ValueError(f"report_cost: {name} must be a number >= 0, got {value!r}")
                self.reported[name] = float(value)

    # -- answering later ----------------------------------------------------------------------
    def later(self, work: LaterWork | None = None) -> Later:
        """Return this from the job function to answer 202 at once. ``work`` (an awaitable, or
        a callable run in a thread) then runs after the answer, and its outcome is posted as
        the receipt, as the table in this module's docstring says; it needs a process that
        lives on after answering (the ASGI app under uvicorn). Without ``work``, post the
        receipt yourself before the job's timeout: ``ctx.succeed(result)`` / ``ctx.fail(...)``."""
        return Later(work, self)

    def succeed_sync(self, result: Any = None) -> Any:
        """Post a success receipt (for a job answered with ``ctx.later()``)."""
        return _post_json(self.receipt_url, self.receipt_token,
                          {"status": "success", "result": result, **self.reported}, self.timeout_s)

    def fail_sync(self, error: str | BaseException, retry: bool = True) -> Any:
        """Post a failure receipt; ``retry=False`` makes the job dead at once."""
        text = error_text(error) if isinstance(error, BaseException) else str(error)
        return _post_json(self.receipt_url, self.receipt_token,
                          {"status": "failure", "error": text, "retry": retry, **self.reported}, self.timeout_s)

    async def succeed(self, result: Any = None) -> Any:
        return await asyncio.to_thread(self.succeed_sync, result)

    async def fail(self, error: str | BaseException, retry: bool = True) -> Any:
        return await asyncio.to_thread(self.fail_sync, error, retry)

    def fail_permanently(self, message: str) -> NoReturn:
        """Fail the job for good (no retry): the same as ``raise PermanentFailure(message)``."""
        raise PermanentFailure(message)


def _resolve_keys(secret: str | bytes | None, signing_keys: Sequence[str | bytes] | None) -> list[bytes]:
    if secret is None and not signing_keys:
        env_keys = [k.strip() for k in os.environ.get("REDISQ_SIGNING_KEYS", "").split(",") if k.strip()]
        signing_keys = env_keys or None
        secret = os.environ.get("REDISQ_SECRET") or None
    keys: list[bytes] = []
    for key in [*(signing_keys or ()), *([secret] if secret else [])]:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if not raw:
            raise ValueError("Workers: signing keys must not be empty")
        if raw not in keys:
            keys.append(raw)
    if not keys:
        raise ValueError(
            "Workers needs secret=... or signing_keys=[...] (or REDISQ_SECRET / REDISQ_SIGNING_KEYS) to verify the "
            "coordinator's signatures: set the same secret or signing_keys in the coordinator's config (a "
            "coordinator without one keeps a generated secret in Redis, which workers cannot see)")
    return keys


def _run_blocking(coroutine: Coroutine[Any, Any, Answer]) -> Answer:
    """Run ``coroutine`` to the end from synchronous code (a Lambda or GCF invocation), in a
    thread of its own when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: list[Answer] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as e:  # pragma: no cover - handle() answers every error itself
            errors.append(e)

    thread = threading.Thread(target=run, name="redisq-worker-call")
    thread.start()
    thread.join()
    if errors:  # pragma: no cover
        raise errors[0]
    return result[0]


class Workers:
    """A set of job functions behind one endpoint; see the module docstring."""

    def __init__(self, secret: str | bytes | None = None, signing_keys: Sequence[str | bytes] | None = None, *,
                 max_body_bytes: int = MAX_BODY_BYTES, tolerance_s: float = SIGNATURE_TOLERANCE_S,
                 shutdown_grace_s: float = 10.0):
        self._keys = _resolve_keys(secret, signing_keys)
        self.max_body_bytes = max_body_bytes
        self.tolerance_s = tolerance_s
        self.shutdown_grace_s = shutdown_grace_s
        self.jobs: dict[str, JobFunction] = {}
        self._takes_ctx: dict[str, bool] = {}
        self._background: set[asyncio.Task[None]] = set()

    def job(self, name: str) -> Callable[[JobFunction], JobFunction]:
        """Register ``fn(args, ctx)`` (or ``fn(args)``), async or sync, for the worker ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError("Workers.job: the name must be the coordinator's worker name")

        def register(fn: JobFunction) -> JobFunction:
            if name in self.jobs:
                raise ValueError(
                    f"Workers.job: {name!r} is registered twice ({self.jobs[name].__name__} and {fn.__name__})")
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
            self.jobs[name] = fn
            self._takes_ctx[name] = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
            return fn

        return register

    # -- the one path every adapter takes --------------------------------------------------------
    async def handle(self, method: str, headers: Mapping[str, str], body: bytes, *,
                     can_run_later: bool = True) -> Answer:
        """Answer one request. ``headers`` has lower-case names."""
        if method in ("GET", "HEAD"):
            return Answer(200, b'{"ok":true}', {"Content-Type": JSON})
        if method != "POST":
            return Answer.text(405, f"method {method} not allowed: redisq dispatches with POST", Allow="GET, POST")
        if len(body) > self.max_body_bytes:
            return Answer.text(413, f"request body is over the limit of {self.max_body_bytes} bytes")
        try:
            verify_dispatch(self._keys, headers.get("x-redisq-timestamp"), headers.get("x-redisq-signature"), body,
                            tolerance_s=self.tolerance_s)
        except SignatureError as e:
            log.warning("refused a request: %s", e)
            return Answer.text(401, f"redisq signature refused: {e}", **{"WWW-Authenticate": "X-Redisq-Signature"})
        try:
            call = json.loads(body)
            job_id, worker, attempt = call["jobId"], call["worker"], call["attempt"]
            receipt_url, receipt_token = call["receiptUrl"], call["receiptToken"]
        except (ValueError, KeyError, TypeError):
            return Answer.text(400,
                               "body is not a redisq dispatch (jobId, worker, attempt, args, receiptUrl, receiptToken)")
        fn = self.jobs.get(worker)
        if fn is None:
            known = ", ".join(sorted(self.jobs)) or "none"
            return Answer.text(404, f"no job named {worker!r} in this app (it has: {known})")
        ctx = JobContext(job_id=job_id, worker=worker, attempt=attempt, args=call.get("args"),
                         receipt_url=receipt_url, receipt_token=receipt_token)
        return await self._run(fn, self._takes_ctx[worker], call.get("args"), ctx, can_run_later)

    async def _run(self, fn: JobFunction, takes_ctx: bool, args: Any, ctx: JobContext, can_run_later: bool) -> Answer:
        answer = await self._answer(fn, takes_ctx, args, ctx, can_run_later)
        if not ctx.reported or answer.later is not None:  # a 202's report comes with its receipt
            return answer
        headers = (("cost", COST_HEADER), ("available", AVAILABLE_HEADER), ("bucketSize", BUCKET_SIZE_HEADER))
        reported = {header: repr(ctx.reported[name]) for name, header in headers if name in ctx.reported}
        return replace(answer, headers={**answer.headers, **reported})

    async def _answer(self, fn: JobFunction, takes_ctx: bool, args: Any, ctx: JobContext,
                      can_run_later: bool) -> Answer:
        call_args = (args, ctx) if takes_ctx else (args,)
        try:
            if inspect.iscoroutinefunction(fn):
                value = await fn(*call_args)
            else:
                value = await asyncio.to_thread(fn, *call_args)
                if inspect.isawaitable(value):
                    value = await value
        except PermanentFailure as e:
            return Answer.text(422, error_text(e), **{PERMANENT_HEADER: "true"})
        except RetryLater as e:
            return Answer.text(429, error_text(e), **{"Retry-After": str(max(0, math.ceil(e.after_s)))})
        except Exception as e:
            log.exception("job %s (attempt %d) failed", ctx.job_id, ctx.attempt)
            return Answer.text(500, error_text(e))
        if isinstance(value, Later):
            value.ctx = ctx
            if value.work is not None and not can_run_later:
                _discard(value.work)
                return Answer.text(500, "RuntimeError: ctx.later(work) needs a process that lives on after answering "
                                        "(the ASGI app); on Lambda or Cloud Functions hand receiptUrl and "
                                        "receiptToken to where the work runs and return ctx.later()")
            if not can_run_later:
                ctx.answered = True
            return Answer(202, b'{"accepted":true}', {"Content-Type": JSON}, later=value)
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            return Answer.text(500, f"TypeError: the result of job {ctx.worker!r} is not JSON: {e}")
        return Answer(200, text.encode(), {"Content-Type": JSON})

    def start_later(self, later: Later) -> None:
        """Run the work of a 202 answer in the background; its outcome becomes the receipt."""
        ctx = later.ctx
        assert ctx is not None
        ctx.answered = True
        if later.work is None:
            return
        task = asyncio.get_running_loop().create_task(self._finish_later(later.work, ctx))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_later(self, work: LaterWork, ctx: JobContext) -> None:
        try:
            try:
                if inspect.isawaitable(work):
                    value = await work
                else:
                    value = await asyncio.to_thread(work)
                    if inspect.isawaitable(value):
                        value = await value
            except PermanentFailure as e:
                await ctx.fail(e, retry=False)
            except Exception as e:
                log.exception("job %s (attempt %d) failed after answering 202", ctx.job_id, ctx.attempt)
                await ctx.fail(e)
            else:
                await ctx.succeed(value)
        except CoordinatorError as e:
            log.error("job %s (attempt %d): the coordinator refused its receipt: %s", ctx.job_id, ctx.attempt, e)
        except Exception:
            log.exception("job %s (attempt %d): could not post its receipt", ctx.job_id, ctx.attempt)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the work of 202 answers still running (at shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.shutdown_grace_s if timeout_s is None else timeout_s)

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", ())}
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                break
        answer = await self.handle(scope["method"], headers, bytes(body))
        await send({"type": "http.response.start", "status": answer.status, "headers": [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in
            {**answer.headers, "Content-Length": str(len(answer.body))}.items()]})
        await send({"type": "http.response.body", "body": answer.body})
        if answer.later is not None:
            self.start_later(answer.later)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- AWS Lambda --------------------------------------------------------------------------------
    def lambda_handler(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """An API Gateway REST (payload v1), HTTP API (v2) or function URL event -> its response."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        method = event.get("httpMethod") or (event.get("requestContext") or {}).get("http", {}).get("method") or "POST"
        raw = event.get("body") or ""
        body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8")
        answer = _run_blocking(self.handle(str(method).upper(), headers, body, can_run_later=False))
        return {"statusCode": answer.status, "headers": dict(answer.headers),
                "body": answer.body.decode("utf-8", "replace"), "isBase64Encoded": False}

    # -- Google Cloud Functions ---------------------------------------------------------------------
    def gcf_handler(self, request: Any) -> tuple[str, int, dict[str, str]]:
        """functions-framework's (Flask) request -> ``(body, status, headers)``."""
        headers = {str(k).lower(): str(v) for k, v in request.headers.items()}
        body = request.get_data()
        answer = _run_blocking(self.handle(str(getattr(request, "method", "POST")).upper(), headers, body,
                                           can_run_later=False))
        return answer.body.decode("utf-8", "replace"), answer.status, dict(answer.headers)


def _discard(work: LaterWork | None) -> None:
    """A coroutine that will not run is closed, so Python does not warn it was never awaited."""
    with contextlib.suppress(Exception):
        if inspect.iscoroutine(work):
            work.close()
