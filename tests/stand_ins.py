"""Stand-ins for end-to-end tests of the operator's tools, each an HTTP server in a thread:
``StandInWorker`` answers every dispatch with ``status`` (change it while it runs, as a deploy
fixes a worker) and counts the calls of each job; ``ScriptedApi`` plays a coordinator's API
with scripted answers, for what a real one cannot be made to do within a test's seconds."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any]  # status, JSON body
Answers = dict[tuple[str, str], list[Answer]]  # (method, path) -> its answers in turn


class _Served:
    """An HTTP server in a thread while in a ``with``; ``answer(method, path, body)`` is called
    for every request and its (status, JSON) sent back."""

    def __init__(self, answer: Callable[[str, str, Any], Answer]):
        class Handler(BaseHTTPRequestHandler):
            def respond(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                status, reply = answer(self.command, self.path.split("?")[0], body)
                text = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            do_GET = do_POST = do_DELETE = respond

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class StandInWorker(_Served):
    def __init__(self, status: int = 200):
        super().__init__(self._dispatched)
        self.status = status
        self.calls: Counter[str] = Counter()  # job id -> calls
        self._lock = threading.Lock()
        self.url = f"{self.base_url}/work"

    def _dispatched(self, method: str, path: str, body: Any) -> Answer:
        with self._lock:
            self.calls[(body or {}).get("jobId", "?")] += 1
            status = self.status
        return status, {"ok": True} if status < 300 else {"error": f"stand-in answers {status}"}


class ScriptedApi(_Served):
    """Answers each (method, path) with its scripted answers in turn (the last one again);
    ``requests`` records (method, path, body)."""

    def __init__(self, answers: Answers):
        super().__init__(self._next)
        self.answers = answers
        self.requests: list[tuple[str, str, Any]] = []
        self.url = self.base_url

    def _next(self, method: str, path: str, body: Any) -> Answer:
        self.requests.append((method, path, body))
        queue = self.answers[(method, path)]
        return queue.pop(0) if len(queue) > 1 else queue[0]
