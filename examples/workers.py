"""Example workers on the redisq SDK: three jobs behind one endpoint.

    python examples/workers.py --port 9000          # or: uvicorn examples.workers:workers --port 9000
    redisq package examples/workers.py --target lambda --out build/lambda

The coordinator's config names the same workers (examples/redisq.toml) and shares the
secret (REDISQ_SECRET, "change-me" in the examples). Standard library only, so every bundle
is just this file and redisq's SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request

from redisq.worker import JobContext, PermanentFailure, RetryLater, Workers

workers = Workers(secret=os.environ.get("REDISQ_SECRET", "change-me"))

SHOPIFY_API_URL = os.environ.get("SHOPIFY_API_URL", "http://127.0.0.1:9100")  # examples/fake_shopify.py


@workers.job("send-email")
async def send_email(args: dict, ctx: JobContext) -> dict:
    """Answers at once: the returned dict is the job's result."""
    to = args.get("to")
    if not to:
        raise PermanentFailure("args.to is required")  # dead at once: a retry cannot fix it
    print(f"sending email to {to} (job {ctx.job_id}, attempt {ctx.attempt})", flush=True)
    return {"sent": True, "to": to}


@workers.job("render-report")
def render_report(args: dict, ctx: JobContext):
    """A sync job that outlives the request: it answers 202 and works on, heartbeating so
    that the lease outlives the job's timeout; what work() returns is posted as the receipt."""
    pages = int(args.get("pages", 3))

    def work() -> dict:
        for page in range(pages):
            time.sleep(float(args.get("seconds_per_page", 1.0)))  # the long work
            ctx.heartbeat_sync()
        return {"rendered": pages}

    return ctx.later(work)


@workers.job("sync-shopify-orders")
async def sync_shopify_orders(args: dict, ctx: JobContext) -> dict:
    """Calls a (fake) Shopify API. Enqueue it with throttle_key=<shop> so that redisq keeps
    each shop within Shopify's bucket; a 429 that still comes back is retried after its
    Retry-After."""
    shop = args["shop"]
    url = f"{SHOPIFY_API_URL}/admin/api/2024-01/orders.json?shop={shop}&since_id={args.get('since_id', 0)}"

    def fetch() -> dict:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code == 429:
                raise RetryLater(f"shopify throttled {shop}", after_s=float(e.headers.get("Retry-After", "2")))
            if e.code in (401, 403, 404):
                raise PermanentFailure(f"shopify answered {e.code} for {shop}") from None
            raise

    orders = (await asyncio.to_thread(fetch))["orders"]
    return {"shop": shop, "orders": len(orders)}


if __name__ == "__main__":
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    options = parser.parse_args()
    uvicorn.run(workers, host=options.host, port=options.port, log_level="warning")
