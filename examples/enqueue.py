"""Enqueue the example jobs with the Python client (`redisq serve --config examples/redisq.toml`
and `python examples/workers.py` running).

    python examples/enqueue.py [--url http://127.0.0.1:7575] [--token TOKEN]
"""

from __future__ import annotations

import argparse
import time

from redisq import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7575")
    parser.add_argument("--token", help="one of the coordinator's api_tokens, if it has any")
    parser.add_argument("--shopify", action="store_true",
                        help="also sync orders of two shops, one throttle key each (needs examples/fake_shopify.py)")
    options = parser.parse_args()
    with Client(options.url, token=options.token) as redisq:
        jobs = [
            redisq.enqueue("send-email", {"to": "ada@example.com"}, id="welcome-ada"),
            redisq.enqueue("send-email", {}),  # no "to": fails permanently
            redisq.enqueue("render-report", {"pages": 3}, timeout=2),  # outlives its timeout by heartbeats
        ]
        if options.shopify:  # one job per shop and page; the throttle key gives each shop its own bucket
            jobs += redisq.enqueue_many([
                {"worker": "sync-shopify-orders", "args": {"shop": shop, "since_id": page * 250}, "throttle_key": shop}
                for shop in ("alpha.myshopify.com", "beta.myshopify.com") for page in range(3)
            ])
        deadline = time.monotonic() + 30
        pending = {job.id for job in jobs}
        while pending and time.monotonic() < deadline:
            for job_id in sorted(pending):
                job = redisq.get(job_id)
                if job.finished:
                    print(f"{job.id}: {job.state} after {job.attempts} attempt(s); result={job.result} "
                          f"lastError={job.last_error}")
                    pending.discard(job_id)
            time.sleep(0.5)


if __name__ == "__main__":
    main()
