"""The worker SDK on its own: signature checks, answers as the coordinator reads them, the
ASGI app (driven through httpx's ASGI transport), the Lambda and Cloud Functions handlers
with recorded platform events (tests/events/), and receipts posted after a 202 to a small
stand-in for the coordinator's receipt and heartbeat routes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from redisq.dispatch import receipt_from_response
from redisq.engine import ClaimedJob
from redisq.transport import Response
from redisq.worker import JobContext, PermanentFailure, RetryLater, Workers

from sdk_helpers import dispatch_body, event, gcf_request, signed

KEY = "shared-secret"


def make_workers(**keys: Any) -> tuple[Workers, list[tuple[Any, JobContext]]]:
    workers = Workers(**(keys or {"secret": KEY}))
    ran: list[tuple[Any, JobContext]] = []

    @workers.job("send-email")
    async def send_email(args: Any, ctx: JobContext) -> Any:
        ran.append((args, ctx))
        return {"sent": True, "to": args.get("to")}

    @workers.job("resize")
    def resize(args: Any) -> Any:  # sync, and without ctx
        ran.append((args, threading.current_thread().name))
        return {"width": args["width"] // 2}

    @workers.job("broken")
    async def broken(args: Any, ctx: JobContext) -> Any:
        ran.append((args, ctx))
        raise ValueError(f"no template {args.get('template')!r}")

    @workers.job("invalid")
    async def invalid(args: Any, ctx: JobContext) -> Any:
        raise PermanentFailure("args.to is not an address")

    @workers.job("invalid-ctx")
    def invalid_ctx(args: Any, ctx: JobContext) -> Any:
        ctx.fail_permanently("no such account")

    @workers.job("throttled")
    async def throttled(args: Any, ctx: JobContext) -> Any:
        raise RetryLater("shopify said 429", after_s=7)

    @workers.job("briefly-throttled")
    async def briefly_throttled(args: Any, ctx: JobContext) -> Any:
        raise RetryLater("shopify said 429", after_s=0.4)

    @workers.job("opaque")
    async def opaque(args: Any, ctx: JobContext) -> Any:
        return object()

    return workers, ran


async def post(app: Workers, body: bytes, headers: dict[str, str], path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker.test") as client:
        return await client.post(path, content=body, headers=headers)


def as_receipt(resp: httpx.Response) -> Any:
    """The coordinator's reading of this answer (dispatch.receipt_from_response)."""
    job = ClaimedJob("send-email", "job-1", 1, 1000, "{}", 1)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    return receipt_from_response(job, Response(resp.status_code, resp.content, headers))


# -- answers -------------------------------------------------------------------------------------


async def test_a_signed_dispatch_runs_the_job_and_its_value_is_the_result():
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"}, attempt=2)
    resp = await post(workers, body, signed(body, KEY), path="/anything")  # the path does not route
    assert resp.status_code == 200
    assert resp.json() == {"sent": True, "to": "ada@example.com"}
    ((args, ctx),) = ran
    assert args == {"to": "ada@example.com"}
    assert (ctx.job_id, ctx.worker, ctx.attempt) == ("send-email:job-1", "send-email", 2)
    assert ctx.receipt_url == "http://127.0.0.1:1/job/send-email:job-1/receipt"
    assert ctx.heartbeat_url == "http://127.0.0.1:1/job/send-email:job-1/heartbeat"
    receipt = as_receipt(resp)
    assert receipt.outcome == "success" and json.loads(receipt.result_json) == {"sent": True, "to": "ada@example.com"}


async def test_a_sync_job_runs_in_a_thread_and_may_take_args_only():
    workers, ran = make_workers()
    body = dispatch_body("resize", {"width": 640})
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 200 and resp.json() == {"width": 320}
    assert ran[0][1] != threading.main_thread().name


async def test_an_exception_is_answered_500_with_its_type_and_message():
    workers, _ = make_workers()
    body = dispatch_body("broken", {"template": "welcome"})
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 500
    assert resp.text == "ValueError: no template 'welcome'"
    receipt = as_receipt(resp)
    assert receipt.outcome == "failure"  # retried
    assert receipt.error == "HTTP 500: ValueError: no template 'welcome'"  # what lastError will say


@pytest.mark.parametrize("job, text", [
    ("invalid", "PermanentFailure: args.to is not an address"),
    ("invalid-ctx", "PermanentFailure: no such account"),
])
async def test_a_permanent_failure_is_answered_422_and_the_job_is_not_retried(job, text):
    workers, _ = make_workers()
    body = dispatch_body(job)
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 422 and resp.text == text
    assert resp.headers["x-redisq-permanent"] == "true"  # permanent whatever the worker's permanent_statuses
    receipt = as_receipt(resp)
    assert receipt.outcome == "permanent" and receipt.error == f"HTTP 422: {text}"


async def test_retry_later_is_answered_429_with_retry_after():
    workers, _ = make_workers()
    body = dispatch_body("throttled")
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    receipt = as_receipt(resp)
    assert receipt.outcome == "failure" and receipt.retry_after_ms == 7000

    # A wait under a second is rounded up, not down to an immediate retry.
    body = dispatch_body("briefly-throttled")
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"


async def test_a_result_that_is_not_json_is_a_failure_that_says_so():
    workers, _ = make_workers()
    body = dispatch_body("opaque")
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 500 and resp.text.startswith("TypeError: the result of job 'opaque' is not JSON")


async def test_an_unknown_job_is_404_naming_the_jobs_it_has():
    workers, _ = make_workers()
    body = dispatch_body("send-sms")
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 404
    assert "send-sms" in resp.text and "send-email" in resp.text


async def test_a_signed_body_that_is_not_a_dispatch_is_400():
    workers, ran = make_workers()
    body = b'{"hello": "world"}'
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 400 and ran == []


async def test_get_answers_200_for_health_checks():
    workers, _ = make_workers()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=workers), base_url="http://worker.test") as client:
        resp = await client.get("/")
    assert resp.status_code == 200 and resp.json() == {"ok": True}


# -- signatures -----------------------------------------------------------------------------------


def forged_headers(body: bytes) -> dict[str, dict[str, str]]:
    now = time.time()
    good = signed(body, KEY, now)
    return {
        "unsigned": {"Content-Type": "application/json"},
        "no timestamp": {k: v for k, v in good.items() if k != "X-Redisq-Timestamp"},
        "another key": signed(body, "not-the-key", now),
        "6 minutes old": signed(body, KEY, now - 360),
        "6 minutes ahead": signed(body, KEY, now + 360),
        "timestamp changed": {**good, "X-Redisq-Timestamp": str(int(now) - 1)},
        "garbage": {**good, "X-Redisq-Signature": "v1=zz"},
        "no version": {**good, "X-Redisq-Signature": good["X-Redisq-Signature"][3:]},
    }


@pytest.mark.parametrize("case", list(forged_headers(b"{}")))
async def test_a_bad_or_stale_signature_is_401_and_nothing_runs(case):
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    resp = await post(workers, body, forged_headers(body)[case])
    assert resp.status_code == 401
    assert resp.text.startswith("redisq signature refused: ")
    assert ran == []
    assert as_receipt(resp).outcome == "failure"  # the coordinator retries it: a key mismatch is fixable


async def test_a_tampered_body_is_401():
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    tampered = body.replace(b"ada@", b"eve@")
    resp = await post(workers, tampered, signed(body, KEY))
    assert resp.status_code == 401 and ran == []


async def test_a_signature_within_5_minutes_either_way_is_accepted():
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    for skew_s in (-290, 290):
        resp = await post(workers, body, signed(body, KEY, time.time() + skew_s))
        assert resp.status_code == 200
    assert len(ran) == 2


async def test_rotation_every_signing_key_verifies():
    workers, ran = make_workers(signing_keys=["new-key", "old-key"])
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    for key in ("new-key", "old-key"):
        assert (await post(workers, body, signed(body, key))).status_code == 200
    assert (await post(workers, body, signed(body, KEY))).status_code == 401
    assert len(ran) == 2


async def test_secret_and_signing_keys_together_all_verify():
    workers, _ = make_workers(secret=KEY, signing_keys=["new-key"])
    body = dispatch_body("send-email")
    for key in (KEY, "new-key"):
        assert (await post(workers, body, signed(body, key))).status_code == 200


def test_workers_without_a_key_refuse_to_start_and_say_what_to_set(monkeypatch):
    monkeypatch.delenv("REDISQ_SECRET", raising=False)
    monkeypatch.delenv("REDISQ_SIGNING_KEYS", raising=False)
    with pytest.raises(ValueError, match="secret=... or signing_keys"):
        Workers()


async def test_workers_read_their_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDISQ_SIGNING_KEYS", "env-new, env-old")
    workers = Workers()

    @workers.job("send-email")
    def send_email(args: Any) -> Any:
        return "ok"

    body = dispatch_body("send-email")
    assert (await post(workers, body, signed(body, "env-old"))).status_code == 200


def test_a_job_name_registered_twice_is_refused():
    workers, _ = make_workers()
    with pytest.raises(ValueError, match="registered twice"):
        workers.job("send-email")(lambda args: None)


def test_the_sdk_imports_only_the_standard_library():
    code = ("import sys, redisq.worker; "
            "print(','.join(m for m in ('redis', 'starlette', 'aiohttp', 'httpx', 'uvicorn', 'croniter') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- 202 and a receipt later ------------------------------------------------------------------------


class ReceiptSink:
    """Stands in for the coordinator's receipt and heartbeat routes; records what arrives."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, Any]] = []  # (path, authorization, body)
        self.arrived = asyncio.Event()
        self.port = 0

    def url(self, job_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/job/{job_id}/receipt"

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((request.path, request.headers.get("Authorization", ""), await request.json()))
        if request.path.endswith("/receipt"):
            self.arrived.set()
            return web.json_response({"accepted": True, "duplicate": False, "state": "succeeded"})
        return web.json_response({"extended": True, "attempt": 1, "leaseDeadline": "2030-01-01T00:00:00.000Z"})

    def receipts(self) -> list[Any]:
        return [body for path, _, body in self.posts if path.endswith("/receipt")]


@pytest.fixture
async def sink() -> AsyncIterator[ReceiptSink]:
    sink = ReceiptSink()
    app = web.Application()
    app.router.add_post("/job/{id}/{what}", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink.port = runner.addresses[0][1]
    try:
        yield sink
    finally:
        await runner.cleanup()


def later_workers(release: asyncio.Event | None = None) -> Workers:
    workers = Workers(secret=KEY)

    @workers.job("render")
    async def render(args: Any, ctx: JobContext) -> Any:
        async def work() -> Any:
            if release is not None:
                await release.wait()
            await ctx.heartbeat()
            if args.get("fail") == "permanent":
                raise PermanentFailure("template is gone")
            if args.get("fail"):
                raise RuntimeError("renderer crashed")
            return {"pages": args["pages"]}
        return ctx.later(work())

    @workers.job("render-sync")
    def render_sync(args: Any, ctx: JobContext) -> Any:
        def work() -> Any:
            ctx.heartbeat_sync()
            return {"pages": args["pages"]}
        return ctx.later(work)

    @workers.job("handed-off")
    def handed_off(args: Any, ctx: JobContext) -> Any:
        return ctx.later()

    return workers


@pytest.mark.parametrize("job", ["render", "render-sync"])
async def test_later_answers_202_at_once_then_posts_the_work_result_as_the_receipt(sink, job):
    release = asyncio.Event()
    workers = later_workers(release)
    body = dispatch_body(job, {"pages": 3}, receipt_url=sink.url("{id}"))
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 202 and as_receipt(resp) is None  # the coordinator waits for the receipt
    release.set()
    await asyncio.wait_for(sink.arrived.wait(), 5)
    assert sink.receipts() == [{"status": "success", "result": {"pages": 3}}]
    paths = [path for path, _, _ in sink.posts]
    assert paths == [f"/job/{job}:job-1/heartbeat", f"/job/{job}:job-1/receipt"]
    assert {auth for _, auth, _ in sink.posts} == {"Bearer 1.1.token"}


@pytest.mark.parametrize("fail, receipt", [
    (True, {"status": "failure", "error": "RuntimeError: renderer crashed", "retry": True}),
    ("permanent", {"status": "failure", "error": "PermanentFailure: template is gone", "retry": False}),
])
async def test_work_that_raises_after_202_posts_a_failure_receipt(sink, fail, receipt):
    workers = later_workers()
    body = dispatch_body("render", {"pages": 1, "fail": fail}, receipt_url=sink.url("{id}"))
    assert (await post(workers, body, signed(body, KEY))).status_code == 202
    await asyncio.wait_for(sink.arrived.wait(), 5)
    assert sink.receipts() == [receipt]


async def test_later_without_work_answers_202_and_leaves_the_receipt_to_the_caller(sink):
    workers = later_workers()
    body = dispatch_body("handed-off", receipt_url=sink.url("{id}"))
    assert (await post(workers, body, signed(body, KEY))).status_code == 202
    ctx = JobContext(job_id="handed-off:job-1", attempt=1, receipt_url=sink.url("handed-off:job-1"),
                     receipt_token="1.1.token")
    answer = await ctx.succeed({"done": True})
    assert answer["accepted"] is True
    assert sink.receipts() == [{"status": "success", "result": {"done": True}}]


async def test_report_cost_goes_with_the_answer_whatever_it_is_and_with_a_later_receipt(sink):
    """``ctx.report_cost`` in one line: the coordinator reads the call's actual cost and the
    downstream's level off the answer (a success, a 429 alike), or off the posted receipt."""
    workers = Workers(secret=KEY)

    @workers.job("graphql")
    async def graphql(args: Any, ctx: JobContext) -> Any:
        ctx.report_cost(actual=args["actual"], available=args["available"])
        if args.get("throttled"):
            raise RetryLater("THROTTLED", after_s=2)
        return {"ok": True}

    @workers.job("rest-later")
    async def rest_later(args: Any, ctx: JobContext) -> Any:
        ctx.report_cost(available=8, bucket_size=40)  # X-Shopify-Shop-Api-Call-Limit: 32/40
        return ctx.later(lambda: {"ok": True})

    for throttled, status in ((False, 200), (True, 429)):
        body = dispatch_body("graphql", {"actual": 37.5, "available": 912, "throttled": throttled})
        resp = await post(workers, body, signed(body, KEY))
        assert resp.status_code == status
        assert (resp.headers["x-redisq-cost"], resp.headers["x-redisq-available"]) == ("37.5", "912.0")
        receipt = as_receipt(resp)
        assert (receipt.actual_cost, receipt.available, receipt.bucket_size) == (37.5, 912.0, None)
    body = dispatch_body("rest-later", receipt_url=sink.url("{id}"))
    resp = await post(workers, body, signed(body, KEY))
    assert resp.status_code == 202 and "x-redisq-available" not in resp.headers
    await asyncio.wait_for(sink.arrived.wait(), 5)
    assert sink.receipts() == [{"status": "success", "result": {"ok": True}, "available": 8.0, "bucketSize": 40.0}]
    with pytest.raises(ValueError, match="cost must be a number >= 0"):
        JobContext(job_id="w:j", attempt=1, receipt_url="", receipt_token="").report_cost(actual=-1)


# -- AWS Lambda and Google Cloud Functions -------------------------------------------------------------


@pytest.mark.parametrize("name", ["apigw_rest_v1.json", "apigw_http_v2.json", "function_url.json",
                                  "function_url_base64.json"])
def test_the_lambda_handler_answers_each_event_shape(name):
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    answer = workers.lambda_handler(event(name, body, signed(body, KEY)), None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == {"sent": True, "to": "ada@example.com"}
    assert answer["headers"]["Content-Type"] == "application/json" and answer["isBase64Encoded"] is False
    assert ran[0][1].job_id == "send-email:job-1"


@pytest.mark.parametrize("name", ["apigw_rest_v1.json", "apigw_http_v2.json", "function_url.json"])
def test_the_lambda_handler_refuses_a_forged_event_before_running_anything(name):
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    answer = workers.lambda_handler(event(name, body, signed(body, "forger")), None)
    assert answer["statusCode"] == 401 and ran == []


def test_the_lambda_handler_answers_errors_as_the_asgi_app_does():
    workers, _ = make_workers()
    body = dispatch_body("broken", {"template": "welcome"})
    answer = workers.lambda_handler(event("function_url.json", body, signed(body, KEY)), None)
    assert answer["statusCode"] == 500 and answer["body"] == "ValueError: no template 'welcome'"


def test_on_lambda_later_with_work_is_refused_since_nothing_runs_after_the_answer():
    workers = later_workers()
    body = dispatch_body("render", {"pages": 1})
    answer = workers.lambda_handler(event("function_url.json", body, signed(body, KEY)), None)
    assert answer["statusCode"] == 500 and "ctx.later(work) needs a process" in answer["body"]
    body = dispatch_body("handed-off")
    answer = workers.lambda_handler(event("function_url.json", body, signed(body, KEY)), None)
    assert answer["statusCode"] == 202


async def test_the_lambda_handler_works_when_called_inside_a_running_event_loop():
    workers, _ = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    answer = workers.lambda_handler(event("apigw_http_v2.json", body, signed(body, KEY)), None)
    assert answer["statusCode"] == 200


def test_the_cloud_functions_handler_answers_a_flask_request():
    workers, ran = make_workers()
    body = dispatch_body("send-email", {"to": "ada@example.com"})
    text, status, headers = workers.gcf_handler(gcf_request(body, signed(body, KEY)))
    assert status == 200 and json.loads(text) == {"sent": True, "to": "ada@example.com"}
    assert headers["Content-Type"] == "application/json"
    text, status, _ = workers.gcf_handler(gcf_request(body, signed(body, "forger")))
    assert status == 401 and len(ran) == 1
    body = dispatch_body("invalid")
    text, status, _ = workers.gcf_handler(gcf_request(body, signed(body, KEY)))
    assert (status, text) == (422, "PermanentFailure: args.to is not an address")
