"""An example worker: an HTTP endpoint that redisq calls with each job.

    python examples/worker.py --port 9000

redisq POSTs ``{jobId, worker, attempt, args, receiptUrl, receiptToken}``. Answering 2xx
is the receipt (the JSON body becomes the job's result); 500 asks for a retry; 400 fails the
job for good; 202 says "working on it", and the worker then posts its receipt to
``receiptUrl`` with ``Authorization: Bearer <receiptToken>`` before the timeout.
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def send_email(request: Request) -> JSONResponse:
    job = await request.json()
    to = job["args"].get("to")
    if not to:
        return JSONResponse({"error": "args.to is required"}, status_code=400)  # permanent
    print(f"sending email to {to} (job {job['jobId']}, attempt {job['attempt']})", flush=True)
    return JSONResponse({"sent": True, "to": to})


async def post_receipt_later(job: dict) -> None:
    await asyncio.sleep(1.0)  # the long work
    async with httpx.AsyncClient() as client:
        await client.post(job["receiptUrl"], json={"status": "success", "result": {"rendered": True}},
                          headers={"Authorization": f"Bearer {job['receiptToken']}"})


async def render_report(request: Request) -> JSONResponse:
    job = await request.json()
    return JSONResponse({"accepted": True}, status_code=202, background=BackgroundTask(post_receipt_later, job))


app = Starlette(routes=[
    Route("/send-email", send_email, methods=["POST"]),
    Route("/render-report", render_report, methods=["POST"]),
])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
