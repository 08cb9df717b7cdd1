"""A fake Shopify Admin API for the examples: a leaky bucket of 40 requests per shop,
leaking 2 per second, like Shopify's REST limit; over it, 429 with Retry-After.

    python examples/fake_shopify.py [--host 127.0.0.1] [--port 9100]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BUCKET_SIZE = 40
LEAK_PER_S = 2.0
_buckets: dict[str, tuple[float, float]] = {}  # shop -> (level, updated_at)
_lock = threading.Lock()


def take(shop: str) -> bool:
    with _lock:
        level, updated = _buckets.get(shop, (0.0, time.monotonic()))
        now = time.monotonic()
        level = max(0.0, level - (now - updated) * LEAK_PER_S)
        if level + 1 > BUCKET_SIZE:
            _buckets[shop] = (level, now)
            return False
        _buckets[shop] = (level + 1, now)
        return True


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        shop = query.get("shop", ["unknown"])[0]
        if not take(shop):
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        body = json.dumps({"orders": [{"id": i, "shop": shop} for i in range(1, 4)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Shopify-Shop-Api-Call-Limit", f"{int(_buckets[shop][0])}/{BUCKET_SIZE}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    options = parser.parse_args()
    ThreadingHTTPServer((options.host, options.port), Handler).serve_forever()
